"""How an HTTP/2 request's body is framed on its way up (issue #18).

psproxy turns each HTTP/2 stream into an HTTP/1.1 request. The head it
writes must say how the body ends, and that can only be decided from the
request's HEADERS frame, never from how the client's bytes happened to be
split into reads: END_STREAM on HEADERS means no body; otherwise the
client's content-length, or else transfer-encoding: chunked. Trailers (a
second HEADERS) never become fields of the head. A content-length the DATA
disagrees with makes the request malformed (RFC 9113 8.1.1): RST_STREAM
(PROTOCOL_ERROR), and the upstream never gets a whole request. A stream id
lower than one the client already opened is a connection error
(PROTOCOL_ERROR, RFC 9113 5.1.1), but a frame on a stream that was opened
and closed is not.

The bug this pins (#18): HEADERS without END_STREAM and DATA with
END_STREAM in one read went up as a bodiless head followed by the raw body
bytes, which the upstream read as the next request (request smuggling).

Every check reads what the upstream received byte for byte: h1strict.py
parses each upstream connection's bytes as a strict HTTP/1.1 request
stream (no leftover, no parse error, each request's framing and body).

The framing matrix (GET, HEAD, POST, PUT x body with content-length, body
without, empty DATA with and without content-length: 0, END_STREAM on
HEADERS) sends each stream's frames in one write and split at EVERY byte
boundary k (frames[:k], a 2 ms pause so psproxy reads them apart, then
frames[k:]), one stream at a time, each answered before the next, 200
streams per connection. Nothing is sampled: about 630 streams a method,
each method its own test (own psproxy and upstream), ~2.5 s each on two
cores, under ASan too. The whole file: 20-25 s, 25 s under ASan (47 s with
a fuzzer busy on the other core).
"""

import json
import time

import pytest

import h1strict
from conftest import proxy_block
from h2raw import (PROTOCOL_ERROR, STREAM_CLOSED, data_frame, err_name, headers_frame, lit,
                   request_block)
# fixtures and helpers shared with the frame-level tests (no test imported)
from test_h2_frames import (assert_alive, assert_serves, client, h2proxy, handshake,  # noqa: F401
                            log_tail, pki, tls_factory)

SPLIT_PAUSE = 0.002       # between the two halves of a split write
STREAM_TIMEOUT = 15.0     # one stream's answer: a hang guard
STREAMS_PER_CONN = 200    # then a new connection (stream ids stay low)
MAX_STUCK = 4             # streams that never ended before the matrix gives up


# -- h1strict, the parser the checks rely on ------------------------------------------


def test_h1strict_reads_a_chunked_body_with_extensions_and_trailers():
    r = h1strict.parse(b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"5\r\nhello\r\n3;ext=\"v\"\r\nabc\r\n0\r\nx-t: 1\r\n\r\n")
    assert r.clean, r
    (req,) = r.requests
    assert (req.method, req.target, req.framing, req.body, req.complete) == (
        "POST", "/a", "chunked", b"helloabc", True)
    assert req.chunks == [5, 3, 0] and req.trailers == [("x-t", "1")]


def test_h1strict_reads_a_content_length_body_and_pipelined_requests():
    r = h1strict.parse(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello"
                       b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n"
                       b"PUT /c HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"0\r\n\r\n")
    assert r.clean, r
    got = [(q.method, q.target, q.framing, q.length, q.body) for q in r.requests]
    assert got == [("POST", "/a", "length", 5, b"hello"), ("GET", "/b", "none", None, b""),
                   ("PUT", "/c", "chunked", None, b"")]


def test_h1strict_reports_a_body_sent_raw_after_a_bodiless_head():
    """The #18 shape: the body bytes are read as the next request."""
    r = h1strict.parse(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nGET /smuggled HTTP/1.1\r\n"
                       b"Host: x\r\n\r\n")
    assert r.clean and [q.target for q in r.requests] == ["/a", "/smuggled"]
    r = h1strict.parse(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n"
                       b"0123456789abcdef")
    assert not r.clean and r.error is None and r.leftover == b"0123456789abcdef", r
    assert [q.complete for q in r.requests] == [True, False], r
    r = h1strict.parse(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nstray bytes\r\n")
    assert r.error and r.leftover == b"stray bytes\r\n", r


def test_h1strict_reports_a_connection_that_ended_inside_a_request_as_incomplete():
    r = h1strict.parse(b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\n01234")
    assert r.error is None and len(r.requests) == 1, r
    q = r.requests[0]
    assert not q.complete and q.head_complete and q.body == b"01234" and q.length == 10
    r = h1strict.parse(b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel")
    assert r.error is None and not r.requests[0].complete, r
    r = h1strict.parse(b"GET /a HTTP/1.1\r\nHo")
    assert r.error is None and not r.requests[0].head_complete, r


@pytest.mark.parametrize("raw, why", [
    (b"GET /a HTTP/1.1\nHost: x\r\n\r\n", "bare LF"),
    (b"GET /a HTTP/1.1\r\nHost: x\n\r\n", "bare LF"),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\rX-B: 2\r\n\r\n", "bare CR"),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n 2\r\n\r\n", "obs-fold"),
    (b"GET /a HTTP/1.1\r\nHost : x\r\n\r\n", "whitespace before the colon"),
    (b"GET  /a HTTP/1.1\r\nHost: x\r\n\r\n", "request line"),
    (b"GET /a HTTP/1.0\r\nHost: x\r\n\r\n", "version"),
    (b"GET /a HTTP/1.1\r\n\r\n", "Host"),
    (b"GET /a HTTP/1.1\r\nHost: x\r\nHost: y\r\n\r\n", "Host"),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\nab",
     "Content-Length"),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 1, 1\r\n\r\nab", "Content-Length"),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: +1\r\n\r\nab", "Content-Length"),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n"
     b"0\r\n\r\n", "Transfer-Encoding and Content-Length"),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked, gzip\r\n\r\n", "last"),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5 \r\nhello\r\n0\r\n\r\n",
     "chunk-size"),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0x5\r\nhello\r\n"
     b"0\r\n\r\n", "chunk-size"),
    (b"POST /a HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloX\r\n"
     b"0\r\n\r\n", "CRLF"),
])
def test_h1strict_rejects(raw, why):
    r = h1strict.parse(raw)
    assert r.error is not None and why in r.error and r.leftover, r


# -- helpers --------------------------------------------------------------------------


class Sender:
    """Sends streams one at a time (each answered, or given up on, before the
    next) over h2 connections it opens as needed."""

    def __init__(self, p):
        self.p = p
        self.c = None
        self.on_conn = 0
        self.stuck = []

    def conn(self):
        c = self.c
        if c is None or self.on_conn >= STREAMS_PER_CONN or c.closed or c.goaway is not None \
                or c.send_failed:
            if c is not None:
                c.close()
            self.c = c = client(self.p)
            handshake(c)
            self.on_conn = 0
        return c

    def send(self, build, k=0):
        """Opens a stream with the frames BUILD(client, sid) returns, in one
        write (K 0) or as [:K] and [K:]; returns (client, stream)."""
        c = self.conn()
        sid = c.new_sid()
        self.on_conn += 1
        frames = build(c, sid)
        if k and 0 < k < len(frames):
            c.send(frames[:k])
            time.sleep(SPLIT_PAUSE)  # a real wait: the split is the test
            c.send(frames[k:])
        else:
            c.send(frames)
        if not c.wait_streams([sid], STREAM_TIMEOUT):
            self.stuck.append(sid)
            self.c = None  # a fresh connection for the next one
            c.close()
        return c, c.stream(sid)

    def close(self):
        if self.c is not None:
            self.c.close()
            self.c = None


def upstream_requests(p):
    """Every connection's parse, and [(conn id, Request)] of all of them."""
    parsed = []
    reqs = []
    for cid, is_open, raw in p.upstream.raw_conns():
        r = h1strict.parse(raw)
        parsed.append((cid, is_open, r))
        reqs += [(cid, q) for q in r.requests]
    return parsed, reqs


def unclean(parsed):
    """The connections with bytes that are no complete valid request."""
    return ["upstream conn %d (%s): %s; leftover %r; last requests %r" % (
        cid, "open" if is_open else "closed", r.error or "incomplete", r.leftover[:300],
        r.requests[-2:]) for cid, is_open, r in parsed if not r.clean]


def proxied_targets(p):
    """The request targets the upstream read, without the tests' own
    /stats and /raw."""
    return [t for t in p.upstream.stats()["targets"] if t not in ("/stats", "/raw")]


def by_target(reqs):
    out = {}
    for cid, q in reqs:
        if q.target is not None:
            out.setdefault(q.target, []).append((cid, q))
    return out


def report(failures, what, limit=12):
    if failures:
        pytest.fail("%d %s; the first %d:\n  %s" % (
            len(failures), what, min(limit, len(failures)), "\n  ".join(failures[:limit])))


# -- 1. the framing matrix ------------------------------------------------------------

METHODS = ["GET", "HEAD", "POST", "PUT"]
# variant: what its stream sends
VARIANTS = {
    "cl": "body with content-length",
    "nocl": "body without content-length",
    "empty": "empty DATA with END_STREAM, no content-length",
    "empty-cl0": "empty DATA with END_STREAM, content-length: 0",
    "none": "END_STREAM on HEADERS",
}
BODY_LEN = 32


class Case:
    def __init__(self, method, variant, k):
        self.method, self.variant, self.k = method, variant, k
        self.path = "/echo/framing/%s/%s/k%03d" % (method, variant, k)
        tag = ("%s/%s/%03d|" % (method, variant, k)).encode()
        self.body = (tag + b"abcdefghijklmnopqrstuvwxyz0123456789" * 2)[:BODY_LEN]
        if variant == "cl":
            self.fields, self.data = [("content-length", str(BODY_LEN))], self.body
        elif variant == "nocl":
            self.fields, self.data = [], self.body
        elif variant == "empty":
            self.fields, self.data = [], b""
        elif variant == "empty-cl0":
            self.fields, self.data = [("content-length", "0")], b""
        else:
            self.fields, self.data = [], None
        self.sent = self.data or b""
        self.stream = None

    def frames(self, c, sid):
        block = request_block(self.method, self.path, c.authority, headers=self.fields)
        if self.data is None:
            return headers_frame(sid, block, end_stream=True)
        return headers_frame(sid, block, end_stream=False) + data_frame(sid, self.data, end=True)

    def __repr__(self):
        return "%s %s (%s, %s)" % (self.method, self.path, VARIANTS[self.variant],
                                   "one write" if self.k == 0 else "split at %d" % self.k)


def framing_ok(case, q):
    """Whether upstream request Q is framed as CASE's HEADERS said."""
    if case.variant in ("cl", "empty-cl0"):
        return q.framing == "length" and q.length == len(case.sent)
    if case.variant == "nocl":
        return q.framing == "chunked"
    if case.variant == "empty":
        # no END_STREAM on HEADERS and no content-length: chunked (an empty
        # body said with content-length: 0 would be as correct)
        return q.framing == "chunked" or (q.framing == "length" and q.length == 0)
    # END_STREAM on HEADERS: no body at all
    return q.framing == "none" or (q.framing == "length" and q.length == 0)


@pytest.mark.parametrize("method", METHODS)
def test_request_framing_does_not_depend_on_how_the_frames_are_split(h2proxy, method):
    p = h2proxy()
    probe = client(p)
    handshake(probe)
    cases = []
    for variant in VARIANTS:
        n = len(Case(method, variant, 0).frames(probe, 1))
        cases += [Case(method, variant, k) for k in range(n)]  # k 0: one write
    probe.close()
    sender = Sender(p)
    t0 = time.monotonic()
    for case in cases:
        _, case.stream = sender.send(case.frames, case.k)
        if len(sender.stuck) >= MAX_STUCK:
            break
    sender.close()
    took = time.monotonic() - t0
    print("%s: %d streams in %.1f s" % (method, len(cases), took))
    assert_alive(p)
    report(["%r never answered: %r" % (c, c.stream) for c in cases
            if c.stream is not None and not c.stream.done], "streams never answered")
    assert len(sender.stuck) < MAX_STUCK, "gave up after %d streams never answered" % (
        len(sender.stuck))

    # the answers: every stream a 200 from the upstream, which read its body
    bad = []
    for case in cases:
        s = case.stream
        if s.status != 200 or s.rst is not None or not s.ended:
            bad.append("%r: %r" % (case, s))
            continue
        if method != "HEAD":
            doc = json.loads(bytes(s.data))
            if doc["path"] != case.path or doc["body_len"] != len(case.sent):
                bad.append("%r: the upstream answered for %s with a %d-byte body" % (
                    case, doc["path"], doc["body_len"]))
        elif s.data:
            bad.append("%r: a HEAD answered with %d body bytes" % (case, len(s.data)))
    report(bad, "streams not answered 200 with the body they sent")

    # what the upstream read, byte for byte
    time.sleep(0.1)  # a grace: what psproxy wrongly sent on reaches the upstream by now
    parsed, reqs = upstream_requests(p)
    report(unclean(parsed), "upstream connections with bytes that are no valid request "
                            "(a body read as a request: smuggling)")
    got = by_target(reqs)
    sent = {case.path: case for case in cases}
    report(["%s (%d times)" % (t, len(v)) for t, v in got.items() if t not in sent],
           "request targets the upstream read that no client sent (smuggled)")
    report([t for t in proxied_targets(p) if t not in sent],
           "targets in the upstream's stats that no client sent")
    bad = []
    for case in cases:
        found = got.get(case.path, [])
        if len(found) != 1:
            bad.append("%r reached the upstream %d times" % (case, len(found)))
            continue
        cid, q = found[0]
        if not q.complete or q.body != case.sent:
            bad.append("%r: the upstream read body %r, not %r (conn %d)" % (
                case, q.body, case.sent, cid))
        elif not framing_ok(case, q):
            bad.append("%r: framed %s (content-length %s) upstream (conn %d): %r" % (
                case, q.framing, q.length, cid, q.headers))
    report(bad, "streams whose upstream request is not the one sent")
    assert_serves(p)


# -- 2. trailers ----------------------------------------------------------------------


TRAILER_FIELDS = [("x-trailer", "evil"), ("x-forwarded-for", "6.6.6.6"), ("authorization", "x")]


def trailer_frames(path, body, with_length, trailers):
    def build(c, sid):
        fields = [("content-length", str(len(body)))] if with_length else []
        return (headers_frame(sid, request_block("POST", path, c.authority, headers=fields),
                              end_stream=False)
                + data_frame(sid, body, end=False)
                + headers_frame(sid, b"".join(lit(k, v) for k, v in trailers), end_stream=True))
    return build


@pytest.mark.parametrize("with_length", [True, False], ids=["content-length", "chunked"])
def test_trailers_never_become_fields_of_the_upstream_head(h2proxy, with_length):
    """HEADERS, DATA, then trailers (HEADERS with END_STREAM): in one write
    and split at every byte boundary. The upstream gets the exact body, and
    no trailer field in its head (a chunked trailer section may carry
    them: that is where trailers belong)."""
    p = h2proxy()
    sender = Sender(p)
    cases = []
    probe = client(p)
    handshake(probe)
    tag = "cl" if with_length else "te"
    n = len(trailer_frames("/echo/trailers/%s/k000" % tag, b"x" * BODY_LEN, with_length,
                           TRAILER_FIELDS)(probe, 1))
    probe.close()
    for k in range(n):
        path = "/echo/trailers/%s/k%03d" % (tag, k)
        body = (("trailers-%s-%03d|" % (tag, k)).encode() + b"z" * BODY_LEN)[:BODY_LEN]
        _, s = sender.send(trailer_frames(path, body, with_length, TRAILER_FIELDS), k)
        cases.append((k, path, body, s))
        if len(sender.stuck) >= MAX_STUCK:
            break
    sender.close()
    report(["k=%d %s: %r" % (k, path, s) for k, path, _, s in cases
            if s.status != 200 or s.rst is not None], "trailer streams not answered 200")
    parsed, reqs = upstream_requests(p)
    report(unclean(parsed), "upstream connections with bytes that are no valid request")
    got = by_target(reqs)
    bad = []
    for k, path, body, _ in cases:
        found = got.get(path, [])
        if len(found) != 1:
            bad.append("k=%d %s reached the upstream %d times" % (k, path, len(found)))
            continue
        cid, q = found[0]
        head = [(name.lower(), value) for name, value in q.headers]
        leaked = [f for f in head if f in TRAILER_FIELDS or f[0] == "x-trailer"]
        if leaked:
            bad.append("k=%d %s: trailer fields %r in the upstream head %r" % (
                k, path, leaked, q.headers))
        if q.body != body or not q.complete:
            bad.append("k=%d %s: body %r, not %r" % (k, path, q.body, body))
        if with_length and (q.framing, q.length) != ("length", len(body)):
            bad.append("k=%d %s: framed %s %s, not the client's content-length" % (
                k, path, q.framing, q.length))
        if not with_length and q.framing != "chunked":
            bad.append("k=%d %s: framed %s, not chunked" % (k, path, q.framing))
    report(bad, "trailer streams whose upstream request is wrong")
    assert_serves(p)


@pytest.mark.parametrize("field", [("content-length", "999"),
                                   ("transfer-encoding", "gzip, chunked"),
                                   ("host", "evil.test")], ids=["content-length", "te", "host"])
def test_framing_fields_in_trailers_never_reach_the_upstream_head(h2proxy, field):
    """content-length, transfer-encoding or host as a trailer: nghttp2
    rejects the first two (RST_STREAM PROTOCOL_ERROR, RFC 9113 8.1.1 and
    8.2.2). What is accepted must not reach the upstream's head; a stream
    reset for it never completes upstream, except where the body had
    already gone up whole under the client's own content-length before the
    trailers came (nothing can take it back then, and it is well framed).
    In one write and split inside the HEADERS frame, at the HEADERS/DATA
    and DATA/trailers junctions and before the last byte."""
    p = h2proxy()
    sender = Sender(p)
    body = b"0123456789" * 3
    trailers = [("x-trailer", "t"), field]
    probe = client(p)
    handshake(probe)
    results = []
    for with_length in (True, False):
        frames = trailer_frames("/echo/trailer-field/%s/%d/k000" % (field[0], with_length), body,
                                with_length, trailers)(probe, 1)
        hlen = frames.index(data_frame(1, body))
        dend = hlen + 9 + len(body)
        for k in sorted({0, 9, hlen - 1, hlen, dend, dend + 5, len(frames) - 1}):
            path = "/echo/trailer-field/%s/%d/k%03d" % (field[0], with_length, k)
            _, s = sender.send(trailer_frames(path, body, with_length, trailers), k)
            results.append((path, with_length, s))
    probe.close()
    sender.close()
    time.sleep(0.2)  # a grace: what psproxy wrongly sent on reaches the upstream by now
    parsed, reqs = upstream_requests(p)
    got = by_target(reqs)
    bad = []
    for path, with_length, s in results:
        print("trailer %s: %s -> status %s rst %s" % (field, path, s.status, err_name(s.rst)))
        found = got.get(path, [])
        if s.status is not None and 200 <= s.status < 300:
            if len(found) != 1 or not found[0][1].complete or found[0][1].body != body:
                bad.append("%s: answered %d, yet the upstream read %r" % (path, s.status, found))
                continue
        elif s.rst is None and s.status is None:
            bad.append("%s: neither answered nor reset: %r" % (path, s))
        elif s.rst is not None and s.rst != PROTOCOL_ERROR:
            bad.append("%s: RST_STREAM %s, not PROTOCOL_ERROR" % (path, err_name(s.rst)))
        for cid, q in found:
            vals = [v for n, v in q.headers if n.lower() == field[0]]
            if field[1] in vals:
                bad.append("%s: trailer %s: %s in the upstream head %r" % (
                    path, field[0], field[1], q.headers))
            if s.rst is not None and q.complete and not (
                    with_length and q.framing == "length" and q.body == body):
                bad.append("%s: reset (%s), yet the upstream read the whole request %r" % (
                    path, err_name(s.rst), q))
    for cid, is_open, r in parsed:
        if r.error:
            bad.append("upstream conn %d: %s (leftover %r)" % (cid, r.error, r.leftover[:200]))
        elif r.leftover and is_open:
            bad.append("upstream conn %d still open inside a broken request %r" % (
                cid, r.requests[-1]))
    report(bad, "trailer problems")
    assert_serves(p)


# -- 3. the reported smuggle ----------------------------------------------------------


SMUGGLE = b"GET /smuggled HTTP/1.1\r\nHost: a.test\r\n\r\n"


@pytest.mark.parametrize("method", ["GET", "POST"])
@pytest.mark.parametrize("warm", [False, True], ids=["cold", "pooled"])
def test_request_body_in_the_same_read_as_its_headers_is_not_a_second_request(
        h2proxy, method, warm):
    """#18: HEADERS without END_STREAM and a DATA frame with END_STREAM
    whose payload is an HTTP/1.1 request, in one write. POOLED: an idle
    upstream connection waits in the pool, so the head leaves at once."""
    p = h2proxy()
    c = client(p)
    handshake(c)
    path = "/echo/smuggle/%s" % method
    if warm:
        sid = c.request("/echo/warm")
        assert c.wait_streams([sid], 15) and c.stream(sid).status == 200, c.stream(sid)
    sid = c.new_sid()
    c.send(headers_frame(sid, request_block(method, path, c.authority), end_stream=False)
           + data_frame(sid, SMUGGLE, end=True))
    assert c.wait_streams([sid], 15), (c.describe(), c.stream(sid))
    s = c.stream(sid)
    # the stream after it on the same connection: a desynchronised upstream
    # connection would hand it /smuggled's answer
    after = c.request("/echo/after")
    assert c.wait_streams([after], 15), (c.describe(), c.stream(after))
    c.close()
    time.sleep(0.2)  # a grace: what psproxy wrongly sent on reaches the upstream by now
    stats = proxied_targets(p)
    parsed, reqs = upstream_requests(p)
    raw = [(cid, raw) for cid, _, raw in p.upstream.raw_conns()]
    assert "/smuggled" not in stats, (
        "the upstream read a request for /smuggled: targets %r; bytes %r%s" % (
            stats, raw, log_tail(p)))
    assert not any(q.target == "/smuggled" for _, q in reqs), raw
    report(unclean(parsed), "upstream connections with bytes that are no valid request")
    mine = [q for _, q in reqs if q.target == path]
    assert len(mine) == 1 and mine[0].complete and mine[0].body == SMUGGLE, (mine, raw)
    assert mine[0].framing == "chunked", mine[0]
    assert s.status == 200 and s.ended, s
    doc = json.loads(bytes(s.data))
    assert doc["path"] == path and doc["body_len"] == len(SMUGGLE), doc
    sa = c.stream(after)
    assert sa.status == 200 and json.loads(bytes(sa.data))["path"] == "/echo/after", sa
    assert sorted(stats) == sorted(["/echo/warm"] * warm + [path, "/echo/after"]), stats
    assert_serves(p)


# -- 4. content-length that the DATA disagrees with -------------------------------------


@pytest.mark.parametrize("declared, sent", [(10, 5), (5, 10)], ids=["short", "long"])
def test_content_length_mismatch_is_a_stream_error_and_never_completes_upstream(
        h2proxy, declared, sent):
    p = h2proxy()
    probe = client(p)
    handshake(probe)

    def build_for(path):
        def build(c, sid):
            return (headers_frame(sid, request_block("POST", path, c.authority,
                                                     headers=[("content-length", str(declared))]),
                                  end_stream=False)
                    + data_frame(sid, b"0123456789"[:sent], end=True))
        return build

    n = len(build_for("/echo/mismatch/%d-%d/k000" % (declared, sent))(probe, 1))
    probe.close()
    hlen = n - 9 - sent
    # one write; inside HEADERS; at the HEADERS/DATA junction; inside the
    # DATA frame header; inside its payload
    ks = sorted({0, 1, 9, hlen - 1, hlen, hlen + 1, hlen + 5, hlen + 9, hlen + 9 + 2, n - 1})
    sender = Sender(p)
    results = []
    for k in ks:
        path = "/echo/mismatch/%d-%d/k%03d" % (declared, sent, k)
        c, s = sender.send(build_for(path), k)
        results.append((k, path, s, c.goaway))
    sender.close()
    time.sleep(0.3)  # a grace: what psproxy wrongly sent on reaches the upstream by now
    parsed, reqs = upstream_requests(p)
    got = by_target(reqs)
    bad = []
    for k, path, s, goaway in results:
        if s.rst is not None:
            if s.rst != PROTOCOL_ERROR:
                bad.append("k=%d: RST_STREAM %s, not PROTOCOL_ERROR" % (k, err_name(s.rst)))
        elif s.status is None:
            bad.append("k=%d: neither reset nor answered: %r goaway %r" % (k, s, goaway))
        elif 200 <= s.status < 300:
            bad.append("k=%d: answered %r" % (k, s))
        for cid, q in got.get(path, []):
            if q.complete:
                bad.append("k=%d: the upstream read a whole request %r (conn %d)" % (k, q, cid))
    for cid, is_open, r in parsed:
        if r.error:
            bad.append("upstream conn %d: %s (leftover %r)" % (cid, r.error, r.leftover[:200]))
        elif r.leftover and is_open:
            bad.append("upstream conn %d still open inside a broken request %r" % (
                cid, r.requests[-1]))
    report(bad, "content-length %d with %d bytes" % (declared, sent))
    assert_serves(p)


# -- 5. stream ids ----------------------------------------------------------------------


@pytest.mark.parametrize("opened, lower", [(5, 3), (3, 1), (9, 5)])
def test_stream_id_lower_than_one_already_opened_is_a_connection_error(h2proxy, opened, lower):
    """RFC 9113 5.1.1: stream OPENED, answered, then HEADERS on stream LOWER
    (never used): GOAWAY(PROTOCOL_ERROR) naming OPENED as the last stream;
    stream LOWER never reaches the upstream."""
    p = h2proxy()
    c = client(p)
    handshake(c)
    c.request("/echo/order/%d" % opened, sid=opened)
    assert c.wait_streams([opened], 15) and c.stream(opened).status == 200, c.stream(opened)
    c.request("/echo/order/%d" % lower, sid=lower)
    c.pump(lambda c: c.goaway is not None or c.stream(lower).done, 10)
    assert c.goaway is not None and c.goaway[1] == PROTOCOL_ERROR, (
        "HEADERS on stream %d after stream %d: %s %r%s" % (
            lower, opened, c.describe(), c.stream(lower), log_tail(p)))
    assert c.goaway[0] == opened, c.describe()
    assert c.stream(lower).status is None, c.stream(lower)
    c.close()
    time.sleep(0.2)  # a grace: what psproxy wrongly sent on reaches the upstream by now
    assert "/echo/order/%d" % lower not in proxied_targets(p)
    assert_serves(p)


def test_stream_id_lower_than_one_opened_in_the_same_write_is_a_connection_error(h2proxy):
    p = h2proxy()
    c = client(p)
    handshake(c)
    c.send(c.request("/echo/order2/5", sid=5, send=False)
           + c.request("/echo/order2/3", sid=3, send=False))
    c.pump(lambda c: c.goaway is not None and (c.stream(5).done or c.closed), 10)
    assert c.goaway is not None and c.goaway[1] == PROTOCOL_ERROR, (
        c.describe(), c.stream(3), c.stream(5))
    assert c.stream(3).status is None, c.stream(3)
    c.close()
    time.sleep(0.2)  # a grace: what psproxy wrongly sent on reaches the upstream by now
    assert "/echo/order2/3" not in proxied_targets(p)
    assert_serves(p)


def test_trailers_on_an_open_lower_stream_after_a_higher_one_are_served(h2proxy):
    """Stream 1 uploads, stream 3 comes and goes, then stream 1's trailers:
    a lower id, but an open stream, not a new one: no connection error,
    and stream 1's request arrives whole."""
    p = h2proxy()
    c = client(p)
    handshake(c)
    body = b"upload-on-stream-1" * 2
    c.send(headers_frame(1, request_block("POST", "/echo/open/1", c.authority),
                         end_stream=False) + data_frame(1, body))
    c.request("/echo/open/3", sid=3)
    assert c.wait_streams([3], 15) and c.stream(3).status == 200, (c.describe(), c.stream(3))
    c.send(headers_frame(1, lit("x-trailer", "t"), end_stream=True))
    assert c.wait_streams([1], 15), (c.describe(), c.stream(1))
    assert c.goaway is None and not c.closed, c.describe() + log_tail(p)
    s = c.stream(1)
    assert s.status == 200, s
    assert json.loads(bytes(s.data))["body_len"] == len(body), s
    sid = c.request("/echo/open/after", sid=5)
    assert c.wait_streams([sid], 15) and c.stream(sid).status == 200, c.describe()
    c.close()
    assert_serves(p)


def test_trailers_on_a_stream_psproxy_answered_early_are_not_a_protocol_error(
        h2proxy, upstream):
    """Stream 1 (a POST whose body is still coming) is answered by psproxy
    itself (respond), stream 3 is served, then the rest of stream 1's body
    and its trailers arrive: a lower id than stream 3's, on a stream opened
    before, so never GOAWAY(PROTOCOL_ERROR); the connection goes on. (psproxy
    does not reset stream 1 after its answer: the trailers end it.)"""
    p = h2proxy('\trespond /early "early" 200\n' + proxy_block(upstream,
                                                                response_header_timeout="5s"))
    c = client(p)
    handshake(c)
    c.send(headers_frame(1, request_block("POST", "/early", c.authority), end_stream=False)
           + data_frame(1, b"part of a body"))
    assert c.wait_streams([1], 15) and c.stream(1).status == 200, (c.describe(), c.stream(1))
    c.request("/echo/early/3", sid=3)
    assert c.wait_streams([3], 15) and c.stream(3).status == 200, (c.describe(), c.stream(3))
    c.pump(None, 0.2)  # whatever psproxy sends to end stream 1 (RST_STREAM)
    c.send(data_frame(1, b"more") + headers_frame(1, lit("x-trailer", "t"), end_stream=True))
    c.pump(lambda c: c.goaway is not None, 0.5)  # a grace: no GOAWAY comes
    assert c.goaway is None, "trailers on stream 1 after it was answered: %s%s" % (
        c.describe(), log_tail(p))
    sid = c.request("/echo/early/5", sid=5)
    assert c.wait_streams([sid], 15) and c.stream(sid).status == 200, (c.describe(),
                                                                      c.stream(sid))
    c.close()
    assert_serves(p)


def test_trailers_on_a_stream_psproxy_reset_are_ignored(h2proxy):
    """Stream 1 sends more DATA than its content-length: psproxy resets it
    (PROTOCOL_ERROR). Stream 3 is served, then stream 1's trailers arrive
    (sent before the client saw the reset): RFC 9113 5.1 says frames on a
    stream the endpoint reset are ignored, so no GOAWAY; the connection
    serves stream 5, and stream 1 never completes upstream."""
    p = h2proxy()
    c = client(p)
    handshake(c)
    c.send(headers_frame(1, request_block("POST", "/echo/reset/1", c.authority,
                                          headers=[("content-length", "5")]), end_stream=False)
           + data_frame(1, b"0123456789"))
    assert c.wait_streams([1], 15), (c.describe(), c.stream(1))
    assert c.stream(1).rst == PROTOCOL_ERROR, c.stream(1)
    c.request("/echo/reset/3", sid=3)
    assert c.wait_streams([3], 15) and c.stream(3).status == 200, (c.describe(), c.stream(3))
    c.send(headers_frame(1, lit("x-trailer", "t"), end_stream=True))
    c.pump(lambda c: c.goaway is not None, 0.5)  # a grace: no GOAWAY comes
    assert c.goaway is None and not c.closed, (
        "trailers on stream 1 after psproxy reset it: %s%s" % (c.describe(), log_tail(p)))
    sid = c.request("/echo/reset/5", sid=5)
    assert c.wait_streams([sid], 15) and c.stream(sid).status == 200, (c.describe(),
                                                                      c.stream(sid))
    c.close()
    time.sleep(0.2)  # a grace: what psproxy wrongly sent on reaches the upstream by now
    _, reqs = upstream_requests(p)
    assert not any(q.complete for _, q in reqs if q.target == "/echo/reset/1"), reqs
    assert_serves(p)


def test_headers_on_a_stream_the_client_ended_and_was_answered_are_not_a_protocol_error(
        h2proxy):
    """Stream 1, a GET with END_STREAM, answered; stream 3 too; then HEADERS
    with END_STREAM on stream 1 again. RFC 9113 5.1 (closed): a frame after
    END_STREAM MAY be a connection error of type STREAM_CLOSED; it is not a
    new stream, so never PROTOCOL_ERROR. When the connection goes on it
    serves the next stream."""
    p = h2proxy()
    c = client(p)
    handshake(c)
    c.request("/echo/reuse/1", sid=1)
    c.request("/echo/reuse/3", sid=3)
    assert c.wait_streams([1, 3], 15), c.describe()
    c.send(headers_frame(1, lit("x-trailer", "t"), end_stream=True))
    c.pump(lambda c: c.goaway is not None, 0.5)  # a grace: no GOAWAY comes
    print("HEADERS on closed stream 1: %s %r" % (c.describe(), c.stream(1)))
    assert c.goaway is None or c.goaway[1] != PROTOCOL_ERROR, (
        "HEADERS on a closed stream: %s%s" % (c.describe(), log_tail(p)))
    if c.goaway is not None:
        assert c.goaway[1] == STREAM_CLOSED, c.describe()
    else:
        sid = c.request("/echo/reuse/5", sid=5)
        assert c.wait_streams([sid], 15) and c.stream(sid).status == 200, (c.describe(),
                                                                          c.stream(sid))
    c.close()
    assert proxied_targets(p).count("/echo/reuse/1") == 1, proxied_targets(p)
    assert_serves(p)
