"""What the upstream receives: Host, X-Forwarded-*, hop-by-hop removal,
repeated headers, and what the client gets back from the upstream's head."""

from conftest import curl, free_port, proxy_block


def names(doc):
    return [k.lower() for k, _ in doc["headers"]]


def values(doc, name):
    return [v for k, v in doc["headers"] if k.lower() == name.lower()]


def test_upstream_sees_host_as_client_sent_it(proxy_factory, upstream, tmp_path):
    p = proxy_factory(proxy_block(upstream))
    r = curl(p.url + "/echo", tmp=tmp_path)
    assert r.status == 200, r
    assert values(r.json(), "Host") == ["127.0.0.1:%d" % p.port]


def test_upstream_sees_other_host_names_on_a_catch_all_site(proxy_factory, upstream, tmp_path):
    port = free_port()
    p = proxy_factory(proxy_block(upstream), port=port, site="http://:%d" % port)
    r = curl(p.url + "/echo", "-H", "Host: Photo.Example.test:8443", tmp=tmp_path)
    assert r.status == 200, r
    doc = r.json()
    assert values(doc, "Host") == ["Photo.Example.test:8443"]
    assert values(doc, "X-Forwarded-Host") == ["Photo.Example.test:8443"]


def test_upstream_sees_x_forwarded_for_proto_host(proxy, tmp_path):
    r = curl(proxy.url + "/echo", tmp=tmp_path)
    assert r.status == 200, r
    doc = r.json()
    assert values(doc, "X-Forwarded-For") == ["127.0.0.1"]
    assert values(doc, "X-Forwarded-Proto") == ["http"]
    assert values(doc, "X-Forwarded-Host") == ["127.0.0.1:%d" % proxy.port]


def test_x_forwarded_headers_from_an_untrusted_client_are_replaced(proxy, tmp_path):
    # Caddy >= 2.5 (checked against Caddy 2.6.2): without trusted_proxies the
    # client's X-Forwarded-* are not extended but replaced, so a client cannot
    # forge its address. A trusted proxy's would be extended ("a, b, client").
    r = curl(proxy.url + "/echo", "-H", "X-Forwarded-For: 203.0.113.7, 198.51.100.2",
             "-H", "X-Forwarded-Proto: https", "-H", "X-Forwarded-Host: evil.test",
             tmp=tmp_path)
    assert r.status == 200, r
    doc = r.json()
    assert values(doc, "X-Forwarded-For") == ["127.0.0.1"]
    assert values(doc, "X-Forwarded-Proto") == ["http"]
    assert values(doc, "X-Forwarded-Host") == ["127.0.0.1:%d" % proxy.port]


def test_hop_by_hop_request_headers_are_removed(proxy, tmp_path):
    r = curl(proxy.url + "/echo",
             "-H", "Connection: keep-alive, X-Hop-Listed",
             "-H", "X-Hop-Listed: secret",
             "-H", "Keep-Alive: timeout=5, max=100",
             "-H", "Proxy-Connection: keep-alive",
             "-H", "TE: deflate",
             "-H", "Trailer: X-Checksum",
             "-H", "Upgrade: example/1",
             "-H", "X-End-To-End: kept",
             tmp=tmp_path)
    assert r.status == 200, r
    doc = r.json()
    got = names(doc)
    for hop in ("x-hop-listed", "keep-alive", "proxy-connection", "te", "trailer", "upgrade"):
        assert hop not in got, "%s reached the upstream: %r" % (hop, doc["headers"])
    for v in values(doc, "Connection"):
        assert "x-hop-listed" not in v.lower(), doc["headers"]
    assert values(doc, "X-End-To-End") == ["kept"]


def test_hop_by_hop_response_headers_are_removed(proxy, tmp_path):
    r = curl(proxy.url + "/respheaders?Connection=X-Up-Hop&X-Up-Hop=1"
             "&Keep-Alive=timeout%3D9&Proxy-Connection=keep-alive&X-Normal=yes",
             tmp=tmp_path)
    assert r.status == 200, r
    assert r.header_all("X-Up-Hop") == [], r
    assert "timeout=9" not in r.header_all("Keep-Alive"), r
    assert r.header_all("Proxy-Connection") == [], r
    assert r.header_all("X-Normal") == ["yes"], r


def test_repeated_request_headers_arrive_in_order(proxy, tmp_path):
    r = curl(proxy.url + "/echo", "-H", "X-Dup: a", "-H", "X-Dup: b", tmp=tmp_path)
    assert r.status == 200, r
    assert ", ".join(values(r.json(), "X-Dup")) == "a, b"


def test_repeated_set_cookie_response_headers_stay_separate(proxy, tmp_path):
    r = curl(proxy.url + "/respheaders?Set-Cookie=a%3D1&Set-Cookie=b%3D2", tmp=tmp_path)
    assert r.status == 200, r
    assert r.header_all("Set-Cookie") == ["a=1", "b=2"], r


def test_path_and_query_reach_the_upstream_unchanged(proxy, tmp_path):
    target = "/echo/a%20b/c%2Fd?x=1&y=%E2%9C%93&z"
    r = curl(proxy.url + target, "--path-as-is", tmp=tmp_path)
    assert r.status == 200, r
    assert r.json()["target"] == target
