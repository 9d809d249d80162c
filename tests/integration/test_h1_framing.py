"""HTTP/1.1 request framing through psproxy (issue #18), black-box, against
the recording test upstream (upstream.py /raw).

The invariant: every request psproxy writes to an upstream is framed by
psproxy (its own head, which carries the X-Forwarded-* fields psproxy adds:
the tests never send those), exactly the bytes the client sent as that
request's body follow it, no more and no fewer; a bad request gets its 4xx
and never reaches the upstream; and none of this depends on how the client's
bytes are split into TCP segments.

Each case is sent once in one write (k = 0) and then split at every byte
boundary k: data[:k], a 2 ms pause (TCP_NODELAY on both ends, so psproxy reads
the two parts separately), data[k:], each split on a fresh client connection.
Every request line carries the split as "?k=NNN", so each upstream request
says which split sent it. After a sweep, every upstream connection's raw bytes
are parsed with the strict HTTP/1.1 request-stream parser h1strict.py and
the multiset of (method, target, body) the upstream got must be exactly the
one the sweep sent, with no bytes left over. The only partial request
allowed is the head of a chunked request whose bad chunk came in a later
segment than its head (psproxy streams bodies, so the head went up before the
bad byte existed): then the upstream connection must be closed with the body
unfinished, so no parser reads a request out of it.

Every boundary is swept for every case (no sampling): about 3,000 splits,
~15 s for the file on an idle 2-core machine, ~20 s under ASan. A split
whose parts psproxy happens to read together (a loaded machine) only tests
less; it cannot fail a correct psproxy. A sweep records every failing split
and goes on, so a failure names each k it happens at.

Upgrade: a request with Upgrade whose upstream answers 101 becomes a tunnel,
and what the client sent after the head is tunnel data, byte for byte. When
the upstream does not answer 101, the bytes after the head are HTTP again:
Caddy 2.6 (checked by hand against this upstream) parses them as the next
request and forwards it framed by itself, pipelined or not (nginx, which
tunnels only after a 101, should too; not checked). psproxy must at least
never pass them on unparsed (test_refused_upgrade_never_passes_bytes_on_raw),
and should serve them as Caddy does
(test_request_after_refused_upgrade_is_served).
"""

import hashlib
import random
import re
import time
from collections import Counter

import pytest

import h1strict
from conftest import CLOSE_WITHIN, Reader, connect
from upstream import RAW_KEEP, ws_frame

HOST = b"Host: 127.0.0.1\r\n"
PAUSE = 0.002  # between the two parts of a split
SOCK_TIMEOUT = 5.0
WS_MASK = b"\x11\x22\x33\x44"


# -- what the checks rely on in h1strict -------------------------------------------


def test_h1strict_as_these_checks_use_it():
    # a connection cut inside a chunked body: an incomplete request, its
    # bytes the leftover; a request sent raw after a head that psproxy
    # wrote shows as a second request (one without psproxy's fields)
    p = h1strict.parse(b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
                       b"5\r\nhello\r\n")
    assert p.error is None and len(p.requests) == 1, p
    r = p.requests[0]
    assert r.head_complete and not r.complete and r.body == b"hello" and p.leftover, p
    p = h1strict.parse(b"GET /a HTTP/1.1\r\nHost: h\r\nX-Forwarded-For: 127.0.0.1\r\n"
                       b"X-Forwarded-Proto: http\r\n\r\nGET /b HTTP/1.1\r\nHost: h\r\n\r\n")
    assert p.clean and [_psproxy_framed(r) for r in p.requests] == [True, False], p
    # bytes after a request that are no head (yet): a request without a
    # whole head, which _check_upstream reports
    p = h1strict.parse(b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n\x81\x05hello")
    assert [r.head_complete for r in p.requests] == [True, False], p
    assert p.leftover == b"\x81\x05hello", p
    for bad in (b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\n"
                b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
                b"GET /a HTTP/1.1\r\nHost: h\r\n\r\nGET /b HTTP/1.1\nHost: h\r\n\r\n"):
        assert h1strict.parse(bad).error is not None, bad


# -- helpers ----------------------------------------------------------------------


def _psproxy_framed(req):
    """Whether REQ's head is one psproxy wrote: it carries the X-Forwarded-*
    fields psproxy adds (the tests send none), once each."""
    return (req.header_all("X-Forwarded-For") == ["127.0.0.1"]
            and req.header_all("X-Forwarded-Proto") == ["http"])


def _tag(k):
    return "%03d" % k


def _send_split(port, data, k):
    """A fresh connection with DATA sent in one write (K = 0) or as
    DATA[:K], a pause, DATA[K:]; returns (socket, Reader)."""
    s = connect(port, SOCK_TIMEOUT)
    if 0 < k < len(data):
        s.sendall(data[:k])
        time.sleep(PAUSE)  # a real wait: the split is the test
        s.sendall(data[k:])
    else:
        s.sendall(data)
    return s, Reader(s)


_MAX_TIMEOUTS = 3  # a sweep stops after this many splits that hung


def _k_of(target):
    m = re.search(r"[?&]k=(\d{3})\b", target)
    return m.group(1) if m else None


class _Sweep:
    """Runs one split after another, k = 0 (one write) and then every byte
    boundary of an N-byte case. A split that fails is recorded and the
    sweep goes on, so a failure names every k it happens at."""

    def __init__(self, n):
        assert n < 1000, "the ?k=NNN tags keep every variant the same length"
        self.n = n
        self.failed = []  # (k, what)
        self.expected = Counter()

    def run(self, one):
        """ONE(k) checks split K and returns the (method, target, body) it
        expects the upstream to have got."""
        timeouts = 0
        for k in range(self.n):
            try:
                self.expected.update(one(k))
            except (AssertionError, EOFError, OSError, ValueError) as e:
                first = str(e).splitlines()[0] if str(e) else ""
                self.failed.append((k, "%s: %s" % (type(e).__name__, first[:300])))
                if isinstance(e, TimeoutError):
                    timeouts += 1
                    if timeouts >= _MAX_TIMEOUTS:
                        break

    def check(self, up, partial_ok=None, settle=0.1):
        """The upstream check (_check_upstream) for the splits that passed;
        the failed ones' requests are not counted, but must be strict and
        psproxy's too. Then fails naming every failed split."""
        _check_upstream(up, self.expected, partial_ok=partial_ok, settle=settle,
                        ignore=self.failed_tags())
        self.assert_passed()

    def failed_tags(self):
        return {_tag(k) for k, _ in self.failed}

    def assert_passed(self):
        assert not self.failed, "%d of %d splits failed, at k = %s\n%s" % (
            len(self.failed), self.n, [k for k, _ in self.failed],
            "\n".join("k=%d: %s" % f for f in self.failed[:4]))


def _check_echo(r, method, target, body, k):
    assert r.status == 200, "k=%d: %s %s: %r" % (k, method, target, r)
    doc = r.json()
    got = (doc["method"], doc["target"], doc["body_len"])
    assert got == (method, target, len(body)), "k=%d: upstream saw %r for %s %s (%d bytes)" % (
        k, got, method, target, len(body))
    assert doc["body_sha256"] == hashlib.sha256(body).hexdigest(), \
        "k=%d: %s %s: the upstream got another body" % (k, method, target)
    return doc


def _wait_closed(up, cids, timeout=3.0):
    deadline = time.monotonic() + timeout
    while True:
        still = [cid for cid, is_open, _ in up.raw_conns() if cid in cids and is_open]
        if not still or time.monotonic() > deadline:
            return still
        time.sleep(0.05)


def _check_upstream(up, expected, partial_ok=None, settle=0.1, ignore=()):
    """Parses every upstream connection strictly; the complete requests,
    as a Counter of (method, target, body), must be EXPECTED exactly, each
    framed by psproxy, with nothing left over. PARTIAL_OK(req) says whether
    an unfinished last request may stand at the end of a connection (which
    must then be closed). Requests whose ?k= tag is in IGNORE (splits that
    failed already) are not counted, and may be unfinished."""
    # a grace: the upstream's threads record what the kernel holds (what is
    # looked for is bytes psproxy should not have sent: no event for it)
    time.sleep(settle)
    seen = Counter()
    partial_cids = []
    problems = []
    for cid, _, raw in up.raw_conns():
        assert len(raw) < RAW_KEEP, "upstream conn %d: too much to check (%d bytes)" % (
            cid, len(raw))
        p = h1strict.parse(raw)
        if p.error is not None:
            problems.append("upstream conn %d: not strict HTTP/1.1: %s\n  from: %r" % (
                cid, p.error, p.leftover[:600]))
            continue
        for r in p.requests:
            if not r.head_complete:
                problems.append("upstream conn %d: part of a head: %r" % (cid, p.leftover[:300]))
                continue
            if not _psproxy_framed(r):
                problems.append("upstream conn %d: a head psproxy did not write: %r %r" % (
                    cid, r, r.headers))
            if _k_of(r.target) in ignore:
                continue
            if r.complete:
                seen[(r.method, r.target, r.body)] += 1
            elif partial_ok is None or not partial_ok(r):
                problems.append("upstream conn %d: part of a request: %r" % (cid, r))
            else:
                partial_cids.append(cid)
    missing = expected - seen
    extra = seen - expected
    if missing:
        problems.append("never reached the upstream (or not exactly): %s" % sorted(missing)[:10])
    if extra:
        problems.append("reached the upstream but should not have (or twice): %s"
                        % sorted(extra)[:10])
    if partial_cids:
        still = _wait_closed(up, set(partial_cids))
        if still:
            problems.append("upstream conns %s hold an unfinished request and stay open"
                            % still)
    assert not problems, "\n".join(problems)
    return partial_cids


def _read_closed(rd, k, timeout=CLOSE_WITHIN):
    assert rd.closed_within(timeout), "k=%d: the connection stays open after the 400" % k


# -- pipelining ----------------------------------------------------------------------


def _pipeline(k):
    t = _tag(k)
    tb = t.encode()
    reqs = [
        ("POST", "/echo/a?k=" + t, b"hello world",
         b"POST /echo/a?k=%s HTTP/1.1\r\n%sContent-Length: 11\r\n\r\nhello world" % (tb, HOST)),
        ("GET", "/echo/b?k=" + t, b"", b"GET /echo/b?k=%s HTTP/1.1\r\n%s\r\n" % (tb, HOST)),
        ("POST", "/echo/c?k=" + t, b"hello, world",
         b"POST /echo/c?k=%s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n"
         b"5;ext=1\r\nhello\r\n7\r\n, world\r\n0\r\nX-Trailer: trailer value\r\n\r\n"
         % (tb, HOST)),
        ("GET", "/echo/d?k=" + t, b"", b"GET /echo/d?k=%s HTTP/1.1\r\n%s\r\n" % (tb, HOST)),
    ]
    return b"".join(r[3] for r in reqs), [r[:3] for r in reqs]


def test_pipelined_requests_split_at_every_boundary(proxy):
    template, _ = _pipeline(0)
    sweep = _Sweep(len(template))

    def one(k):
        data, reqs = _pipeline(k)
        assert len(data) == len(template)
        s, rd = _send_split(proxy.port, data, k)
        try:
            for method, target, body in reqs:
                r = rd.response(method)
                _check_echo(r, method, target, body, k)
                assert r.header("Connection") is None, "k=%d: %r" % (k, r)
        finally:
            s.close()
        return reqs

    sweep.run(one)
    sweep.check(proxy.upstream, settle=0)


def _odd_bodies(k):
    t = _tag(k).encode()
    reqs = [
        ("GET", "/echo/g?k=%s" % t.decode(), b"hello",
         b"GET /echo/g?k=%s HTTP/1.1\r\n%sContent-Length: 5\r\n\r\nhello" % (t, HOST)),
        ("HEAD", "/echo/h?k=%s" % t.decode(), b"abc",
         b"HEAD /echo/h?k=%s HTTP/1.1\r\n%sContent-Length: 3\r\n\r\nabc" % (t, HOST)),
        ("OPTIONS", "/echo/o?k=%s" % t.decode(), b"xyz",
         b"OPTIONS /echo/o?k=%s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n"
         b"3\r\nxyz\r\n0\r\n\r\n" % (t, HOST)),
        ("DELETE", "/echo/d?k=%s" % t.decode(), b"",
         b"DELETE /echo/d?k=%s HTTP/1.1\r\n%sContent-Length: 0\r\n\r\n" % (t, HOST)),
        ("GET", "/echo/z?k=%s" % t.decode(), b"",
         b"GET /echo/z?k=%s HTTP/1.1\r\n%s\r\n" % (t, HOST)),
    ]
    return b"".join(r[3] for r in reqs), [r[:3] for r in reqs]


def test_bodies_on_bodiless_methods_split_at_every_boundary(proxy):
    # A body on GET, HEAD or OPTIONS is framed like any other: forwarded
    # as the body (never dropped, leaving it to be read as a request), and
    # Content-Length: 0 is no body at all.
    sweep = _Sweep(len(_odd_bodies(0)[0]))

    def one(k):
        data, reqs = _odd_bodies(k)
        s, rd = _send_split(proxy.port, data, k)
        try:
            for method, target, body in reqs:
                r = rd.response(method)
                assert r.status == 200, "k=%d: %s %s: %r" % (k, method, target, r)
                if method != "HEAD":
                    _check_echo(r, method, target, body, k)
        finally:
            s.close()
        return reqs

    sweep.run(one)
    sweep.check(proxy.upstream, settle=0)


def _closing(version, k):
    t = _tag(k).encode()
    if version == "1.1":
        first = (b"POST /echo/last?k=%s HTTP/1.1\r\n%sConnection: close\r\n"
                 b"Content-Length: 5\r\n\r\nhello" % (t, HOST))
    else:
        first = b"POST /echo/last?k=%s HTTP/1.0\r\n%sContent-Length: 5\r\n\r\nhello" % (t, HOST)
    return first + _smuggled(t)


@pytest.mark.parametrize("version", ["1.1", "1.0"])
def test_nothing_after_the_last_request_of_a_connection_is_forwarded(proxy, version):
    # "Connection: close" (or HTTP/1.0 without keep-alive) makes that request
    # the connection's last: what the client sent after it is not a request
    # (RFC 9112 9.6) and never reaches the upstream.
    sweep = _Sweep(len(_closing(version, 0)))

    def one(k):
        t = _tag(k)
        s, rd = _send_split(proxy.port, _closing(version, k), k)
        try:
            r = rd.response("POST")
            _check_echo(r, "POST", "/echo/last?k=" + t, b"hello", k)
            assert r.header("Connection", "").lower() == "close", "k=%d: %r" % (k, r)
            assert rd.closed_within(CLOSE_WITHIN), "k=%d: the connection stays open" % k
        finally:
            s.close()
        return [("POST", "/echo/last?k=" + t, b"hello")]

    sweep.run(one)
    sweep.check(proxy.upstream)


@pytest.mark.parametrize("cut", ["last_body_byte_with_next_line", "body_end_then_next_line",
                                 "next_line_first_byte_with_body"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_body_end_and_next_head_in_one_segment(proxy, framing, cut):
    # the body's last byte and the next request line arrive in one read
    # (and its neighbours: the body ends a read, the next head's first byte
    # rides with the body)
    up = proxy.upstream
    expected = Counter()
    for i in range(10):
        t = b"%03d" % i
        if framing == "length":
            first = b"POST /echo/x?k=%s HTTP/1.1\r\n%sContent-Length: 5\r\n\r\nhello" % (t, HOST)
        else:
            first = (b"POST /echo/x?k=%s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n"
                     b"5\r\nhello\r\n0\r\n\r\n" % (t, HOST))
        nxt = b"GET /echo/y?k=%s HTTP/1.1\r\n%s\r\n" % (t, HOST)
        k = {"last_body_byte_with_next_line": len(first) - 1,
             "body_end_then_next_line": len(first),
             "next_line_first_byte_with_body": len(first) + 1}[cut]
        s, rd = _send_split(proxy.port, first + nxt, k)
        try:
            _check_echo(rd.response("POST"), "POST", "/echo/x?k=%s" % t.decode(), b"hello", k)
            _check_echo(rd.response(), "GET", "/echo/y?k=%s" % t.decode(), b"", k)
        finally:
            s.close()
        expected[("POST", "/echo/x?k=%s" % t.decode(), b"hello")] += 1
        expected[("GET", "/echo/y?k=%s" % t.decode(), b"")] += 1
    _check_upstream(up, expected, settle=0)


def _trailers_case(k):
    t = _tag(k).encode()
    return (b"POST /echo/t?k=%s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n"
            b"3\r\nabc\r\n0\r\nX-One: first value\r\nX-Two: second value\r\n\r\n"
            b"GET /echo/u?k=%s HTTP/1.1\r\n%s\r\n" % (t, HOST, t, HOST))


def test_chunked_trailers_split_at_every_boundary(proxy):
    # A trailer section is part of the body's framing: a valid one is taken
    # whatever the split (the upstream gets the body; psproxy re-frames it
    # and sends no trailers), and the next request follows.
    sweep = _Sweep(len(_trailers_case(0)))

    def one(k):
        t = _tag(k)
        s, rd = _send_split(proxy.port, _trailers_case(k), k)
        try:
            _check_echo(rd.response("POST"), "POST", "/echo/t?k=" + t, b"abc", k)
            _check_echo(rd.response(), "GET", "/echo/u?k=" + t, b"", k)
        finally:
            s.close()
        return [("POST", "/echo/t?k=" + t, b"abc"), ("GET", "/echo/u?k=" + t, b"")]

    sweep.run(one)
    sweep.check(proxy.upstream, settle=0)


def test_trailer_fields_do_not_count_as_head_fields(proxy):
    # 90 fields in the head (the limit is 100) and 20 in the trailer
    # section: a valid request, whose head is forwarded before the trailers
    # exist; it must not get a 431 for its trailers.
    up = proxy.upstream
    fields = b"".join(b"X-H%d: v\r\n" % i for i in range(90))
    trailers = b"".join(b"X-T%d: v\r\n" % i for i in range(20))
    data = (b"POST /echo/t HTTP/1.1\r\n" + HOST + fields + b"Transfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\n0\r\n" + trailers + b"\r\nGET /echo/u HTTP/1.1\r\n" + HOST + b"\r\n")
    s = connect(proxy.port, SOCK_TIMEOUT)
    try:
        s.sendall(data)
        rd = Reader(s)
        _check_echo(rd.response("POST"), "POST", "/echo/t", b"hello", 0)
        _check_echo(rd.response(), "GET", "/echo/u", b"", 0)
    finally:
        s.close()
    _check_upstream(up, Counter([("POST", "/echo/t", b"hello"), ("GET", "/echo/u", b"")]))


def test_large_bodies_pipelined_in_uneven_segments(proxy):
    # Bodies several times psproxy's read buffer (so it stops reading and
    # reuses the buffer), pipelined with bodiless requests, in segments of
    # pseudo-random sizes (fixed seed) with short pauses between some.
    up = proxy.upstream
    rng = random.Random(18)
    body1 = rng.randbytes(150000)
    body2 = rng.randbytes(100000)
    sizes = [1, 4095, 16384, 70000, 3, 9000, 20517]
    chunks, i, n = b"", 0, 0
    while i < len(body2):
        piece = body2[i:i + sizes[n % len(sizes)]]
        chunks += b"%x\r\n" % len(piece) + piece + b"\r\n"
        i += len(piece)
        n += 1
    for rnd in range(3):
        data = (b"POST /echo/big1?r=%d HTTP/1.1\r\n%sContent-Length: %d\r\n\r\n" % (
                    rnd, HOST, len(body1)) + body1
                + b"GET /echo/mid?r=%d HTTP/1.1\r\n%s\r\n" % (rnd, HOST)
                + b"POST /echo/big2?r=%d HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n" % (
                    rnd, HOST) + chunks + b"0\r\n\r\n"
                + b"GET /echo/end?r=%d HTTP/1.1\r\n%s\r\n" % (rnd, HOST))
        s = connect(proxy.port, SOCK_TIMEOUT)
        try:
            pos = 0
            while pos < len(data):
                step = rng.choice((1, 7, 100, 1500, 4096, 20000, 65536))
                s.sendall(data[pos:pos + step])
                pos += step
                if rng.random() < 0.1:
                    time.sleep(PAUSE)  # a real wait: segments arrive apart
            rd = Reader(s)
            _check_echo(rd.response("POST"), "POST", "/echo/big1?r=%d" % rnd, body1, rnd)
            _check_echo(rd.response(), "GET", "/echo/mid?r=%d" % rnd, b"", rnd)
            _check_echo(rd.response("POST"), "POST", "/echo/big2?r=%d" % rnd, body2, rnd)
            _check_echo(rd.response(), "GET", "/echo/end?r=%d" % rnd, b"", rnd)
        finally:
            s.close()
    _check_upstream(up, Counter(
        [("POST", "/echo/big1?r=%d" % r, body1) for r in range(3)]
        + [("POST", "/echo/big2?r=%d" % r, body2) for r in range(3)]
        + [("GET", "/echo/mid?r=%d" % r, b"") for r in range(3)]
        + [("GET", "/echo/end?r=%d" % r, b"") for r in range(3)]))


# -- Expect: 100-continue with the body sent at once --------------------------------


def _expect_case(framing, k):
    t = _tag(k).encode()
    if framing == "length":
        first = (b"POST /echo/e?k=%s HTTP/1.1\r\n%sExpect: 100-continue\r\n"
                 b"Content-Length: 11\r\n\r\nhello world" % (t, HOST))
    else:
        first = (b"POST /echo/e?k=%s HTTP/1.1\r\n%sExpect: 100-continue\r\n"
                 b"Transfer-Encoding: chunked\r\n\r\n6\r\nhello \r\n5\r\nworld\r\n0\r\n\r\n"
                 % (t, HOST))
    nxt = b"GET /echo/f?k=%s HTTP/1.1\r\n%s\r\n" % (t, HOST)
    return first, nxt


@pytest.mark.parametrize("pipelined", [False, True], ids=["next_after_response", "pipelined"])
@pytest.mark.parametrize("framing", ["length", "chunked"])
def test_expect_100_continue_with_early_body(proxy, framing, pipelined):
    """The client sends the body without waiting for 100: it is the body
    (not a request), any 100 comes before the final response, at most one,
    and never in front of the next request's response (pipelined in the
    same write, or sent once the response is read)."""
    first0, nxt0 = _expect_case(framing, 0)
    sweep = _Sweep(len(first0 + (nxt0 if pipelined else b"")))

    def one(k):
        first, nxt = _expect_case(framing, k)
        t = _tag(k)
        s, rd = _send_split(proxy.port, first + (nxt if pipelined else b""), k)
        try:
            interims = []
            while True:
                r = rd.response(keep_1xx=True)
                if r.status >= 200:
                    break
                assert r.status == 100, "k=%d: interim %r" % (k, r)
                interims.append(r)
            assert len(interims) <= 1, "k=%d: %d interim responses" % (k, len(interims))
            doc = _check_echo(r, "POST", "/echo/e?k=" + t, b"hello world", k)
            assert doc["sent_continue"], doc  # the upstream saw the expectation
            assert r.header("Connection") is None, "k=%d: %r" % (k, r)
            if not pipelined:
                s.sendall(nxt)
            r2 = rd.response(keep_1xx=True)
            assert r2.status == 200, "k=%d: the next request got %r" % (k, r2)
            _check_echo(r2, "GET", "/echo/f?k=" + t, b"", k)
        finally:
            s.close()
        return [("POST", "/echo/e?k=" + t, b"hello world"), ("GET", "/echo/f?k=" + t, b"")]

    sweep.run(one)
    sweep.check(proxy.upstream, settle=0)


# -- Upgrade ---------------------------------------------------------------------------


def _ws_case(k):
    head = (b"GET /ws?k=%s HTTP/1.1\r\n%sUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
            % (_tag(k).encode(), HOST))
    return head, ws_frame(0x1, b"tunnel data, k=" + _tag(k).encode(), mask=WS_MASK)


def _read_frame(rd):
    b0, b1 = rd.read_exact(2)
    n = b1 & 0x7F
    assert n < 126 and not b1 & 0x80
    return b0 & 0x0F, rd.read_exact(n)


def test_websocket_frame_in_the_same_write_as_the_head(proxy):
    # The frame right behind the head is tunnel data: after the 101 it
    # reaches the upstream byte for byte (and is echoed), whatever the split.
    up = proxy.upstream
    close = ws_frame(0x8, b"\x03\xe8", mask=WS_MASK)
    want = {}
    head0, frame0 = _ws_case(0)
    sweep = _Sweep(len(head0 + frame0))

    def one(k):
        head, frame = _ws_case(k)
        s, rd = _send_split(proxy.port, head + frame, k)
        try:
            r = rd.response()
            assert r.status == 101, "k=%d: %r" % (k, r)
            assert _read_frame(rd) == (0x1, b"tunnel data, k=" + _tag(k).encode()), k
            s.sendall(close)
            assert _read_frame(rd) == (0x8, b"\x03\xe8"), k
            assert rd.closed_within(CLOSE_WITHIN), "k=%d: tunnel not closed" % k
        finally:
            s.close()
        want["/ws?k=" + _tag(k)] = frame + close
        return []

    sweep.run(one)
    time.sleep(0.1)  # a grace: bytes psproxy wrongly sent on reach the upstream by now
    problems = []
    seen = set()
    for cid, _, raw in up.raw_conns():
        head_end = raw.find(b"\r\n\r\n") + 4
        p = h1strict.parse(raw[:head_end] if head_end >= 4 else raw)
        tunnel = raw[head_end:]
        if head_end < 4 or not p.clean or len(p.requests) != 1 or p.requests[0].body:
            problems.append("conn %d: not one strict bodiless request: %r: %r" % (
                cid, p, raw[:300]))
            continue
        r = p.requests[0]
        if _k_of(r.target) in sweep.failed_tags() and _psproxy_framed(r):
            continue
        if not _psproxy_framed(r) or r.target not in want or r.target in seen:
            problems.append("conn %d: %r %r" % (cid, r, r.headers))
            continue
        seen.add(r.target)
        if tunnel != want[r.target]:
            problems.append("conn %d (%s): tunnel bytes %r, sent %r" % (
                cid, r.target, tunnel, want[r.target]))
    assert not problems, "\n".join(problems[:10])
    assert seen == set(want), sorted(set(want) - seen)[:10]
    sweep.assert_passed()


def _refused_upgrade_case(k):
    t = _tag(k).encode()
    head = (b"GET /echo/up?k=%s HTTP/1.1\r\n%sUpgrade: foo\r\nConnection: upgrade\r\n\r\n"
            % (t, HOST))
    after = b"GET /echo/smuggled?k=%s HTTP/1.1\r\n%s\r\n" % (t, HOST)
    return head, after


def test_refused_upgrade_never_passes_bytes_on_raw(proxy):
    """The upstream answers 200, not 101, to an Upgrade request that has a
    request behind it in the same write (or split anywhere). The bytes after
    the head must never reach the upstream unparsed: psproxy may serve them
    as its own next request (framed by psproxy, with its own response) or
    refuse them (4xx, or a close), nothing else."""
    outcomes = Counter()
    head0, after0 = _refused_upgrade_case(0)
    sweep = _Sweep(len(head0 + after0))

    def one(k):
        head, after = _refused_upgrade_case(k)
        t = _tag(k)
        s, rd = _send_split(proxy.port, head + after, k)
        try:
            _check_echo(rd.response(), "GET", "/echo/up?k=" + t, b"", k)
            got = [("GET", "/echo/up?k=" + t, b"")]
            try:
                r2 = rd.response()
            except (EOFError, ConnectionResetError):
                outcomes["closed"] += 1
                return got
            if r2.status == 200:
                _check_echo(r2, "GET", "/echo/smuggled?k=" + t, b"", k)
                outcomes["served"] += 1
                return got + [("GET", "/echo/smuggled?k=" + t, b"")]
            assert 400 <= r2.status < 500, "k=%d: %r" % (k, r2)
            assert r2.header("Connection", "").lower() == "close", "k=%d: %r" % (k, r2)
            _read_closed(rd, k)
            outcomes["refused %d" % r2.status] += 1
            return got
        finally:
            s.close()

    sweep.run(one)
    sweep.check(proxy.upstream)
    print("refused upgrade, then a pipelined request:", dict(outcomes))


@pytest.mark.parametrize("how", ["pipelined", "sequential", "with_body"])
def test_request_after_refused_upgrade_is_served(proxy, how):
    """Without a 101 the connection stays HTTP/1.1 (RFC 9110 7.8: a server
    that does not upgrade ignores Upgrade), and psproxy's 200 says it stays
    open (no Connection: close): the next request on it is an ordinary one.
    Caddy serves it (forwarding it to the upstream) whether it was
    pipelined or sent after the response."""
    up = proxy.upstream
    if how == "with_body":
        head = (b"POST /echo/up HTTP/1.1\r\n%sUpgrade: foo\r\nConnection: upgrade\r\n"
                b"Content-Length: 5\r\n\r\nhello" % HOST)
        first = ("POST", "/echo/up", b"hello")
    else:
        head = b"GET /echo/up HTTP/1.1\r\n%sUpgrade: foo\r\nConnection: upgrade\r\n\r\n" % HOST
        first = ("GET", "/echo/up", b"")
    after = b"GET /echo/after HTTP/1.1\r\n%s\r\n" % HOST
    s = connect(proxy.port, SOCK_TIMEOUT)
    rd = Reader(s)
    try:
        if how == "sequential":
            s.sendall(head)
            r1 = rd.response()
            s.sendall(after)
        else:
            s.sendall(head + after)
            r1 = rd.response()
        _check_echo(r1, *first, 0)
        keep = r1.header("Connection", "").lower() != "close"
        try:
            r2 = rd.response()
        except EOFError:
            r2 = None
        if keep:
            assert r2 is not None and r2.status == 200, (
                "the request after a refused upgrade got %r although the response to the "
                "upgrade kept the connection open" % r2)
            _check_echo(r2, "GET", "/echo/after", b"", 0)
        else:
            # a close announced with the response: the next request is not served
            assert r2 is None or 400 <= r2.status < 500, r2
    finally:
        s.close()
    _check_upstream(up, Counter([first] + ([("GET", "/echo/after", b"")] if keep else [])))


# -- bad requests: 400, and nothing of them reaches the upstream -----------------------


def _pre(t):
    return b"GET /echo/pre?k=%s HTTP/1.1\r\n%s\r\n" % (t, HOST)


def _smuggled(t):
    return b"GET /echo/smuggled?k=%s HTTP/1.1\r\n%s\r\n" % (t, HOST)


def _bad_cl_te(t):
    body = b"0\r\n\r\n" + _smuggled(t)
    return (_pre(t) + b"POST /echo/bad?k=%s HTTP/1.1\r\n%sContent-Length: %d\r\n"
            b"Transfer-Encoding: chunked\r\n\r\n" % (t, HOST, len(body)) + body)


def _bad_two_cl(t):
    return (_pre(t) + b"POST /echo/bad?k=%s HTTP/1.1\r\n%sContent-Length: 5\r\n"
            b"Content-Length: 6\r\n\r\nhello!" % (t, HOST) + _smuggled(t))


def _bad_chunk_size(t):
    return (_pre(t) + b"POST /echo/bad?k=%s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\nzz\r\n" % (t, HOST) + _smuggled(t))


def _bad_chunk_size_alone(t):
    return (b"POST /echo/bad?k=%s HTTP/1.1\r\n%sTransfer-Encoding: chunked\r\n\r\n"
            b"5\r\nhello\r\nzz\r\n" % (t, HOST) + _smuggled(t))


def _bad_long_body(t):
    # Content-Length 5, then more bytes: "hello" is the body, ", world!" the
    # start of a (bad) next request, which gets the 400
    return (b"POST /echo/pre?k=%s HTTP/1.1\r\n%sContent-Length: 5\r\n\r\nhello, world!\r\n"
            % (t, HOST) + _smuggled(t))


def _bad_te_http10(t):
    return (_pre(t) + b"POST /echo/bad?k=%s HTTP/1.0\r\n%sTransfer-Encoding: chunked\r\n\r\n"
            b"0\r\n\r\n" % (t, HOST) + _smuggled(t))


# name: (builder, the good request before it (method, body) or None, status)
BAD = {
    "cl_and_te": (_bad_cl_te, ("GET", b""), 400),
    "two_content_lengths": (_bad_two_cl, ("GET", b""), 400),
    "bad_chunk_size": (_bad_chunk_size, ("GET", b""), 400),
    "bad_chunk_size_alone": (_bad_chunk_size_alone, None, 400),
    "body_longer_than_content_length": (_bad_long_body, ("POST", b"hello"), 400),
    "te_chunked_in_http10": (_bad_te_http10, ("GET", b""), 400),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_request_split_at_every_boundary(proxy, case):
    build, pre, status = BAD[case]
    up = proxy.upstream
    template = build(b"000")
    bad_at = template.find(b"POST /echo/bad")
    head_end = template.find(b"\r\n\r\n", bad_at) + 4 if bad_at >= 0 else -1
    zz = template.find(b"zz\r\n")
    # the bad request's head may go up alone when it ends one segment
    # and its bad chunk is in the next
    partial_ks = {_tag(k) for k in range(len(template)) if zz >= 0 and head_end <= k <= zz}
    sweep = _Sweep(len(template))

    def one(k):
        t = _tag(k).encode()
        data = build(t)
        assert len(data) == len(template)
        got = []
        s, rd = _send_split(proxy.port, data, k)
        try:
            if pre is not None:
                method, body = pre
                _check_echo(rd.response(method), method, "/echo/pre?k=" + t.decode(), body, k)
                got.append((method, "/echo/pre?k=" + t.decode(), body))
            r = rd.response()
            assert r.status == status, "k=%d: %r" % (k, r)
            assert r.header("Connection", "").lower() == "close", "k=%d: %r" % (k, r)
            _read_closed(rd, k)
        finally:
            s.close()
        return got

    sweep.run(one)

    def partial_ok(r):
        # a head that went up before its bad chunk was sent, and only the
        # good chunk data after it
        m = re.fullmatch(r"/echo/bad\?k=(\d{3})", r.target)
        return (m is not None and m.group(1) in partial_ks and r.framing == "chunked"
                and b"hello".startswith(r.body))

    sweep.check(up, partial_ok=partial_ok)
