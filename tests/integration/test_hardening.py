"""Hardening (issue #9), one test per rule, on raw sockets: what the client
got and, through the recording upstream (upstream.py /raw), every byte the
upstream received. A refused request must leave the upstream untouched (no
byte on any connection, no new connection); an accepted one arrives framed
by psproxy; a misbehaving upstream's connection is never used again; slow
and greedy clients cost a bounded time and leave the others served."""

import os
import re
import resource
import socket
import subprocess
import threading
import time

import pytest

from conftest import (CLOSE_WITHIN, PSPROXY, SANITIZER_MARKS, STOP_TIMEOUT, WAIT_TIMEOUT, Reader,
                      connect, free_port, make_config, proxy_block, reap, tail, wait_port,
                      wait_stable, wait_until)

HOST = b"Host: 127.0.0.1\r\n"
POST = b"POST /echo HTTP/1.1\r\n" + HOST
CHUNKED = POST + b"Transfer-Encoding: chunked\r\n\r\n"


def upstream_bytes(up):
    """{upstream connection id: bytes it received}."""
    return {cid: raw for cid, _, raw in up.raw_conns()}


def new_upstream_bytes(up, before, settle=0.1):
    """What the upstream received since BEFORE (upstream_bytes), by connection."""
    # a grace: the upstream's threads record what the kernel holds (what is
    # looked for here is bytes psproxy should not have sent: no event for it)
    time.sleep(settle)
    after = upstream_bytes(up)
    return {cid: raw[len(before.get(cid, b"")):] for cid, raw in after.items()
            if len(raw) > len(before.get(cid, b""))}


def warm(proxy):
    """One request through, so that a pooled upstream connection exists: a
    refused request must not reach that one either."""
    s = connect(proxy.port)
    s.sendall(b"GET /echo?warm HTTP/1.1\r\n" + HOST + b"\r\n")
    assert Reader(s).response().status == 200
    s.close()


def head_lines(raw):
    """The field lines of the first head in RAW, as (lower-case name, value)."""
    head = raw.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    out = []
    for line in head.split("\r\n")[1:]:
        k, _, v = line.partition(":")
        out.append((k.lower(), v.strip()))
    return out


def still_serves(proxy):
    s = connect(proxy.port)
    s.sendall(b"GET /echo?after HTTP/1.1\r\n" + HOST + b"\r\n")
    r = Reader(s).response()
    s.close()
    assert r.status == 200, r


def refused(proxy, data, statuses=(400,)):
    """Sends DATA on a fresh connection; asserts one of STATUSES, then the
    close, and that the upstream got nothing at all."""
    up = proxy.upstream
    before = upstream_bytes(up)
    s = connect(proxy.port, timeout=5)
    try:
        s.sendall(data)
        rd = Reader(s)
        r = rd.response()
        assert r.status in statuses, "psproxy answered %r, want %s" % (r, statuses)
        assert r.header("Connection", "").lower() == "close", r
        assert rd.closed_within(CLOSE_WITHIN), "connection left open after a refused request"
    finally:
        s.close()
    got = new_upstream_bytes(up, before)
    assert got == {}, "the upstream received %r" % got
    still_serves(proxy)


# -- request smuggling (RFC 9112) --------------------------------------------------

REFUSED = {
    # Content-Length with Transfer-Encoding (RFC 9112 6.3 rule 3: 400 and close)
    "cl_then_te": POST + b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    "te_then_cl": POST + b"Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n",
    # several Content-Length values (RFC 9110 8.6: identical ones MAY be
    # folded; psproxy refuses every repetition, as a list or as fields)
    "cl_differing": POST + b"Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    "cl_identical_fields": POST + b"Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
    "cl_identical_list": POST + b"Content-Length: 5, 5\r\n\r\nhello",
    "cl_differing_list": POST + b"Content-Length: 5, 6\r\n\r\nhello!",
    # Content-Length = 1*DIGIT
    "cl_plus": POST + b"Content-Length: +5\r\n\r\nhello",
    "cl_hex": POST + b"Content-Length: 0x5\r\n\r\nhello",
    "cl_negative": POST + b"Content-Length: -1\r\n\r\nhello",
    "cl_decimal": POST + b"Content-Length: 5.0\r\n\r\nhello",
    "cl_empty": POST + b"Content-Length:\r\n\r\nhello",
    "cl_inner_space": POST + b"Content-Length: 5 5\r\n\r\nhello",
    "cl_overflow": POST + b"Content-Length: 99999999999999999999999\r\n\r\nhello",
    # chunked must be the final coding (RFC 9112 6.3 rule 4: 400 and close)
    "te_gzip": POST + b"Transfer-Encoding: gzip\r\n\r\nhello",
    "te_chunked_gzip": POST + b"Transfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n",
    "te_empty": POST + b"Transfer-Encoding:\r\n\r\n0\r\n\r\n",
    "te_comma": POST + b"Transfer-Encoding: ,\r\n\r\n0\r\n\r\n",
    # obfuscated Transfer-Encoding
    "te_chunked_tab": POST + b"Transfer-Encoding: chunked\t\r\n\r\n0\r\n\r\n",
    "te_vtab_chunked": POST + b"Transfer-Encoding: \x0bchunked\r\n\r\n0\r\n\r\n",
    "te_chunked_chunked": POST + b"Transfer-Encoding: chunked, chunked\r\n\r\n0\r\n\r\n",
    "te_two_fields": POST + b"Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n"
                          b"0\r\n\r\n",
    "te_space_before_colon": POST + b"Transfer-Encoding : chunked\r\nContent-Length: 5\r\n\r\n"
                                   b"hello",
    # Transfer-Encoding in HTTP/1.0 (RFC 9112 6.1: framing is faulty)
    "te_http10": b"POST /echo HTTP/1.0\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\n"
                 b"0\r\n\r\n",
    # obs-fold (RFC 9112 5.2), a first field line starting with whitespace
    "obs_fold_sp": b"GET /echo HTTP/1.1\r\n" + HOST + b"X-A: a\r\n b\r\n\r\n",
    "obs_fold_htab": b"GET /echo HTTP/1.1\r\n" + HOST + b"X-A: a\r\n\tb\r\n\r\n",
    "obs_fold_into_te": POST + b"Transfer-Encoding: gzip\r\n ,chunked\r\n\r\n0\r\n\r\n",
    "ws_first_field_line": b"GET /echo HTTP/1.1\r\n X-A: a\r\n" + HOST + b"\r\n",
    # bare CR, NUL and other controls in names and values
    "bare_cr_value": b"GET /echo HTTP/1.1\r\n" + HOST + b"X-A: a\rb\r\n\r\n",
    "bare_cr_name": b"GET /echo HTTP/1.1\r\n" + HOST + b"X\rA: a\r\n\r\n",
    "bare_cr_line_end": b"GET /echo HTTP/1.1\r\n" + HOST + b"X-A: a\r\rX-B: b\r\n\r\n",
    "nul_value": b"GET /echo HTTP/1.1\r\n" + HOST + b"X-A: a\x00b\r\n\r\n",
    "nul_name": b"GET /echo HTTP/1.1\r\n" + HOST + b"X-\x00A: a\r\n\r\n",
    "ctl_value": b"GET /echo HTTP/1.1\r\n" + HOST + b"X-A: a\x01b\r\n\r\n",
    "esc_value": b"GET /echo HTTP/1.1\r\n" + HOST + b"X-A: a\x1bb\r\n\r\n",
    "del_value": b"GET /echo HTTP/1.1\r\n" + HOST + b"X-A: a\x7fb\r\n\r\n",
    "ctl_name": b"GET /echo HTTP/1.1\r\n" + HOST + b"X-\x0bA: a\r\n\r\n",
    "empty_name": b"GET /echo HTTP/1.1\r\n" + HOST + b": a\r\n\r\n",
    # whitespace between field name and colon (RFC 9112 5.1)
    "space_before_colon": b"GET /echo HTTP/1.1\r\n" + HOST + b"X-A : a\r\n\r\n",
    "tab_before_colon": b"GET /echo HTTP/1.1\r\n" + HOST + b"X-A\t: a\r\n\r\n",
    # chunk sizes (RFC 9112 7.1: chunk-size = 1*HEXDIG)
    "chunk_size_overflow": CHUNKED + b"10000000000000005\r\nhello\r\n0\r\n\r\n",
    "chunk_size_hex_junk": CHUNKED + b"5g\r\nhello\r\n0\r\n\r\n",
    "chunk_size_0x": CHUNKED + b"0x5\r\nhello\r\n0\r\n\r\n",
    "chunk_size_negative": CHUNKED + b"-5\r\nhello\r\n0\r\n\r\n",
    "chunk_size_empty": CHUNKED + b"\r\nhello\r\n0\r\n\r\n",
    "chunk_size_leading_space": CHUNKED + b" 5\r\nhello\r\n0\r\n\r\n",
    "chunk_size_underscore": CHUNKED + b"0_5\r\nhello\r\n0\r\n\r\n",
    "chunk_data_over_size": CHUNKED + b"3\r\nhello\r\n0\r\n\r\n",
    # chunk extensions (RFC 9112 7.1.1: token [= token / quoted-string])
    "chunk_ext_no_name": CHUNKED + b"5;\r\nhello\r\n0\r\n\r\n",
    "chunk_ext_bad_char": CHUNKED + b"5;a=b@c\r\nhello\r\n0\r\n\r\n",
    "chunk_ext_ctl": CHUNKED + b"5;a\x01b\r\nhello\r\n0\r\n\r\n",
    "chunk_ext_nul": CHUNKED + b"5;a=\x00\r\nhello\r\n0\r\n\r\n",
    "chunk_ext_bare_cr": CHUNKED + b"5;a\rb\r\nhello\r\n0\r\n\r\n",
    # bare LF where CRLF is required: the chunked framing...
    "lf_after_chunk_size": CHUNKED + b"5\nhello\r\n0\r\n\r\n",
    "lf_after_chunk_ext": CHUNKED + b"5;a=b\nhello\r\n0\r\n\r\n",
    "lf_after_chunk_data": CHUNKED + b"5\r\nhello\n0\r\n\r\n",
    "lf_after_last_chunk": CHUNKED + b"5\r\nhello\r\n0\n\r\n",
    "lf_ends_chunked_body": CHUNKED + b"5\r\nhello\r\n0\r\n\n",
    "lf_after_trailer": CHUNKED + b"5\r\nhello\r\n0\r\nX-T: 1\n\r\n",
    "lf_ends_trailers": CHUNKED + b"5\r\nhello\r\n0\r\nX-T: 1\r\n\n",
    # ... what llhttp 8 takes in place of a CRLF in the chunked framing
    "junk_after_chunk_size_cr": CHUNKED + b"5\rXhello\r\n0\r\n\r\n",
    "junk_after_chunk_data": CHUNKED + b"5\r\nhelloXY0\r\n\r\n",
    "cr_junk_after_chunk_data": CHUNKED + b"5\r\nhello\rX0\r\n\r\n",
    # ... and the head
    "lf_after_request_line": b"GET /echo HTTP/1.1\n" + HOST + b"\r\n",
    "lf_after_field_line": b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\nX-A: a\r\n\r\n",
    "lf_ends_head": b"GET /echo HTTP/1.1\r\n" + HOST + b"\n",
    "lf_everywhere": b"GET /echo HTTP/1.1\nHost: 127.0.0.1\n\n",
}

# RFC 9112 6.1: a coding the server does not understand may get 501
REFUSED_501_OK = {
    "te_gzip_chunked": POST + b"Transfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n",
    "te_unknown": POST + b"Transfer-Encoding: foo\r\n\r\n0\r\n\r\n",
    "te_xchunked": POST + b"Transfer-Encoding: xchunked\r\n\r\n0\r\n\r\n",
    "te_chunked_semicolon": POST + b"Transfer-Encoding: chunked;\r\n\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_ambiguous_request_is_refused_closed_and_never_forwarded(proxy, case):
    warm(proxy)
    refused(proxy, REFUSED[case])


@pytest.mark.parametrize("case", list(REFUSED_501_OK))
def test_unknown_transfer_coding_is_refused_closed_and_never_forwarded(proxy, case):
    warm(proxy)
    refused(proxy, REFUSED_501_OK[case], statuses=(400, 501))


def test_smuggled_request_after_cl_te_never_reaches_the_upstream(proxy):
    warm(proxy)
    smuggled = b"GET /echo?smuggled HTTP/1.1\r\n" + HOST + b"\r\n"
    body = b"0\r\n\r\n" + smuggled
    refused(proxy, POST + b"Content-Length: %d\r\nTransfer-Encoding: chunked\r\n\r\n"
            % len(body) + body)


def test_connection_cannot_strip_content_length_to_smuggle_the_body(proxy):
    # "Connection: content-length" must not take the framing away while the
    # body still goes up: the upstream would read the body as a request.
    warm(proxy)
    up = proxy.upstream
    inner = b"GET /echo?smuggled HTTP/1.1\r\n" + HOST + b"\r\n"
    before = upstream_bytes(up)
    s = connect(proxy.port)
    s.sendall(POST + b"Connection: content-length, host\r\nContent-Length: %d\r\n\r\n"
              % len(inner) + inner)
    r = Reader(s).response()
    s.close()
    assert r.status == 200, r
    doc = r.json()
    assert doc["method"] == "POST" and doc["body_len"] == len(inner), doc
    got = b"".join(new_upstream_bytes(up, before).values())
    fields = head_lines(got)
    assert ("content-length", str(len(inner))) in fields, got
    assert ("host", "127.0.0.1") in fields, got
    assert got.count(b"GET /echo?smuggled") == 1 and got.endswith(inner), got
    assert not up.saw("smuggled"), "the body was read as a request"


def accepted(proxy, data):
    """Sends DATA; returns (echo doc, the bytes the upstream received)."""
    up = proxy.upstream
    before = upstream_bytes(up)
    s = connect(proxy.port)
    s.sendall(data)
    r = Reader(s).response()
    s.close()
    assert r.status == 200, r
    got = new_upstream_bytes(up, before, settle=0)
    assert len(got) == 1, got
    return r.json(), list(got.values())[0]


def test_chunked_request_reaches_the_upstream_rechunked(proxy):
    # extensions, upper-case hex, leading zeros, a trailer and "Chunked":
    # the upstream gets psproxy's own framing, none of the client's. (llhttp
    # 8 refuses several extensions on one chunk, "5;a=b;c=d": stricter than
    # RFC 9112 7.1.1, so not used here.)
    data = (POST + b"Transfer-Encoding: Chunked\r\n\r\n"
            b"0005;c=\"d\"\r\nhello\r\nA;x\r\n0123456789\r\n0\r\nX-Trailer: t\r\n\r\n")
    doc, raw = accepted(proxy, data)
    assert doc["body_len"] == 15, doc
    head, _, body = raw.partition(b"\r\n\r\n")
    fields = head_lines(raw)
    assert [f for f in fields if f[0] in ("transfer-encoding", "content-length")] == [
        ("transfer-encoding", "chunked")], raw
    assert b"Transfer-Encoding: chunked\r\n" in head + b"\r\n", raw
    assert dechunk_strict(body) == b"hello0123456789", body


def dechunk_strict(body):
    """The data of a chunked BODY in plain framing: sizes in lower-case hex
    without leading zeros or extensions, no trailers; fails otherwise."""
    out = b""
    while True:
        m = re.match(rb"(0|[1-9a-f][0-9a-f]*)\r\n", body)
        assert m, "not psproxy's chunk framing: %r" % body[:100]
        size = int(m.group(1), 16)
        body = body[m.end():]
        if size == 0:
            assert body == b"\r\n", "trailers or bytes after the last chunk: %r" % body
            return out
        assert body[size:size + 2] == b"\r\n", body[:size + 2]
        out += body[:size]
        body = body[size + 2:]


def test_chunked_with_leading_ows_is_accepted_and_rechunked(proxy):
    doc, raw = accepted(proxy, POST + b"Transfer-Encoding:\t chunked\r\n\r\n"
                        b"3\r\nabc\r\n0\r\n\r\n")
    assert doc["body_len"] == 3, doc
    assert dechunk_strict(raw.split(b"\r\n\r\n", 1)[1]) == b"abc", raw


def test_content_length_with_ows_is_forwarded_as_one_plain_value(proxy):
    doc, raw = accepted(proxy, POST + b"Content-Length: \t5 \r\n\r\nhello")
    assert doc["body_len"] == 5, doc
    fields = head_lines(raw)
    assert [f for f in fields if f[0] in ("transfer-encoding", "content-length")] == [
        ("content-length", "5")], raw
    assert b"\r\nContent-Length: 5\r\n" in raw and raw.endswith(b"\r\n\r\nhello"), raw


def test_htab_and_obs_text_in_values_pass_unchanged(proxy):
    doc, raw = accepted(proxy, b"GET /echo HTTP/1.1\r\n" + HOST + b"X-A: a\tb\xe9c\r\n\r\n")
    assert b"\r\nX-A: a\tb\xe9c\r\n" in raw, raw


def test_bad_chunk_after_the_head_went_up_leaves_no_complete_request(proxy):
    # The head and a good chunk are forwarded before the bad one arrives:
    # the upstream connection is then cut with the body unfinished, so no
    # parser can read a request out of it, and is never used again.
    warm(proxy)
    up = proxy.upstream
    before = upstream_bytes(up)
    s = connect(proxy.port)
    s.sendall(CHUNKED + b"5\r\nhello\r\n")
    wait_until(lambda: any(raw.endswith(b"5\r\nhello\r\n")
                           for raw in new_upstream_bytes(up, before, settle=0).values()),
               what="the head and the good chunk at the upstream")
    s.sendall(b"zz\r\nGET /echo?smuggled HTTP/1.1\r\n" + HOST + b"\r\n")
    rd = Reader(s)
    r = rd.response()
    assert r.status == 400, r
    assert rd.closed_within(CLOSE_WITHIN)
    s.close()
    got = new_upstream_bytes(up, before)
    assert len(got) == 1, got
    (cid, raw), = got.items()
    assert raw.endswith(b"\r\n\r\n5\r\nhello\r\n"), raw  # no last chunk
    assert b"smuggled" not in raw, raw
    deadline = time.monotonic() + WAIT_TIMEOUT
    while time.monotonic() < deadline and any(
            c == cid and op for c, op, _ in up.raw_conns()):
        time.sleep(0.05)
    assert not any(c == cid and op for c, op, _ in up.raw_conns()), \
        "the upstream connection with half a body stays open"
    still_serves(proxy)


# -- upstream misbehaviour ----------------------------------------------------------


def echo_conn_id(proxy, s=None, rd=None):
    own = s is None
    if own:
        s = connect(proxy.port)
        rd = Reader(s)
    s.sendall(b"GET /echo HTTP/1.1\r\n" + HOST + b"\r\n")
    r = rd.response()
    if own:
        s.close()
    assert r.status == 200, r
    return r.json()["conn_id"]


def wait_upstream_closed(up, cid, timeout=WAIT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not any(c == cid and op for c, op, _ in up.raw_conns()):
            return True
        time.sleep(0.05)
    return False


@pytest.mark.parametrize("variant", ["cl-te", "status-line", "not-http", "no-head"])
def test_malformed_upstream_response_is_502_and_its_connection_dropped(proxy, variant):
    path = {"not-http": b"/malformed/1", "no-head": b"/hangup"}.get(
        variant, b"/bad/" + variant.encode())
    up = proxy.upstream
    pooled = echo_conn_id(proxy)
    s = connect(proxy.port)
    rd = Reader(s)
    s.sendall(b"GET " + path + b" HTTP/1.1\r\n" + HOST + b"\r\n")
    r = rd.response()
    assert r.status == 502, r
    assert b"hello" not in r.body, r
    # the request went on the pooled connection, which must be gone now
    raw = upstream_bytes(up)[pooled]
    assert b"GET " + path in raw, "the request did not reuse the pooled connection"
    assert wait_upstream_closed(up, pooled), "the bad upstream connection stays open"
    # the client connection is fine; the next request gets a new upstream one
    if not rd.closed_within(0.2):
        assert echo_conn_id(proxy, s, rd) > pooled
    s.close()
    assert echo_conn_id(proxy) > pooled


@pytest.mark.parametrize("variant", ["mid-body", "mid-chunk"])
def test_upstream_closing_mid_body_cuts_the_client_and_is_not_reused(proxy, variant):
    up = proxy.upstream
    pooled = echo_conn_id(proxy)
    s = connect(proxy.port)
    rd = Reader(s)
    s.sendall(b"GET /bad/" + variant.encode() + b" HTTP/1.1\r\n" + HOST + b"\r\n")
    t0 = time.monotonic()
    r = rd.head()  # the response had started: only a close can tell the client
    assert r.status == 200, r
    rest = rd.read_to_close()
    # the upstream's close, not the 5 s idle or socket timeout
    assert time.monotonic() - t0 < 4.5
    s.close()
    if variant == "mid-body":
        assert r.header("Content-Length") == "100" and len(rest) < 100, (r, rest)
    else:
        assert not rest.endswith(b"0\r\n\r\n"), rest  # no last chunk: incomplete
    assert wait_upstream_closed(up, pooled)
    assert echo_conn_id(proxy) > pooled


@pytest.mark.parametrize("variant", ["extra", "extra-late"])
def test_upstream_sending_more_than_declared_is_not_reused(proxy, variant):
    up = proxy.upstream
    pooled = echo_conn_id(proxy)
    s = connect(proxy.port)
    rd = Reader(s)
    s.sendall(b"GET /bad/" + variant.encode() + b" HTTP/1.1\r\n" + HOST + b"\r\n")
    r = rd.response()
    assert r.status == 200 and r.body == b"hello", r
    time.sleep(0.4)  # extra-late: the surplus arrives while the connection would idle
    assert wait_upstream_closed(up, pooled), "the upstream connection with surplus bytes stays"
    # the client connection carries on, on a new upstream connection, and
    # never sees the surplus
    assert echo_conn_id(proxy, s, rd) > pooled
    s.close()


# -- slow and greedy clients ----------------------------------------------------------


def test_slowloris_is_cut_by_read_header_while_others_are_served(proxy_factory, upstream):
    # read_header 3s: "served at once" below (2 s) is then far from what a
    # server blocked by the lorises would take, even on a loaded machine
    p = proxy_factory(proxy_block(upstream), read_header="3s", idle="10s")
    p.upstream = upstream
    stop = threading.Event()
    ended = {}
    connected = []

    def loris(i):
        s = connect(p.port)
        connected.append(i)
        s.settimeout(0.1)
        data = b"GET /echo?loris-%d HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Pad: " % i
        t0 = time.monotonic()
        try:
            for k in range(100):  # a byte every 100 ms, never a whole head
                if stop.is_set():
                    return
                s.sendall(data[k:k + 1] if k < len(data) else b"a")
                try:
                    s.recv(4096)
                    break  # the 408 or the close
                except socket.timeout:
                    pass
        except OSError:
            pass  # reset
        finally:
            ended[i] = time.monotonic() - t0
            s.close()

    threads = [threading.Thread(target=loris, args=(i,)) for i in range(20)]
    for t in threads:
        t.start()
    wait_until(lambda: len(connected) == 20, what="20 lorises connected")
    for _ in range(5):  # meanwhile everybody else is served at once
        t0 = time.monotonic()
        still_serves(p)
        assert time.monotonic() - t0 < 2.0
    for t in threads:
        t.join(15)
    stop.set()
    assert not any(t.is_alive() for t in threads)
    # cut by read_header (3s), not at the end of the loris's 10 s
    assert len(ended) == 20 and max(ended.values()) < 8.0, ended
    assert not any(upstream.saw("loris-%d" % i) for i in range(20))
    assert all(b"loris" not in raw for raw in upstream_bytes(upstream).values())


def test_silent_connection_is_closed_after_read_header(proxy_factory, upstream):
    p = proxy_factory(proxy_block(upstream), read_header="1s", idle="10s")
    s = connect(p.port)
    t0 = time.monotonic()
    # the upper bound below idle (10s), generous for a loaded machine
    assert Reader(s).closed_within(8.0), "a connection that never spoke stays open"
    assert 0.8 <= time.monotonic() - t0 < 8.0
    s.close()
    assert upstream.proxied_connections() == 0


def test_101_header_fields_are_431_and_never_forwarded(proxy):
    warm(proxy)
    fields = b"".join(b"X-H%d: v\r\n" % i for i in range(100))  # Host + 100 > 100
    refused(proxy, b"GET /echo?many HTTP/1.1\r\n" + HOST + fields + b"\r\n", statuses=(431,))


def test_100_header_fields_pass(proxy):
    fields = b"".join(b"X-H%d: v\r\n" % i for i in range(99))  # Host + 99
    doc, raw = accepted(proxy, b"GET /echo HTTP/1.1\r\n" + HOST + fields + b"\r\n")
    assert sum(1 for k, _ in doc["headers"] if k.startswith("X-H")) == 99


def test_head_over_max_header_size_is_431_and_never_forwarded(proxy):
    warm(proxy)
    refused(proxy, b"GET /echo HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 20000 + b"\r\n\r\n",
            statuses=(431,))


def test_uri_over_8_kib_is_414_and_never_forwarded(proxy):
    warm(proxy)
    refused(proxy, b"GET /echo?" + b"u" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n",
            statuses=(414,))


def body_limited(proxy_factory, upstream):
    p = proxy_factory("\trequest_body {\n\t\tmax_size 1KiB\n\t}\n" + proxy_block(upstream))
    p.upstream = upstream
    return p


def test_content_length_over_max_size_is_413_and_never_forwarded(proxy_factory, upstream):
    p = body_limited(proxy_factory, upstream)
    warm(p)
    refused(p, POST + b"Content-Length: 1025\r\n\r\n" + b"x" * 1025, statuses=(413,))


def test_chunked_body_over_max_size_is_413_and_never_forwarded(proxy_factory, upstream):
    p = body_limited(proxy_factory, upstream)
    warm(p)
    refused(p, CHUNKED + b"400\r\n" + b"y" * 1024 + b"\r\n1\r\nz\r\n0\r\n\r\n",
            statuses=(413,))


def test_body_of_exactly_max_size_passes(proxy_factory, upstream):
    p = body_limited(proxy_factory, upstream)
    doc, raw = accepted(p, CHUNKED + b"400\r\n" + b"y" * 1024 + b"\r\n0\r\n\r\n")
    assert doc["body_len"] == 1024, doc


def cpu_seconds(pid):
    fields = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def fd_starved_proxy(tmp_path, upstream):
    """psproxy with RLIMIT_NOFILE 64, proxying to UPSTREAM."""
    port = free_port()
    conf = tmp_path / "starved.conf"
    conf.write_text(make_config(port, proxy_block(upstream), read_header="30s", idle="30s"))
    log = tmp_path / "starved.log"
    logf = open(log, "w")

    def limit():
        resource.setrlimit(resource.RLIMIT_NOFILE, (64, 64))

    proc = subprocess.Popen([PSPROXY, "-c", str(conf)], cwd=str(tmp_path), stdin=subprocess.DEVNULL,
                            stdout=logf, stderr=subprocess.STDOUT, preexec_fn=limit)
    try:
        wait_port(port, proc, 10, "psproxy", log)
        proc.port = port
        yield proc
    finally:
        crashed = proc.poll()
        rc, killed = reap(proc)
        logf.close()
        text = tail(log, 1 << 20)
        assert crashed is None, "psproxy exited with %s; log:\n%s" % (crashed, text[-4000:])
        assert not killed, "psproxy ignored SIGTERM for %.0f s" % STOP_TIMEOUT
        for mark in SANITIZER_MARKS:
            assert mark not in text, "sanitizer report; log:\n" + text[-6000:]


def test_out_of_fds_no_busy_loop_and_serves_again(fd_starved_proxy, upstream):
    p = fd_starved_proxy
    socks = []
    try:
        for _ in range(150):  # more than psproxy has descriptors
            socks.append(socket.create_connection(("127.0.0.1", p.port), timeout=2))
        # psproxy has taken what it could: its descriptors stop changing
        wait_stable(lambda: len(os.listdir("/proc/%d/fd" % p.pid)), settle=0.5,
                    what="psproxy's open descriptors")
        c0 = cpu_seconds(p.pid)
        time.sleep(2.0)  # a real wait: the CPU it uses meanwhile is the test
        used = cpu_seconds(p.pid) - c0
        assert used < 0.3, "psproxy used %.2f s of CPU in 2 s out of descriptors" % used
    finally:
        for s in socks:
            s.close()
    # the descriptors come back: psproxy serves again
    deadline = time.monotonic() + WAIT_TIMEOUT
    while True:
        try:
            s = connect(p.port, timeout=2)
            s.sendall(b"GET /echo?again HTTP/1.1\r\n" + HOST + b"\r\n")
            r = Reader(s).response()
            s.close()
            break
        except (OSError, EOFError):
            assert time.monotonic() < deadline, "psproxy does not serve after fds came back"
            time.sleep(0.1)
    assert r.status == 200 and r.json()["query"] == "again", r


# -- hop-by-hop and spoofing ----------------------------------------------------------


def test_fields_listed_in_connection_never_reach_the_upstream(proxy):
    data = (b"GET /echo HTTP/1.1\r\n" + HOST + b"Connection: X-A\r\n"
            b"connection: x-b , Keep-Alive\r\nX-A: 1\r\nx-B: 2\r\nX-b: 3\r\n"
            b"Keep-Alive: timeout=5\r\nX-C: kept\r\n\r\n")
    doc, raw = accepted(proxy, data)
    names = [k for k, _ in head_lines(raw)]
    for hop in ("x-a", "x-b", "keep-alive", "connection"):
        assert hop not in names, "%s reached the upstream: %r" % (hop, raw)
    assert ("x-c", "kept") in head_lines(raw), raw


def test_connection_close_with_options_strips_them_and_closes(proxy):
    up = proxy.upstream
    before = upstream_bytes(up)
    s = connect(proxy.port)
    s.sendall(b"GET /echo HTTP/1.1\r\n" + HOST + b"Connection: close, X-Foo\r\n"
              b"X-Foo: secret\r\nX-Bar: kept\r\n\r\n")
    rd = Reader(s)
    r = rd.response()
    assert r.status == 200, r
    assert rd.closed_within(CLOSE_WITHIN), "Connection: close not honoured"
    s.close()
    raw = b"".join(new_upstream_bytes(up, before).values())
    fields = head_lines(raw)
    assert "x-foo" not in [k for k, _ in fields] and b"secret" not in raw, raw
    assert ("x-bar", "kept") in fields, raw


SPOOF = (b"X-Forwarded-For: 203.0.113.7\r\nx-forwarded-for: 198.51.100.2\r\n"
         b"X-Forwarded-Proto: https\r\nX-FORWARDED-HOST: evil.test\r\n")


@pytest.mark.parametrize("trusted", [False, True], ids=["untrusted", "trusted"])
def test_client_x_forwarded_for_is_replaced_unless_trusted(proxy_factory, upstream, trusted):
    extra = "\t\ttrusted_proxies 127.0.0.0/8" if trusted else "\t\ttrusted_proxies 10.0.0.0/8"
    p = proxy_factory(proxy_block(upstream, extra=extra))
    p.upstream = upstream
    doc, raw = accepted(p, b"GET /echo HTTP/1.1\r\n" + HOST + SPOOF + b"\r\n")
    fields = [f for f in head_lines(raw) if f[0].startswith("x-forwarded-")]
    if trusted:  # Caddy: a trusted proxy's list is extended
        want = [("x-forwarded-for", "203.0.113.7, 198.51.100.2, 127.0.0.1"),
                ("x-forwarded-proto", "https"), ("x-forwarded-host", "evil.test")]
    else:
        want = [("x-forwarded-for", "127.0.0.1"), ("x-forwarded-proto", "http"),
                ("x-forwarded-host", "127.0.0.1")]
    assert fields == want, raw
