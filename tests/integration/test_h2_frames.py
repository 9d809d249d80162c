"""HTTP/2 at the frame level (issue #10): the attacks and protocol errors a
real client library would never send, spoken with raw frames over TLS by a
hand-written client (h2raw.py: ssl + struct, HPACK literals without Huffman,
a small HPACK decoder for the responses) to the real psproxy binary.

What psproxy defends (src/h2.c): SETTINGS_MAX_CONCURRENT_STREAMS 100,
INITIAL_WINDOW_SIZE = its buffer size, MAX_HEADER_LIST_SIZE =
max_header_size; an RST_STREAM budget (rapid reset: 400 at once, 33/s), at most 8
CONTINUATION frames per header block, a budget for PING / SETTINGS /
PRIORITY / empty DATA frames (GOAWAY ENHANCE_YOUR_CALM past it), a cap on
the decoded size of one header block (HPACK bomb: GOAWAY ENHANCE_YOUR_CALM),
431 for a head over max_header_size. The test upstream (upstream.py) says
what reached it; every test ends by checking that psproxy is alive and
serves a fresh HTTP/2 client (curl --http2 and h2raw). Every socket has a
timeout and every wait a deadline.
"""

import hashlib
import json
import re
import signal
import subprocess
import time

import pytest

from conftest import (CURL_ENV, Proxy, closed_port, free_port, proxy_block, stop_and_check,
                      wait_port, wait_stable, wait_until)
from h2raw import (CANCEL, ENHANCE_YOUR_CALM, FLOW_CONTROL_ERROR, INITIAL_WINDOW_SIZE,
                   NO_ERROR, PRIORITY, PROTOCOL_ERROR, REFUSED_STREAM, H2Client,
                   continuation_frame, data_frame, frame, headers_frame, indexed, lit,
                   lit_inc, ping_frame, request_block, rss_kib, rst_frame, settings_frame)
from tls_util import Pki, tls_config, wait_for
from upstream import pattern

HOST = "a.test"
RSS_LIMIT_KIB = 100 * 1024


# -- fixtures (the pattern of test_tls.py's) ----------------------------------------


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


@pytest.fixture
def tls_factory(tmp_path, monkeypatch):
    """start(sites, **tls_config options) -> Proxy listening on a free
    https_port (and http_port), with .https_port and .http_port set.
    Teardown as conftest's proxy_factory (crash, SIGTERM, sanitizer checks).
    psproxy logs at debug level, so a failure shows what it decided."""
    monkeypatch.setenv("PSPROXY_LOG_LEVEL", "debug")
    started = []

    def start(sites, *, http_port=0, https_port=0, **opts):
        https_port = https_port or free_port()
        if http_port == 0:
            http_port = free_port()
        p = Proxy(tmp_path, tls_config(sites, http_port=http_port, https_port=https_port,
                                       **opts), https_port)
        p.https_port = https_port
        p.http_port = http_port
        started.append(p)
        p.wait_ready()
        if http_port is not None:
            wait_port(http_port, p.proc, 10.0, "psproxy (http_port)", p.log)
        return p

    yield start
    stop_and_check(started)


@pytest.fixture
def h2proxy(pki, upstream, tls_factory):
    """start(body=None, max_header_size=None, **tls_config options) ->
    psproxy serving a.test over HTTPS (h2 and http/1.1) with BODY as the
    site (default: reverse_proxy to the test upstream, response headers
    within 5 s); .ca and .upstream set."""
    leaf = pki.leaf(HOST)

    def start(body=None, max_header_size=None, global_extra="", **opts):
        if body is None:
            body = proxy_block(upstream, response_header_timeout="5s")
        if max_header_size:
            global_extra += "\tservers {\n\t\tmax_header_size %s\n\t}\n" % max_header_size
        p = tls_factory([(HOST, leaf, body)], global_extra=global_extra, **opts)
        p.ca = pki.ca
        p.upstream = upstream
        return p

    return start


# -- helpers ------------------------------------------------------------------------


def client(p, **kw):
    c = H2Client(p.https_port, HOST, p.ca, **kw)
    assert c.alpn == "h2", "ALPN chose %r, not h2" % c.alpn
    return c


def handshake(c, timeout=10.0):
    """Waits for the server's SETTINGS and its ACK of ours."""
    assert c.pump(lambda c: c.settings_seen and c.settings_acks, timeout), c.describe()


def rss(p):
    return rss_kib(p.proc.pid)


def assert_alive(p):
    assert p.proc.poll() is None, "psproxy exited (%s); log:\n%s" % (
        p.proc.returncode, p.log_text()[-4000:])


def curl_h2(p, path, timeout=15):
    """curl --http2 https://a.test:PORT/PATH; (rc, 'version status', body)."""
    cmd = ["curl", "-sS", "--noproxy", "*", "--http2", "--max-time", str(timeout - 3),
           "--resolve", "%s:%d:127.0.0.1" % (HOST, p.https_port), "--cacert", str(p.ca),
           "-o", "-", "-w", "\n%{http_version} %{http_code}",
           "https://%s:%d%s" % (HOST, p.https_port, path)]
    r = subprocess.run(cmd, capture_output=True, timeout=timeout, env=CURL_ENV,
                       stdin=subprocess.DEVNULL)
    body, _, tail = r.stdout.rpartition(b"\n")
    return r.returncode, tail.decode(errors="replace"), body, r.stderr.decode(errors="replace")


def assert_serves(p, tag="fresh"):
    """psproxy is alive and serves fresh HTTP/2 clients (curl and h2raw)."""
    assert_alive(p)
    rc, vs, body, err = curl_h2(p, "/echo?curl=%s" % tag)
    assert rc == 0 and vs == "2 200", (rc, vs, body[:300], err[-500:])
    assert json.loads(body)["query"] == "curl=%s" % tag
    with client(p) as c:
        sid = c.request("/echo?h2raw=%s" % tag)
        assert c.wait_streams([sid], 15), (c.describe(), c.stream(sid))
        s = c.stream(sid)
        assert s.status == 200 and s.ended, s
        assert json.loads(bytes(s.data))["query"] == "h2raw=%s" % tag
    assert_alive(p)


def log_tail(p, n=25):
    """The last N lines of psproxy's log, for assertion messages."""
    return "\npsproxy log:\n" + "\n".join(p.log_text().splitlines()[-n:])


def calm_lines(p):
    """psproxy's log lines saying it closes a connection for a flood or a
    bomb (src/h2.c calm_down, logged at info level)."""
    return [l for l in p.log_text().splitlines() if "closing the connection" in l and "h2:" in l]


def targets(p, marker):
    """Request targets the upstream read that contain MARKER."""
    return [t for t in p.upstream.stats()["targets"] if marker in t]


def upstream_raw_has(p, marker):
    """Whether any byte the upstream received (request heads included, even
    of requests it never finished reading) contains MARKER."""
    m = marker.encode()
    return any(m in raw for _, _, raw in p.upstream.raw_conns())


# -- 1. rapid reset (CVE-2023-44487) -------------------------------------------------


def reset_burst(c, n, marker="rr"):
    """N streams, each HEADERS (a GET) and at once RST_STREAM(CANCEL)."""
    out = bytearray()
    for i in range(n):
        sid = c.new_sid()
        out += headers_frame(sid, request_block("GET", "/echo?%s=%d" % (marker, i), c.authority))
        out += rst_frame(sid, CANCEL)
    return bytes(out)


def test_rapid_reset_gets_goaway_and_reaches_the_upstream_a_bounded_number_of_times(h2proxy):
    p = h2proxy()
    # the control: 200 HEADERS+RST_STREAM pairs are within the budget, and
    # the connection goes on (so the frames below are well-formed)
    with client(p) as c:
        handshake(c)
        c.send(reset_burst(c, 200, "ctl"))
        c.send(ping_frame(b"control!"))
        assert c.pump(lambda c: c.ping_acks or c.goaway or c.closed, 15), c.describe()
        assert c.ping_acks == 1 and c.goaway is None and not c.closed, c.describe()
    # the upstream connections dialled and dropped for them drain: no event
    # says when the last one reached the upstream's accept
    wait_stable(p.upstream.proxied_connections, settle=1.0, what="upstream connections")
    conns0 = p.upstream.proxied_connections()
    n = 5000
    c = client(p, timeout=5.0)
    handshake(c)
    # an idle upstream connection in the pool: the first head leaves at once
    warm = c.request("/echo?warm=1")
    assert c.wait_streams([warm], 15) and c.stream(warm).status == 200, c.stream(warm)
    burst = reset_burst(c, n)
    last_sid = c.next_sid - 2
    t0 = time.monotonic()
    c.send(burst)  # may fail part-way: psproxy closes the connection
    assert c.wait_closed(15), "still open %.1f s after %d HEADERS+RST_STREAM pairs: %s" % (
        time.monotonic() - t0, n, c.describe())
    assert c.goaway is not None, "closed without GOAWAY: %s%s" % (c.describe(), log_tail(p))
    last, code, _ = c.goaway
    assert code != NO_ERROR, c.describe()
    # streams after GOAWAY's last stream id were not processed at all
    assert last < last_sid, c.describe()
    c.close()
    wait_stable(lambda: (len(targets(p, "/echo?rr=")), p.upstream.proxied_connections()),
                settle=1.0, what="requests and connections reaching the upstream")
    reached = len(targets(p, "/echo?rr="))
    dialled = p.upstream.proxied_connections() - conns0
    print("rapid reset: %d streams, %d reached the upstream, %d upstream connections, %s" % (
        n, reached, dialled, c.describe()))
    # psproxy's reset budget is 400 at once, 33/s after, and a stream reset
    # in the same read as its HEADERS is never started: far below the 5000
    # sent, in requests and in the upstream connections opened for them
    assert reached <= 450, "%d of %d reset streams reached the upstream" % (reached, n)
    assert dialled <= 450, "%d upstream connections for %d reset streams" % (dialled, n)
    # RFC 9113 6.8: GOAWAY's last stream id is the highest one psproxy may
    # have acted on. Its debug log names each stream the client reset
    # ("h2 stream N closed: CANCEL"; the control's ids are all below it).
    acted = [int(m.group(1)) for m in re.finditer(r"h2 stream (\d+) closed: CANCEL",
                                                  p.log_text())]
    beyond = [i for i in acted if i > last]
    assert not beyond, (
        "GOAWAY said last stream %d, yet psproxy took %d streams above it (up to %d) "
        "and dialled %d upstream connections" % (last, len(beyond), max(beyond), dialled))
    # as above (the next test is about the time before)
    wait_stable(p.upstream.proxied_connections, settle=1.0, what="upstream connections")
    assert_serves(p)


def test_rapid_reset_burst_does_not_fail_another_clients_requests(h2proxy):
    """Another client, already connected, sends 10 requests as the burst of
    the test above lands. They must be answered as usual (RFC 9113 has no
    say; the brief: "a second client on another connection during/after is
    served normally"). Were psproxy to dial the upstream for each stream it
    took before its GOAWAY (hundreds, each dropped at once), the upstream's
    accept queue would overflow, its SYNs be dropped, and a fresh dial of
    the other client wait for the SYN retransmit (1 s) past dial_timeout 1s:
    504, and the upstream marked unhealthy (passive) for 10 s."""
    p = h2proxy()
    other = client(p)
    handshake(other)
    c = client(p, timeout=5.0)
    handshake(c)
    c.send(reset_burst(c, 5000))
    sids = [other.request("/echo?other=%d" % i) for i in range(10)]
    assert other.wait_streams(sids, 15), other.describe()
    statuses = [other.stream(s).status for s in sids]
    dialled = p.upstream.proxied_connections()
    assert statuses == [200] * 10, (
        "another client's requests during a reset burst: %r (%d upstream connections "
        "dialled)%s" % (statuses, dialled, log_tail(p, 12)))
    other.close()
    c.close()
    assert_serves(p)


# -- 2. CONTINUATION flood (CVE-2024-27316 family) -----------------------------------


def test_continuation_flood_with_an_end_closes_the_connection_and_forwards_nothing(h2proxy):
    p = h2proxy()
    # the control: 8 CONTINUATION frames, the most a header block may have
    with client(p) as c:
        handshake(c)
        sid = c.new_sid()
        out = headers_frame(sid, request_block("GET", "/echo?cont=8", c.authority),
                            end_headers=False)
        for i in range(8):
            out += continuation_frame(sid, lit("x-c%d" % i, "v"), end_headers=(i == 7))
        c.send(out)
        assert c.wait_streams([sid], 15) and c.stream(sid).status == 200, (c.describe(),
                                                                          c.stream(sid))
        assert targets(p, "cont=8")
    c = client(p)
    handshake(c)
    sid = c.new_sid()
    block = request_block("GET", "/echo?cont=1", c.authority)
    out = headers_frame(sid, block, end_stream=True, end_headers=False)
    for i in range(100):
        out += continuation_frame(sid, lit("x-c%d" % i, "v"), end_headers=(i == 99))
    c.send(out)
    # without the limit this is a fine 200 (100 small fields)
    assert c.wait_closed(15), "100 CONTINUATION frames accepted: %s %r" % (
        c.describe(), c.stream(sid))
    assert c.stream(sid).status is None, c.stream(sid)
    # nghttp2's NGHTTP2_ERR_TOO_MANY_CONTINUATIONS is fatal: psproxy drops the
    # connection with no GOAWAY (RFC 9113 5.4.1 says SHOULD send one); when
    # one comes it must carry an error
    assert c.goaway is None or c.goaway[1] != NO_ERROR, c.describe()
    c.close()
    assert not targets(p, "cont=1")
    assert not upstream_raw_has(p, "cont=1")
    assert_serves(p)


def test_endless_empty_continuation_frames_close_the_connection(h2proxy):
    p = h2proxy()
    c = client(p)
    handshake(c)
    rss0 = rss(p)
    t0 = time.monotonic()
    sid = c.new_sid()
    c.send(headers_frame(sid, request_block("GET", "/echo?cont=2", c.authority),
                         end_headers=False))
    empty = continuation_frame(sid, b"") * 1000
    sent = 0
    while sent < 20000 and c.send(empty) and time.monotonic() - t0 < 4:
        sent += 1000
    assert c.wait_closed(15), "still open after %d empty CONTINUATION frames: %s" % (
        sent, c.describe())
    print("empty CONTINUATION: %d sent in %.2f s, %s" % (sent, time.monotonic() - t0,
                                                        c.describe()))
    took = time.monotonic() - t0
    # below 4 s of sending + the 5 s idle timeout: closed for the flood
    assert took < 8, "closed only after %.1f s and %d frames" % (took, sent)
    assert c.goaway is None or c.goaway[1] != NO_ERROR, c.describe()  # see above
    c.close()
    assert rss(p) < RSS_LIMIT_KIB, (rss0, rss(p))
    assert not upstream_raw_has(p, "cont=2")
    assert_serves(p)


def test_header_block_that_never_ends_is_reset_and_the_connection_closed(h2proxy):
    """HEADERS without END_HEADERS, then silence (a slowloris on one
    stream): the stream's read_header timer resets it, the idle timer then
    ends the connection, whose streams all wait for that block's end."""
    p = h2proxy(read_header="1s", idle="1s")
    c = client(p, timeout=8.0)
    handshake(c)
    sid = c.new_sid()
    c.send(headers_frame(sid, request_block("GET", "/echo?half=1", c.authority),
                         end_headers=False))
    t0 = time.monotonic()
    assert c.pump(lambda c: c.stream(sid).rst is not None, 10), (c.describe(), c.stream(sid))
    assert c.wait_closed(15), c.describe()
    took = time.monotonic() - t0
    assert took < 10, took  # read_header and idle 1s; the bound only for a loaded machine
    c.close()
    assert not upstream_raw_has(p, "half=1")
    assert_serves(p)


# -- 3. control frame floods (CVE-2019-9512, -9515, -9518) ---------------------------


def flood_frame(kind, c, i):
    if kind == "ping":
        return ping_frame(i.to_bytes(8, "big"))
    if kind == "settings":
        return settings_frame([(INITIAL_WINDOW_SIZE, 65535 + (i & 1))])
    if kind == "priority":
        # PRIORITY for idle streams (RFC 9113 6.3), each a new one
        return frame(PRIORITY, 0, 1001 + 2 * i, b"\x00\x00\x00\x00\x0f")
    if kind == "empty-data":
        return data_frame(1, b"")  # the POST on stream 1
    raise ValueError(kind)


@pytest.mark.parametrize("kind", ["ping", "settings", "priority", "empty-data"])
def test_control_frame_flood_not_reading_gets_closed_and_memory_stays_bounded(h2proxy, kind):
    p = h2proxy()
    c = client(p)
    handshake(c)
    if kind == "empty-data":
        # a POST whose body never comes: only empty DATA frames (its head
        # is a request like any other: it may reach the upstream)
        c.request("/echo?data-flood=1", method="POST", end_stream=False)
    rss0 = rss(p)
    n = 20000
    t0 = time.monotonic()
    sent = 0
    while sent < n and time.monotonic() - t0 < 4:
        if not c.send(b"".join(flood_frame(kind, c, sent + j) for j in range(500))):
            break
        sent += 500
    peak = rss(p)
    assert c.wait_closed(15), "%s flood of %d frames (no reading): still open; %s" % (
        kind, sent, c.describe())
    print("%s flood, not reading: %d sent in %.2f s, RSS %d -> %d KiB, %s" % (
        kind, sent, time.monotonic() - t0, rss0, peak, c.describe()))
    c.close()
    assert peak < RSS_LIMIT_KIB and rss(p) < RSS_LIMIT_KIB, (rss0, peak, rss(p))
    # PRIORITY and empty DATA need no answer, so only psproxy's budget stops
    # them: it says why
    if kind in ("priority", "empty-data"):
        assert c.goaway is not None and c.goaway[1] == ENHANCE_YOUR_CALM, "%s%s" % (
            c.describe(), log_tail(p))
    else:
        assert c.goaway is None or c.goaway[1] != NO_ERROR, c.describe()
    # one flood, one log line: not one per frame (the log is no amplifier)
    lines = calm_lines(p)
    assert len(lines) <= 10, "%d log lines for one %s flood, e.g.\n%s" % (
        len(lines), kind, "\n".join(lines[:3]))
    assert_serves(p)


@pytest.mark.parametrize("kind", ["ping", "settings"])
def test_control_frame_flood_reading_the_replies_gets_enhance_your_calm(h2proxy, kind):
    p = h2proxy()
    c = client(p)
    handshake(c)
    rss0 = rss(p)
    sent = 0
    t0 = time.monotonic()
    batch = 100
    base_acks = c.settings_acks

    def answered(c):
        return (c.ping_acks if kind == "ping" else c.settings_acks - base_acks)

    while sent < 5000 and not c.closed and c.goaway is None and time.monotonic() - t0 < 6:
        if not c.send(b"".join(flood_frame(kind, c, sent + j) for j in range(batch))):
            break
        sent += batch
        # every reply read before the next batch: nothing queues anywhere
        c.pump(lambda c, want=sent: answered(c) >= want or c.goaway is not None, 3)
    print("%s flood, reading: %d sent, %d answered in %.2f s, %s" % (
        kind, sent, answered(c), time.monotonic() - t0, c.describe()))
    assert c.goaway is not None, "%d %s frames answered in %.1f s, no GOAWAY: %s%s" % (
        answered(c), kind, time.monotonic() - t0, c.describe(), log_tail(p))
    assert c.goaway[1] == ENHANCE_YOUR_CALM, c.describe()
    # the budget: 1000 at once, then 100/s
    assert answered(c) <= 1000 + 100 * (time.monotonic() - t0) + batch, c.describe()
    assert c.wait_closed(15), c.describe()
    c.close()
    assert rss(p) < RSS_LIMIT_KIB, (rss0, rss(p))
    assert_serves(p)


# -- 4. HPACK bomb -------------------------------------------------------------------


def bomb_block(c, marker, refs, size=4000):
    """A request whose one literal (SIZE bytes) enters the dynamic table,
    then REFS one-byte references to it."""
    return (request_block("GET", "/echo?%s" % marker, c.authority)
            + lit_inc("x-bomb", "a" * size) + indexed(62) * refs)


def test_hpack_bomb_gets_goaway_enhance_your_calm_and_is_never_forwarded(h2proxy):
    p = h2proxy()
    c = client(p)
    handshake(c)
    rss0 = rss(p)
    refs = 12000  # ~48 MB of fields from a 16 KB frame
    block = bomb_block(c, "bomb=1", refs)
    assert len(block) <= 16384
    sid = c.new_sid()
    c.send(headers_frame(sid, block))
    assert c.wait_closed(15), "HPACK bomb: connection still open; %s %r" % (
        c.describe(), c.stream(sid))
    print("HPACK bomb: RSS %d -> %d KiB, %s %r" % (rss0, rss(p), c.describe(), c.stream(sid)))
    # without the cap on decoded bytes this would be a 431 (the control below)
    assert c.goaway is not None and c.goaway[1] == ENHANCE_YOUR_CALM, "%s %r%s" % (
        c.describe(), c.stream(sid), log_tail(p))
    assert c.stream(sid).status is None, c.stream(sid)
    c.close()
    assert rss(p) < RSS_LIMIT_KIB, (rss0, rss(p))
    assert not targets(p, "bomb=1")
    assert not upstream_raw_has(p, "bomb=1")
    assert_serves(p)


def test_hpack_references_merely_over_max_header_size_get_431_not_goaway(h2proxy):
    """The control for the bomb: 10 references (40 KB, over the default
    32 KB max_header_size, far under the bomb cap) are a head too large."""
    p = h2proxy()
    c = client(p)
    handshake(c)
    sid = c.new_sid()
    c.send(headers_frame(sid, bomb_block(c, "refs=10", 10)))
    assert c.wait_streams([sid], 15), c.describe()
    assert c.stream(sid).status == 431, c.stream(sid)
    sid = c.request("/echo?after=refs")
    assert c.wait_streams([sid], 15) and c.stream(sid).status == 200, c.describe()
    assert c.goaway is None and not c.closed, c.describe()
    c.close()
    assert not targets(p, "refs=10")
    assert_serves(p)


# -- 5. header list over max_header_size ---------------------------------------------


def test_header_list_over_max_header_size_is_431_and_other_streams_are_fine(h2proxy):
    p = h2proxy(max_header_size="16KiB")
    c = client(p)
    handshake(c)
    assert c.server_settings.get(6) == 16384, c.server_settings  # MAX_HEADER_LIST_SIZE
    s1 = c.request("/echo?before=1")
    # 20 fields of 1000 bytes: a 20 KB list, two frames (HEADERS, CONTINUATION)
    big = request_block("GET", "/echo?big=1", c.authority,
                        headers=[("x-big-%02d" % i, "b" * 1000) for i in range(20)])
    assert 16384 < len(big) < 2 * 16384
    s3 = c.new_sid()
    c.send(headers_frame(s3, big[:16000], end_headers=False)
           + continuation_frame(s3, big[16000:], end_headers=True))
    s5 = c.request("/echo?after=1")
    # under the limit: 14 fields of 1000 bytes
    s7 = c.request("/echo?under=1", headers=[("x-ok-%02d" % i, "o" * 1000) for i in range(14)])
    assert c.wait_streams([s1, s3, s5, s7], 15), c.describe()
    assert c.stream(s3).status == 431, c.stream(s3)
    for sid in (s1, s5, s7):
        assert c.stream(sid).status == 200, c.stream(sid)
    assert not c.closed and c.goaway is None, c.describe()
    c.close()
    assert not targets(p, "big=1")
    assert targets(p, "under=1") and targets(p, "before=1") and targets(p, "after=1")
    assert_serves(p)


# -- 6. SETTINGS_MAX_CONCURRENT_STREAMS ---------------------------------------------


def concurrent_burst(p, ack):
    """110 streams to /slow/1000 in one write on one connection, after
    psproxy's SETTINGS (MAX_CONCURRENT_STREAMS 100) were acknowledged (ACK)
    or while they are not yet: streams 101-110 are to be refused (RFC 9113
    5.1.2: a stream error, PROTOCOL_ERROR or REFUSED_STREAM), the first 100
    answered, and the connection goes on."""
    c = client(p, settings=[(INITIAL_WINDOW_SIZE, 1 << 20)], conn_window=1 << 26,
               ack_settings=ack)
    if ack:
        handshake(c)
    else:
        assert c.pump(lambda c: c.settings_seen, 10), c.describe()
    assert c.server_settings.get(3) == 100, c.server_settings  # MAX_CONCURRENT_STREAMS
    sids = [c.new_sid() for _ in range(110)]
    c.send(b"".join(c.request("/slow/1000?mcs=%d" % i, sid=sid, send=False)
                    for i, sid in enumerate(sids)))
    done = c.wait_streams(sids, 15)
    first, over = sids[:100], sids[100:]
    lost = [c.stream(s) for s in first if c.stream(s).status != 200 or not c.stream(s).ended]
    time.sleep(0.2)  # a grace: a stream over the limit wrongly forwarded would show by now
    seen = targets(p, "mcs=")
    assert done and not lost, (
        "%d of the first 100 streams not answered (%d reached the upstream); %s; %r" % (
            len(lost), len(seen), c.describe(), lost[:2]))
    for s in over:
        st = c.stream(s)
        assert st.status is None and st.rst in (REFUSED_STREAM, PROTOCOL_ERROR), st
    # capacity comes back once they are done
    sid = c.request("/echo?after=mcs")
    assert c.wait_streams([sid], 15) and c.stream(sid).status == 200, c.stream(sid)
    assert not c.closed and c.goaway is None, c.describe()
    c.close()
    assert len(seen) == 100, len(seen)
    assert not any("mcs=%d" % i in seen for i in range(100, 110)), seen


def test_streams_over_an_acknowledged_max_concurrent_streams_end_the_connection(h2proxy):
    """A known deviation: RFC 9113 5.1.2 says a stream error, but nghttp2
    (which psproxy does not override here) treats a client that exceeds a
    limit it has acknowledged as broken and ends the session with
    GOAWAY(PROTOCOL_ERROR). Nothing past the limit reaches the upstream,
    and psproxy serves everyone else."""
    p = h2proxy()
    c = client(p, settings=[(INITIAL_WINDOW_SIZE, 1 << 20)], conn_window=1 << 26,
               ack_settings=True)
    handshake(c)
    assert c.server_settings.get(3) == 100, c.server_settings  # MAX_CONCURRENT_STREAMS
    sids = [c.new_sid() for _ in range(110)]
    c.send(b"".join(c.request("/slow/1000?mcs=%d" % i, sid=sid, send=False)
                    for i, sid in enumerate(sids)))
    assert c.pump(lambda c: c.closed, 15), c.describe()
    assert c.goaway is not None and c.goaway[1] == PROTOCOL_ERROR, c.describe()
    time.sleep(0.2)  # a grace, as in concurrent_burst: nothing is to arrive
    seen = targets(p, "mcs=")
    assert not any("mcs=%d" % i in seen for i in range(100, 110)), seen
    c.close()
    assert_serves(p)


def test_streams_over_the_pending_limit_before_the_settings_ack_are_refused(h2proxy):
    p = h2proxy()
    concurrent_burst(p, ack=False)
    assert_serves(p)


# -- 7. malformed requests (RFC 9113 8.2, 8.3) --------------------------------------


def _malformed(case, authority, marker):
    path = "/echo?%s" % marker
    pseudo = [(":method", "GET"), (":scheme", "https"), (":path", path),
              (":authority", authority)]
    body = None

    def block(fields):
        return b"".join(lit(k, v) for k, v in fields)

    if case == "uppercase-name":
        fields = pseudo + [("X-Upper", "1")]
    elif case == "connection-keep-alive":
        fields = pseudo + [("connection", "keep-alive")]
    elif case == "transfer-encoding-chunked":
        fields = pseudo + [("transfer-encoding", "chunked")]
    elif case == "keep-alive-field":
        fields = pseudo + [("keep-alive", "timeout=5")]
    elif case == "upgrade-field":
        fields = pseudo + [("upgrade", "websocket")]
    elif case == "te-not-trailers":
        fields = pseudo + [("te", "gzip")]
    elif case == "pseudo-after-regular":
        fields = pseudo[:2] + [("x-a", "1")] + pseudo[2:]
    elif case == "missing-method":
        fields = pseudo[1:]
    elif case == "missing-path":
        fields = [f for f in pseudo if f[0] != ":path"] + [("x-marker", marker)]
    elif case == "unknown-pseudo":
        fields = pseudo + [(":foo", "bar")]
    elif case == "duplicate-path":
        fields = pseudo + [(":path", path)]
    elif case == "path-not-absolute":
        fields = pseudo[:2] + [(":path", "echo?%s" % marker)] + pseudo[3:]
    elif case == "value-cr":
        fields = pseudo + [("x-v", "a\rb")]
    elif case == "value-lf":
        fields = pseudo + [("x-v", "a\nb")]
    elif case == "value-nul":
        fields = pseudo + [("x-v", "a\0b")]
    elif case == "name-with-space":
        fields = pseudo + [("x y", "1")]
    elif case == "host-not-authority":
        fields = pseudo + [("host", "evil.test")]
    elif case == "content-length-more-than-data":
        fields = [(":method", "POST")] + pseudo[1:] + [("content-length", "10")]
        body = b"abc"
    elif case == "content-length-less-than-data":
        fields = [(":method", "POST")] + pseudo[1:] + [("content-length", "3")]
        body = b"0123456789"
    else:
        raise ValueError(case)
    return block(fields), body


MALFORMED = ["uppercase-name", "connection-keep-alive", "transfer-encoding-chunked",
             "keep-alive-field", "upgrade-field", "te-not-trailers", "pseudo-after-regular",
             "missing-method", "missing-path", "unknown-pseudo", "duplicate-path",
             "path-not-absolute", "value-cr", "value-lf", "value-nul", "name-with-space",
             "host-not-authority", "content-length-more-than-data",
             "content-length-less-than-data"]


@pytest.mark.parametrize("case", MALFORMED)
def test_malformed_request_is_a_stream_error_and_never_forwarded(h2proxy, case):
    p = h2proxy()
    c = client(p)
    handshake(c)
    # a request first, so an idle upstream connection waits in the pool: a
    # head psproxy wanted to forward would leave at once
    warm = c.request("/echo?warm=1")
    assert c.wait_streams([warm], 15) and c.stream(warm).status == 200, c.stream(warm)
    marker = "bad=%s" % case
    block, body = _malformed(case, c.authority, marker)
    sid = c.new_sid()
    out = headers_frame(sid, block, end_stream=body is None)
    if body is not None:
        out += data_frame(sid, body, end=True)
    c.send(out)
    assert c.wait_streams([sid], 15), (c.describe(), c.stream(sid))
    s = c.stream(sid)
    assert s.rst == PROTOCOL_ERROR or s.status == 400, (
        "malformed (%s) got %r, not RST_STREAM PROTOCOL_ERROR or 400" % (case, s))
    # a stream error: the connection goes on
    ok = c.request("/echo?after=%s" % case)
    assert c.wait_streams([ok], 15), c.describe()
    assert c.stream(ok).status == 200, (c.stream(ok), c.describe())
    c.close()
    time.sleep(0.3)  # a grace: a malformed request wrongly forwarded would show by now
    if case.startswith("content-length"):
        # that upstream connection ends: wait for it (the checks below say
        # what is wrong if it does not)
        try:
            wait_until(lambda: not any(is_open and marker.encode() in raw
                                       for _, is_open, raw in p.upstream.raw_conns()),
                       10, what="the broken request's upstream connection closed")
        except AssertionError:
            pass
        # The mismatch shows only in the DATA, after psproxy has sent the
        # head on (HTTP/1.1 streaming, as for an HTTP/1.1 client): the
        # upstream must then never get a whole request nor a byte past
        # content-length, and that upstream connection must end, never
        # carry the next request (which would complete the body: a desync).
        conns = [(cid, is_open, raw) for cid, is_open, raw in p.upstream.raw_conns()
                 if marker.encode() in raw]
        assert not _upstream_answered(p, marker), (
            "the upstream got a whole request for %s: %r" % (case, conns))
        assert not any(b"3456789" in raw for _, _, raw in conns), conns
        assert not any(is_open for _, is_open, _ in conns), (
            "the upstream connection of the broken request is still open: %r" % conns)
    else:
        assert not targets(p, marker), "malformed (%s) reached the upstream" % case
        assert not upstream_raw_has(p, marker), "malformed (%s) reached the upstream" % case
    assert targets(p, "after=%s" % case)
    assert_serves(p)


def _upstream_answered(p, marker):
    """Whether the upstream connection that read MARKER's head also got as
    many bytes after it as its content-length says (what follows on that
    connection counts: reusing it would complete the body)."""
    m = marker.encode()
    for _, _, raw in p.upstream.raw_conns():
        i = raw.find(m)
        if i < 0:
            continue
        head_end = raw.find(b"\r\n\r\n", i)
        if head_end < 0:
            continue
        head = raw[i:head_end].lower()
        j = head.find(b"content-length:")
        if j < 0:
            continue
        n = int(head[j + 15:].split(b"\r\n")[0])
        if len(raw) - (head_end + 4) >= n:
            return True
    return False


# -- 8. flow control: a stalled stream holds up no other ------------------------------


def test_stream_with_a_closed_window_stalls_alone_and_costs_no_memory(h2proxy):
    p = h2proxy()
    big = 20_000_000
    small = 200_000
    # 1 KiB windows for every stream; only the small ones get WINDOW_UPDATEs
    c = client(p, settings=[(INITIAL_WINDOW_SIZE, 1024)], conn_window=1 << 28)
    handshake(c)
    rss0 = rss(p)
    slow = c.new_sid()
    c.no_update.add(slow)
    c.request("/bytes/%d" % big, sid=slow)
    assert c.pump(lambda c: len(c.stream(slow).data) >= 1024, 5), c.stream(slow)
    others = [c.request("/bytes/%d?n=%d" % (small, i)) for i in range(5)]
    assert c.wait_streams(others, 15), (c.describe(), [c.stream(s) for s in others])
    for sid in others:
        s = c.stream(sid)
        assert s.status == 200 and bytes(s.data) == pattern(small), s
    c.pump(None, 1.0)  # let psproxy read what it would from the stalled upstream
    s = c.stream(slow)
    assert s.status == 200 and not s.done and len(s.data) == 1024, s
    grown = rss(p) - rss0
    print("stalled stream: RSS %d -> %d KiB" % (rss0, rss0 + grown))
    assert grown < 4096, "RSS grew %d KiB with a %d-byte response stalled" % (grown, big)
    c.close()

    # no WINDOW_UPDATE at all: small answers fit the windows left
    c = client(p, settings=[(INITIAL_WINDOW_SIZE, 1024)], auto_update=False)
    handshake(c)
    slow = c.request("/bytes/5000000")
    assert c.pump(lambda c: len(c.stream(slow).data) >= 1024, 5), c.stream(slow)
    others = [c.request("/bytes/500?m=%d" % i) for i in range(20)]
    assert c.wait_streams(others, 15), (c.describe(), [c.stream(s) for s in others])
    for sid in others:
        s = c.stream(sid)
        assert s.status == 200 and bytes(s.data) == pattern(500), s
    assert not c.stream(slow).done and len(c.stream(slow).data) == 1024, c.stream(slow)
    c.close()
    assert rss(p) - rss0 < 4096, (rss0, rss(p))
    assert_serves(p)


def test_streams_stalled_by_the_client_are_reset_by_the_write_and_read_body_timeouts(
        h2proxy):
    """A stream whose window never opens (slow read) and one whose body
    never comes (slow body) hold an upstream connection each: the write and
    read_body timeouts end them, the connection serves on."""
    p = h2proxy(global_extra="\tservers {\n\t\ttimeouts {\n\t\t\twrite 1s\n"
                             "\t\t\tread_body 1s\n\t\t}\n\t}\n")
    c = client(p, settings=[(INITIAL_WINDOW_SIZE, 0)], timeout=8.0)
    handshake(c)
    t0 = time.monotonic()
    slow = c.request("/bytes/1000000?zero=1")
    nobody = c.request("/echo?nobody=1", method="POST", end_stream=False)
    assert c.pump(lambda c: c.stream(slow).rst is not None and c.stream(nobody).rst is not None,
                  12), (c.describe(), c.stream(slow), c.stream(nobody))
    took = time.monotonic() - t0
    assert took < 10, took  # write and read_body 1s; the bound only for a loaded machine
    assert len(c.stream(slow).data) == 0 and c.stream(nobody).status is None, (
        c.stream(slow), c.stream(nobody))
    # their upstream connections are closed too
    wait_for(lambda: [o for _, o, raw in p.upstream.raw_conns()
                      if b"zero=1" in raw or b"nobody=1" in raw] == [False, False], 3,
             what="both upstream connections closed")
    assert not c.closed and c.goaway is None, c.describe()
    c.close()
    assert_serves(p)


# -- 9. request body flow control -----------------------------------------------------


def test_large_upload_gets_window_updates_and_arrives_whole(h2proxy):
    p = h2proxy()
    size = 5_000_000
    body = pattern(size)
    c = client(p, timeout=10.0)
    handshake(c)
    window = c.server_settings.get(INITIAL_WINDOW_SIZE)
    assert window and window < size, c.server_settings
    sid = c.request("/echo?upload=1", method="POST",
                    headers=[("content-length", str(size))], end_stream=False)
    sent = c.send_body(sid, body, time.monotonic() + 20)
    assert sent == size, (sent, c.describe(), c.stream(sid))
    assert c.wait_streams([sid], 15), c.describe()
    s = c.stream(sid)
    assert s.status == 200, s
    doc = json.loads(bytes(s.data))
    assert doc["body_len"] == size and doc["body_sha256"] == hashlib.sha256(body).hexdigest()
    # the stream's window was reopened as the upstream took the bytes
    print("upload: window %d, %d stream WINDOW_UPDATEs (%d bytes), %d on the connection" % (
        window, s.window_updates, s.window_credit, c.conn_window_updates))
    assert s.window_updates > 0 and s.window_credit >= size - window, s.window_credit
    c.close()
    assert_serves(p)


def test_data_past_the_stream_window_is_a_flow_control_error(h2proxy, upstream):
    dead = closed_port()  # nothing listens: the request waits for an upstream
    body = ("\treverse_proxy /stall* 127.0.0.1:%d {\n\t\tlb_try_duration 3s\n\t}\n%s"
            % (dead, proxy_block(upstream, response_header_timeout="5s")))
    p = h2proxy(body)
    c = client(p)
    handshake(c)
    window = c.server_settings[INITIAL_WINDOW_SIZE]
    sid = c.request("/stall?fc=1", method="POST", headers=[("content-length", "1000000")],
                    end_stream=False)
    chunk = b"x" * 16384
    over = window + 16384
    out = b"".join(data_frame(sid, chunk) for _ in range(over // 16384 + 1))
    c.send(out)
    assert c.pump(lambda c: c.stream(sid).rst is not None or c.goaway is not None, 5), (
        c.describe(), c.stream(sid))
    print("DATA past the window (%d): %s %r" % (window, c.describe(), c.stream(sid)))
    if c.stream(sid).rst is not None:
        assert c.stream(sid).rst == FLOW_CONTROL_ERROR, c.stream(sid)
        # a stream error: the connection serves on
        ok = c.request("/echo?after=fc")
        assert c.wait_streams([ok], 15) and c.stream(ok).status == 200, c.describe()
    else:
        assert c.goaway[1] == FLOW_CONTROL_ERROR, c.describe()
    c.close()
    assert_serves(p)


# -- 10. GOAWAY on stop ---------------------------------------------------------------


def test_sigterm_sends_goaway_the_stream_in_flight_completes_and_psproxy_exits_0(h2proxy):
    p = h2proxy()
    c = client(p)
    handshake(c)
    sid = c.request("/slow/1000?stop=1")
    wait_for(lambda: targets(p, "stop=1"), 15, what="the request at the upstream")
    t0 = time.monotonic()
    p.proc.send_signal(signal.SIGTERM)
    assert c.pump(lambda c: c.goaway is not None, 10), c.describe()
    last, code, _ = c.goaway
    assert code == NO_ERROR and last >= sid, c.describe()
    assert not c.stream(sid).done, "GOAWAY came after the response, not before"
    # a stream opened after GOAWAY is not processed
    late = c.request("/echo?late=1")
    assert c.wait_streams([sid], 15), c.describe()
    s = c.stream(sid)
    assert s.status == 200 and s.ended, s
    assert json.loads(bytes(s.data))["query"] == "stop=1"
    assert c.wait_closed(15), "connection still open after its last stream: %s" % c.describe()
    c.close()  # psproxy lingers until the client's end too
    assert c.stream(late).status is None, c.stream(late)
    rc = p.proc.wait(timeout=15)
    took = time.monotonic() - t0
    assert rc == 0, "psproxy exited %s; log:\n%s" % (rc, p.log_text()[-3000:])
    assert took < 15, took  # a hang guard: the stream takes 1 s
    assert p.stop() == (0, False)
    assert not targets(p, "late=1")
    c.close()
