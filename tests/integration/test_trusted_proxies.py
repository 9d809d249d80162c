"""trusted_proxies (Caddy 2.6's reverse_proxy sub-directive): a trusted
peer's X-Forwarded-* are kept and X-Forwarded-For extended; an untrusted
peer's are replaced (see test_forwarding.py)."""

from conftest import curl, proxy_block


def values(doc, name):
    return [v for k, v in doc["headers"] if k.lower() == name.lower()]


def test_trusted_peer_forwarded_for_is_extended(proxy_factory, upstream, tmp_path):
    p = proxy_factory(proxy_block(upstream, extra="\t\ttrusted_proxies private_ranges"))
    r = curl(p.url + "/echo", "-H", "X-Forwarded-For: 203.0.113.7",
             "-H", "X-Forwarded-For: 198.51.100.2", "-H", "X-Forwarded-Proto: https",
             "-H", "X-Forwarded-Host: api.example.test", tmp=tmp_path)
    assert r.status == 200, r
    doc = r.json()
    assert values(doc, "X-Forwarded-For") == ["203.0.113.7, 198.51.100.2, 127.0.0.1"]
    assert values(doc, "X-Forwarded-Proto") == ["https"]
    assert values(doc, "X-Forwarded-Host") == ["api.example.test"]


def test_peer_outside_the_trusted_ranges_is_not_trusted(proxy_factory, upstream, tmp_path):
    p = proxy_factory(proxy_block(upstream, extra="\t\ttrusted_proxies 10.0.0.0/8 ::1"))
    r = curl(p.url + "/echo", "-H", "X-Forwarded-For: 203.0.113.7", tmp=tmp_path)
    assert r.status == 200, r
    assert values(r.json(), "X-Forwarded-For") == ["127.0.0.1"]
