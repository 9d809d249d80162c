"""respond, redir and header answer as Caddy would; round_robin balances and
a dial error on one upstream is retried on another."""

import pytest

from conftest import Reader, closed_port, connect, curl, proxy_block


def test_respond_with_body_and_status(proxy_factory, tmp_path):
    p = proxy_factory('\trespond /hi "hi there" 201\n\trespond 404')
    r = curl(p.url + "/hi", tmp=tmp_path)
    assert (r.status, r.body) == (201, b"hi there"), r
    assert r.header("Content-Type") == "text/plain; charset=utf-8", r
    r = curl(p.url + "/other", tmp=tmp_path)
    assert (r.status, r.body) == (404, b""), r


def test_respond_status_only(proxy_factory, tmp_path):
    p = proxy_factory("\trespond /gone 410")
    r = curl(p.url + "/gone", tmp=tmp_path)
    assert (r.status, r.body) == (410, b""), r


def test_respond_with_placeholders(proxy_factory, tmp_path):
    p = proxy_factory('\trespond "{method} {path} {query}" 200')
    r = curl(p.url + "/a/b?x=1", tmp=tmp_path)
    assert (r.status, r.body) == (200, b"GET /a/b x=1"), r


def test_respond_on_head_sends_no_body(proxy_factory):
    p = proxy_factory('\trespond "hello" 200')
    s = connect(p.port)
    rd = Reader(s)
    s.sendall(b"HEAD / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    r = rd.response("HEAD")
    assert r.status == 200, r
    s.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    r = rd.response()
    assert (r.status, r.body) == (200, b"hello"), r
    s.close()


def test_redir_permanent(proxy_factory, tmp_path):
    p = proxy_factory("\tredir /old /new permanent")
    r = curl(p.url + "/old", tmp=tmp_path)
    assert r.status == 301, r
    assert r.header("Location") == "/new", r


def test_redir_defaults_to_302_and_expands_uri(proxy_factory, tmp_path):
    p = proxy_factory("\tredir https://example.com{uri}")
    r = curl(p.url + "/path/x?q=1", tmp=tmp_path)
    assert r.status == 302, r
    assert r.header("Location") == "https://example.com/path/x?q=1", r


def test_redir_with_explicit_status(proxy_factory, tmp_path):
    p = proxy_factory("\tredir /a /b 308")
    r = curl(p.url + "/a", tmp=tmp_path)
    assert r.status == 308 and r.header("Location") == "/b", r


def test_header_directive_sets_and_removes_response_headers(proxy_factory, upstream,
                                                            tmp_path):
    body = "\n".join([
        "\theader X-Site psproxy",
        "\theader /api/* Cache-Control no-store",
        "\theader -X-Secret",
        proxy_block(upstream)])
    p = proxy_factory(body)
    r = curl(p.url + "/respheaders?X-Secret=s3&X-Kept=k", tmp=tmp_path)
    assert r.status == 200, r
    assert r.header_all("X-Site") == ["psproxy"], r
    assert r.header_all("X-Secret") == [], r
    assert r.header_all("X-Kept") == ["k"], r
    assert r.header("Cache-Control") is None, r
    r = curl(p.url + "/api/respheaders", tmp=tmp_path)
    assert r.header_all("Cache-Control") == ["no-store"], r
    assert r.header_all("X-Site") == ["psproxy"], r


def test_header_directive_applies_to_respond(proxy_factory, tmp_path):
    p = proxy_factory('\theader X-Frame-Options DENY\n\trespond "ok" 200')
    r = curl(p.url + "/", tmp=tmp_path)
    assert (r.status, r.body) == (200, b"ok"), r
    assert r.header("X-Frame-Options") == "DENY", r


def test_round_robin_alternates_between_two_upstreams(proxy_factory, upstream_factory,
                                                      tmp_path):
    a, b = upstream_factory(), upstream_factory()
    p = proxy_factory(proxy_block(a, b, lb="round_robin"))
    seen = []
    for i in range(6):
        r = curl(p.url + "/echo?i=%d" % i, tmp=tmp_path)
        assert r.status == 200, r
        seen.append(r.json()["server_port"])
    assert sorted(set(seen)) == sorted({a.port, b.port}), seen
    assert all(seen[i] != seen[i + 1] for i in range(5)), "not alternating: %r" % seen


@pytest.mark.parametrize("try_duration", ["", "1s"], ids=["default", "lb_try_duration"])
def test_dial_error_on_one_upstream_is_retried_on_the_other(proxy_factory, upstream,
                                                           tmp_path, try_duration):
    dead = "127.0.0.1:%d" % closed_port()
    # a refused dial is retried at once, not after dial_timeout: 10 s here,
    # so the bound tells the two apart with room for a loaded machine
    p = proxy_factory(proxy_block(dead, upstream, lb="round_robin",
                                  try_duration=try_duration, dial_timeout="10s"))
    for i in range(4):
        r = curl(p.url + "/echo?i=%d" % i, tmp=tmp_path)
        assert r.status == 200, "request %d: %r" % (i, r)
        assert r.json()["server_port"] == upstream.port
        assert r.elapsed < 5.0, r
