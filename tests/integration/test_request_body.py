"""request_body { max_size }: bodies over the limit get 413; a declared
Content-Length over it never reaches the upstream."""

import hashlib

from conftest import connect, curl, proxy_block, Reader


def config(upstream):
    return ("\trequest_body /echo* {\n\t\tmax_size 1KiB\n\t}\n" + proxy_block(upstream))


def test_content_length_over_the_limit_is_413_and_not_forwarded(proxy_factory, upstream,
                                                               tmp_path):
    p = proxy_factory(config(upstream))
    body = tmp_path / "big"
    body.write_bytes(b"x" * 2000)
    r = curl(p.url + "/echo?cl-too-big", "--data-binary", "@%s" % body, tmp=tmp_path)
    assert r.status == 413, r
    assert not upstream.saw("cl-too-big")


def test_chunked_body_over_the_limit_is_413(proxy_factory, upstream, tmp_path):
    p = proxy_factory(config(upstream))
    s = connect(p.port)
    s.sendall(b"POST /echo?chunked-too-big HTTP/1.1\r\nHost: 127.0.0.1\r\n"
              b"Transfer-Encoding: chunked\r\n\r\n" + b"400\r\n" + b"y" * 1024 + b"\r\n")
    s.sendall(b"10\r\n" + b"z" * 16 + b"\r\n0\r\n\r\n")
    r = Reader(s).response()
    assert r.status == 413, r
    s.close()


def test_body_within_the_limit_passes_intact(proxy_factory, upstream, tmp_path):
    p = proxy_factory(config(upstream))
    data = bytes(range(256)) * 4  # exactly 1 KiB
    body = tmp_path / "ok"
    body.write_bytes(data)
    r = curl(p.url + "/echo", "--data-binary", "@%s" % body, "-H",
             "Transfer-Encoding: chunked", tmp=tmp_path)
    assert r.status == 200, r
    assert r.json()["body_sha256"] == hashlib.sha256(data).hexdigest()


def test_other_paths_have_no_limit(proxy_factory, upstream, tmp_path):
    p = proxy_factory(config(upstream))
    data = b"q" * 100000
    body = tmp_path / "big"
    body.write_bytes(data)
    r = curl(p.url + "/slow/0", "--data-binary", "@%s" % body, tmp=tmp_path)
    assert r.status == 200, r
    assert r.json()["body_sha256"] == hashlib.sha256(data).hexdigest()
