"""Bodies in both directions arrive intact, whatever their framing; responses
that have no body (HEAD, 204, 304) send none."""

import hashlib
import os

from conftest import Reader, connect, curl
from upstream import pattern

MiB = 1 << 20


def sha(data):
    return hashlib.sha256(data).hexdigest()


def test_8_mib_post_arrives_intact(proxy, tmp_path):
    data = os.urandom(8 * MiB)
    f = tmp_path / "big"
    f.write_bytes(data)
    r = curl(proxy.url + "/echo", "--data-binary", "@%s" % f,
             "-H", "Content-Type: application/octet-stream", timeout=60, tmp=tmp_path)
    assert r.status == 200, r
    doc = r.json()
    assert (doc["body_len"], doc["body_sha256"]) == (len(data), sha(data))


def test_chunked_upload_arrives_intact(proxy, tmp_path):
    data = os.urandom(3 * MiB + 12345)
    f = tmp_path / "up"
    f.write_bytes(data)
    r = curl(proxy.url + "/echo", "--data-binary", "@%s" % f,
             "-H", "Transfer-Encoding: chunked", timeout=60, tmp=tmp_path)
    assert r.status == 200, r
    doc = r.json()
    assert (doc["body_len"], doc["body_sha256"]) == (len(data), sha(data))


def test_chunked_upload_in_odd_pieces_with_extension_and_trailer(proxy):
    chunks = [b"a", b"bc" * 100, b"x" * 70000, b"\r\n0\r\n\r\n", b"end"]
    body = b"".join(b"%x;ext=v\r\n%s\r\n" % (len(c), c) for c in chunks)
    body += b"0\r\nX-Trailer: t\r\n\r\n"
    head = (b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" % proxy.port)
    s = connect(proxy.port)
    data = head + body
    # dribble the bytes so that chunk sizes, data and CRLFs split across reads
    for i in range(0, len(data), 997):
        s.sendall(data[i:i + 997])
    r = Reader(s).response()
    s.close()
    assert r.status == 200, r
    doc = r.json()
    want = b"".join(chunks)
    assert (doc["body_len"], doc["body_sha256"]) == (len(want), sha(want))


def test_1_mb_content_length_response_arrives_intact(proxy, tmp_path):
    r = curl(proxy.url + "/bytes/1000000", tmp=tmp_path)
    assert r.status == 200, r
    assert r.header("Content-Length") == "1000000"
    assert len(r.body) == 1000000 and sha(r.body) == sha(pattern(1000000))


def test_1_mb_chunked_response_arrives_intact(proxy, tmp_path):
    r = curl(proxy.url + "/chunked/1048576", tmp=tmp_path)
    assert r.status == 200, r
    assert len(r.body) == 1048576 and sha(r.body) == sha(pattern(1048576))


def test_close_delimited_response_arrives_intact(proxy, tmp_path):
    r = curl(proxy.url + "/close/300000", tmp=tmp_path)
    assert r.status == 200, r
    assert len(r.body) == 300000 and sha(r.body) == sha(pattern(300000))


def test_close_delimited_response_then_next_request_on_same_client_conn(proxy):
    s = connect(proxy.port)
    rd = Reader(s)
    host = b"Host: 127.0.0.1:%d\r\n" % proxy.port
    s.sendall(b"GET /close/5000 HTTP/1.1\r\n" + host + b"\r\n")
    r1 = rd.response()
    assert r1.status == 200 and r1.body == pattern(5000), r1
    if r1.header("Content-Length") or r1.header("Transfer-Encoding"):
        # psproxy framed it for the client, so the connection may stay open
        s.sendall(b"GET /echo HTTP/1.1\r\n" + host + b"\r\n")
        assert rd.response().status == 200
    s.close()


def test_head_has_headers_but_no_body(proxy):
    s = connect(proxy.port)
    rd = Reader(s)
    host = b"Host: 127.0.0.1:%d\r\n" % proxy.port
    s.sendall(b"HEAD /bytes/1000 HTTP/1.1\r\n" + host + b"\r\n")
    r = rd.response("HEAD")
    assert r.status == 200, r
    assert r.header("Content-Length") == "1000", r
    assert r.header("Content-Type") == "application/octet-stream", r
    # Had psproxy sent a body, it would come before the next status line.
    s.sendall(b"GET /echo?after=head HTTP/1.1\r\n" + host + b"\r\n")
    r2 = rd.response()
    assert r2.status == 200 and r2.json()["query"] == "after=head", r2
    s.close()


def test_head_of_chunked_resource_does_not_wait_for_a_body(proxy):
    s = connect(proxy.port, timeout=3)
    rd = Reader(s)
    host = b"Host: 127.0.0.1:%d\r\n" % proxy.port
    s.sendall(b"HEAD /chunked/5000 HTTP/1.1\r\n" + host + b"\r\n")
    r = rd.response("HEAD")
    assert r.status == 200, r
    s.sendall(b"GET /echo?after=head HTTP/1.1\r\n" + host + b"\r\n")
    r2 = rd.response()
    assert r2.status == 200 and r2.json()["query"] == "after=head", r2
    s.close()


def test_204_and_304_have_no_body(proxy):
    s = connect(proxy.port, timeout=3)
    rd = Reader(s)
    host = b"Host: 127.0.0.1:%d\r\n" % proxy.port
    for code in (204, 304):
        s.sendall(b"GET /status/%d HTTP/1.1\r\n" % code + host + b"\r\n")
        r = rd.response()
        assert r.status == code, r
        assert r.header("Transfer-Encoding") is None, r
        s.sendall(b"GET /echo?after=%d HTTP/1.1\r\n" % code + host + b"\r\n")
        r2 = rd.response()
        assert r2.status == 200 and r2.json()["query"] == "after=%d" % code, r2
    s.close()


def test_304_keeps_etag(proxy, tmp_path):
    r = curl(proxy.url + "/status/304", tmp=tmp_path)
    assert r.status == 304 and r.body == b"", r
    assert r.header("ETag") == '"v1"', r


def test_expect_100_continue_upload(proxy):
    body = os.urandom(200000)
    s = connect(proxy.port, timeout=3)
    rd = Reader(s)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nContent-Length: %d\r\n"
              b"Expect: 100-continue\r\n\r\n" % (proxy.port, len(body)))
    # The body goes only after psproxy (or the upstream through it) says 100.
    interim = rd.response(keep_1xx=True)
    assert interim.status == 100, interim
    s.sendall(body)
    r = rd.response()
    assert r.status == 200, r
    doc = r.json()
    assert (doc["body_len"], doc["body_sha256"]) == (len(body), sha(body))
    s.close()


def test_expect_100_continue_upload_with_curl(proxy, tmp_path):
    data = os.urandom(2 * MiB)
    f = tmp_path / "up"
    f.write_bytes(data)
    r = curl(proxy.url + "/echo", "--data-binary", "@%s" % f, "-H", "Expect: 100-continue",
             "--expect100-timeout", "15", timeout=30, tmp=tmp_path)
    assert r.status == 200, r
    doc = r.json()
    assert (doc["body_len"], doc["body_sha256"]) == (len(data), sha(data))
    # below curl's 15 s wait, with room for a loaded machine
    assert r.elapsed < 10, "curl waited for 100 Continue: %.1f s" % r.elapsed
