"""Health-gated upstream routing (issue #6): load-balancing policies, active
health checks (health_uri, health_interval, health_fails/passes,
health_status, health_body, health_timeout, health_port), passive health
(fail_duration), retries (before any byte was sent: any method; after: only
idempotent methods), lb_try_duration with 503 + Retry-After, fail open and
health_fail_closed, and the log lines for each state change.

Two (or three) real test upstreams per test; their /health endpoints are
switched through /control/health and /control/slow (upstream.py). Timing
bounds are health_interval x health_fails (or passes) plus one interval of
phase and a fixed slack; every wait is bounded.
"""

import re
import select
import subprocess
import sys
import threading
import time

import pytest

from conftest import (PSPROXY, Reader, START_TIMEOUT, UPSTREAM, Upstream, closed_port, connect,
                      curl, free_port, make_config, proxy_block, reap, tail)

# seconds on top of the configured timing, for a loaded machine (ASan, tests
# in parallel on two cores); only ever added to upper bounds and deadlines
SLACK = 3.0


# -- helpers ------------------------------------------------------------------


class PinnedUpstream(Upstream):
    """The test upstream on a port the test chose, so that it can be killed
    and started again on the same port."""

    def __init__(self, tmp_path, port):
        self.log = tmp_path / ("upstream-%d-%d.log" % (port, time.monotonic_ns()))
        self._logf = open(self.log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(UPSTREAM), "--port", str(port)],
            stdout=subprocess.PIPE, stderr=self._logf, stdin=subprocess.DEVNULL)
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            reap(self.proc)
            pytest.fail("test upstream did not start on %d; log:\n%s" % (port, tail(self.log)))
        self.port = int(line)
        assert self.port == port
        self.stats_calls = 0


@pytest.fixture
def pinned(tmp_path):
    """start(port) -> a PinnedUpstream on PORT; all reaped at teardown."""
    started = []

    def start(port):
        up = PinnedUpstream(tmp_path, port)
        started.append(up)
        return up

    yield start
    for up in started:
        up.stop()


def kill(up):
    """SIGKILL: the upstream dies mid-whatever, the kernel closes its sockets."""
    up.proc.kill()
    up.proc.wait(timeout=5)


def health_cfg(uri="/health", interval="300ms", fails=1, passes=1, extra=()):
    lines = ["health_uri %s" % uri, "health_interval %s" % interval,
             "health_fails %d" % fails, "health_passes %d" % passes, *extra]
    return "\n".join("\t\t" + x for x in lines)


def control(up, what):
    """GET /control/WHAT directly on the upstream (not through psproxy)."""
    s = connect(up.port)
    try:
        s.sendall(b"GET /control/%s HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n"
                  % what.encode())
        r = Reader(s).response()
        assert r.status == 200, r
        return r.json()
    finally:
        s.close()


def set_health(up, status=200, body="UP"):
    return control(up, "health?status=%d&body=%s" % (status, body))


def health_hits(up):
    """How many health checks the upstream has read so far."""
    return sum(1 for t in up.stats()["targets"] if t.split("?")[0] == "/health")


def request(p, path="/whoami", method="GET", body=b"", timeout=8.0):
    """One request to psproxy on a fresh connection; returns the Resp, or
    None when psproxy closed the connection without an answer."""
    s = connect(p.port, timeout)
    try:
        head = "%s %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nConnection: close\r\n" % (
            method, path, p.port)
        if body or method in ("POST", "PUT", "PATCH"):
            head += "Content-Length: %d\r\n" % len(body)
        s.sendall(head.encode() + b"\r\n" + body)
        try:
            return Reader(s).response(method)
        except (EOFError, ConnectionResetError):
            return None
    finally:
        s.close()


def served_by(p, n):
    """Sends N GET /whoami; returns the list of upstream ports that answered,
    all of which must have answered 200."""
    out = []
    for i in range(n):
        r = request(p)
        assert r is not None and r.status == 200, "request %d of %d: %r" % (i + 1, n, r)
        out.append(int(r.body))
    return out


def wait_until(pred, timeout, step=0.02):
    deadline = time.monotonic() + timeout
    while True:
        v = pred()
        if v or time.monotonic() > deadline:
            return v
        time.sleep(step)


def log_lines(p, *words, pattern=None):
    """psproxy's log lines holding every one of WORDS (and matching PATTERN)."""
    out = []
    for line in p.log_text().splitlines():
        if all(w in line for w in words) and (pattern is None or re.search(pattern, line)):
            out.append(line)
    return out


def wait_log(p, *words, pattern=None, timeout=10.0):
    return wait_until(lambda: log_lines(p, *words, pattern=pattern), timeout)


UNHEALTHY = r"\bunhealthy\b"
HEALTHY = r"(?<!un)healthy\b"


def drained_of(p, bad, good, deadline):
    """Sends GETs until 10 in a row go to GOOD (none to BAD) or DEADLINE
    (monotonic) passes; returns the time it took, or None."""
    t0 = time.monotonic()
    run = 0
    while time.monotonic() < deadline:
        port = served_by(p, 1)[0]
        assert port in (bad.port, good.port), port
        run = run + 1 if port == good.port else 0
        if run >= 10:
            return time.monotonic() - t0
        time.sleep(0.01)
    return None


def back_in(p, up, deadline, while_503=False):
    """Sends GETs until UP serves one or DEADLINE passes; returns the time it
    took, or None. Every answer must be a 200, or, with WHILE_503, a 503 (no
    upstream available yet)."""
    t0 = time.monotonic()
    while time.monotonic() < deadline:
        r = request(p)
        if while_503 and r is not None and r.status == 503:
            time.sleep(0.02)
            continue
        assert r is not None and r.status == 200, r
        if int(r.body) == up.port:
            return time.monotonic() - t0
        time.sleep(0.02)
    return None


# -- load-balancing policies ------------------------------------------------------


def test_round_robin_gives_both_healthy_upstreams_traffic_from_the_start(
        proxy_factory, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    # A long interval: the upstreams must count as healthy at once (start
    # healthy, or the first check fires at start), never a 503 at startup.
    p = proxy_factory(proxy_block(a, b, lb="round_robin", extra=health_cfg(interval="10s")))
    seen = served_by(p, 20)
    assert seen.count(a.port) >= 5 and seen.count(b.port) >= 5, seen


def test_default_lb_policy_is_round_robin(proxy_factory, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    p = proxy_factory(proxy_block(a, b))
    seen = served_by(p, 8)
    assert set(seen) == {a.port, b.port}, seen
    assert all(seen[i] != seen[i + 1] for i in range(7)), "not alternating: %r" % seen


def test_least_conn_prefers_the_idle_upstream(proxy_factory, upstream_factory, tmp_path):
    a, b = upstream_factory(), upstream_factory()
    p = proxy_factory(proxy_block(a, b, lb="least_conn", response_header_timeout="5s"))
    held = {}
    t = threading.Thread(target=lambda: held.update(
        r=curl(p.url + "/slow/2000?m=held", timeout=10, tmp=tmp_path)), daemon=True)
    t.start()
    busy = wait_until(lambda: a if a.saw("m=held") else b if b.saw("m=held") else None, 1.5)
    assert busy is not None, "the slow request reached no upstream within 1.5 s"
    idle = b if busy is a else a
    seen = served_by(p, 6)
    assert seen == [idle.port] * 6, "busy %d idle %d: %r" % (busy.port, idle.port, seen)
    t.join(8)
    assert not t.is_alive() and held["r"].status == 200, held


def test_ip_hash_keeps_one_client_on_one_upstream(proxy_factory, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    p = proxy_factory(proxy_block(a, b, lb="ip_hash"))
    seen = served_by(p, 10)
    assert len(set(seen)) == 1, seen


def test_first_uses_the_first_available_upstream(proxy_factory, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    p = proxy_factory(proxy_block(a, b, lb="first", extra=health_cfg()))
    assert served_by(p, 6) == [a.port] * 6
    set_health(a, 503)
    took = drained_of(p, a, b, time.monotonic() + 0.3 * 2 + SLACK)
    assert took is not None, "first: traffic not moved to the second upstream"
    set_health(a, 200)
    assert back_in(p, a, time.monotonic() + 0.3 * 2 + SLACK) is not None
    assert served_by(p, 4) == [a.port] * 4


# -- active health checks ---------------------------------------------------------


def test_upstream_failing_its_health_check_is_drained_then_comes_back(
        proxy_factory, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    # 1 s: "not after one check" is looked at between two checks, which
    # must leave a loaded machine time for it
    interval, fails, passes = 1.0, 2, 2
    p = proxy_factory(proxy_block(a, b, lb="round_robin",
                                  extra=health_cfg(interval="1s", fails=fails,
                                                   passes=passes)))
    assert wait_until(lambda: health_hits(a) >= 1 and health_hits(b) >= 1, 10.0), \
        "no health checks reached the upstreams"
    assert set(served_by(p, 4)) == {a.port, b.port}

    # One failed check is not health_fails (2) consecutive failures yet.
    n0 = health_hits(a)
    t_set = time.monotonic()
    set_health(a, 503, "DOWN")
    assert wait_until(lambda: health_hits(a) >= n0 + 1, interval + SLACK)
    assert a.port in served_by(p, 4), "drained after one failed check (health_fails 2)"

    took = drained_of(p, a, b, t_set + interval * (fails + 1) + SLACK)
    assert took is not None, "A still got traffic %.1f s after its /health turned 503" % (
        time.monotonic() - t_set)
    assert a.port not in served_by(p, 20)
    unhealthy = wait_log(p, a.addr, pattern=UNHEALTHY)
    assert unhealthy, "no 'unhealthy' log line for %s:\n%s" % (a.addr, p.log_text()[-3000:])
    assert any("503" in line for line in unhealthy), "no reason (status 503): %r" % unhealthy

    # One passing check is not health_passes (2) consecutive passes yet.
    n1 = health_hits(a)
    t_set = time.monotonic()
    set_health(a, 200)
    assert wait_until(lambda: health_hits(a) >= n1 + 1, interval + SLACK)
    assert a.port not in served_by(p, 4), "back after one passing check (health_passes 2)"

    took = back_in(p, a, t_set + interval * (passes + 1) + SLACK)
    assert took is not None, "A got no traffic %.1f s after its /health recovered" % (
        time.monotonic() - t_set)
    seen = served_by(p, 10)
    assert seen.count(a.port) >= 3 and seen.count(b.port) >= 3, seen
    assert wait_log(p, a.addr, pattern=HEALTHY), \
        "no 'healthy' log line for %s:\n%s" % (a.addr, p.log_text()[-3000:])


def test_health_body_mismatch_marks_unhealthy(proxy_factory, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    p = proxy_factory(proxy_block(a, b, lb="round_robin",
                                  extra=health_cfg(extra=['health_body "UP"'])))
    assert set(served_by(p, 4)) == {a.port, b.port}
    t_set = time.monotonic()
    set_health(a, 200, "STARTING")  # status fine, body without "UP"
    assert drained_of(p, a, b, t_set + 0.3 * 2 + SLACK) is not None, \
        "A answers 200 'STARTING' (health_body UP) and still gets traffic"
    lines = wait_log(p, a.addr, pattern=UNHEALTHY)
    assert lines and any("body" in x.lower() for x in lines), \
        "no 'unhealthy' log line naming the body for %s:\n%s" % (a.addr, p.log_text()[-3000:])
    set_health(a, 200, "UP")
    assert back_in(p, a, time.monotonic() + 0.3 * 2 + SLACK) is not None


def test_health_body_is_a_regular_expression(proxy_factory, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    set_health(a, 200, "OK")  # matches ^(UP|OK)$ though it holds no "UP"
    p = proxy_factory(proxy_block(a, b, lb="round_robin",
                                  extra=health_cfg(extra=['health_body "^(UP|OK)$"'])))
    assert wait_until(lambda: health_hits(a) >= 2, 0.3 * 2 + SLACK)
    assert set(served_by(p, 6)) == {a.port, b.port}, "A answers 'OK' for ^(UP|OK)$"
    set_health(a, 200, "NOT-OK")  # contains OK, but not anchored
    assert drained_of(p, a, b, time.monotonic() + 0.3 * 2 + SLACK) is not None, \
        "A answers 'NOT-OK' for ^(UP|OK)$ and still gets traffic"


def test_health_timeout_with_a_slow_health_endpoint_marks_unhealthy(proxy_factory,
                                                                     upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    control(b, "slow?ms=100")  # slow, but within health_timeout: stays healthy
    p = proxy_factory(proxy_block(a, b, lb="round_robin",
                                  extra=health_cfg(interval="500ms",
                                                   extra=["health_timeout 300ms"])))
    assert set(served_by(p, 4)) == {a.port, b.port}
    t_set = time.monotonic()
    control(a, "slow?ms=1500")
    assert drained_of(p, a, b, t_set + 0.5 * 2 + 0.3 + SLACK) is not None, \
        "A's /health takes 1.5 s (health_timeout 300ms) and A still gets traffic"
    lines = wait_log(p, a.addr, pattern=UNHEALTHY)
    assert lines and any("time" in x.lower() for x in lines), \
        "no 'unhealthy' log line naming the timeout for %s:\n%s" % (a.addr,
                                                                    p.log_text()[-3000:])
    assert not log_lines(p, b.addr, pattern=UNHEALTHY), "B (100 ms, within 300ms) went unhealthy"


def test_health_status_selects_the_expected_status(proxy_factory, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    set_health(a, 503, "MAINTENANCE")  # what health_status 503 asks for
    p = proxy_factory(proxy_block(a, b, lb="round_robin",
                                  extra=health_cfg(extra=["health_status 503"])))
    assert drained_of(p, b, a, time.monotonic() + 0.3 * 2 + SLACK) is not None, \
        "health_status 503: B (answering 200) still gets traffic"
    assert served_by(p, 10) == [a.port] * 10


def test_health_port_checks_another_port(proxy_factory, upstream_factory):
    a, b, checker = upstream_factory(), upstream_factory(), upstream_factory()
    p = proxy_factory(proxy_block(a, b, lb="round_robin", extra=health_cfg(
        extra=["health_port %d" % checker.port, "health_fail_closed"])))
    assert wait_until(lambda: health_hits(checker) >= 2, 0.3 * 2 + SLACK), \
        "no health checks reached health_port %d" % checker.port
    assert set(served_by(p, 4)) == {a.port, b.port}
    set_health(checker, 503)
    r = wait_until(lambda: (lambda r: r if r is not None and r.status == 503 else None)(
        request(p)), 0.3 * 2 + SLACK)
    assert r is not None, "health_port answers 503 (fail closed) and traffic still flows"
    assert health_hits(a) == 0 and health_hits(b) == 0, "health checks went to the upstreams"


# -- fail open / fail closed ------------------------------------------------------------


def test_fail_open_when_every_health_check_fails_but_upstreams_serve(proxy_factory,
                                                                     upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    p = proxy_factory(proxy_block(a, b, lb="round_robin", extra=health_cfg()))
    assert set(served_by(p, 4)) == {a.port, b.port}
    set_health(a, 503, "DOWN")
    set_health(b, 503, "DOWN")
    assert wait_log(p, "fail open", timeout=0.3 * 2 + SLACK), \
        "both health checks fail: no 'fail open' log line:\n" + p.log_text()[-3000:]
    t_end = time.monotonic() + 1.5  # five health intervals, all requests answered
    seen = []
    while time.monotonic() < t_end:
        seen += served_by(p, 2)
        time.sleep(0.02)
    assert set(seen) <= {a.port, b.port} and len(seen) >= 10, seen
    opens = log_lines(p, "fail open")
    assert len(opens) == 1, "'fail open' logged %d times, not once: %r" % (len(opens), opens)


def test_health_fail_closed_answers_503_when_every_health_check_fails(proxy_factory,
                                                                      upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    p = proxy_factory(proxy_block(a, b, lb="round_robin",
                                  extra=health_cfg(extra=["health_fail_closed"])))
    assert set(served_by(p, 4)) == {a.port, b.port}
    t_set = time.monotonic()
    set_health(a, 503, "DOWN")
    set_health(b, 503, "DOWN")
    r = wait_until(lambda: (lambda r: r if r is not None and r.status == 503 else None)(
        request(p)), 0.3 * 2 + SLACK)
    assert r is not None, "fail closed: still no 503 %.1f s after both checks failed" % (
        time.monotonic() - t_set)
    for i in range(5):
        r = request(p)
        assert r is not None and r.status == 503, "request %d: %r" % (i, r)
    assert not log_lines(p, "fail open"), "fail open logged under health_fail_closed"
    set_health(b, 200)
    assert back_in(p, b, time.monotonic() + 0.3 * 2 + SLACK, while_503=True) is not None
    assert served_by(p, 4) == [b.port] * 4


# -- passive health, retries, lb_try_duration --------------------------------------------


def test_sigkill_of_one_upstream_under_load_gives_no_client_errors(proxy_factory,
                                                                   upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    p = proxy_factory(proxy_block(a, b, lb="round_robin", try_duration="5s",
                                  extra=health_cfg(interval="500ms", extra=[
                                      "fail_duration 5s", "max_fails 1"])))
    nthreads, per_thread, kill_after = 4, 60, 60
    lock = threading.Lock()
    done = [0]
    results = []  # (thread, i, status or error, served by, after the kill)
    killed = threading.Event()

    def client(tid):
        s, rd = None, None
        try:
            for i in range(per_thread):
                path = "/whoami" if i % 2 == 0 else "/slow/30"
                if s is None:
                    s = connect(p.port, 8.0)
                    rd = Reader(s)
                after = killed.is_set()
                try:
                    s.sendall(("GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n"
                               % (path, p.port)).encode())
                    r = rd.response()
                except (OSError, EOFError) as e:
                    with lock:
                        results.append((tid, i, repr(e), None, after))
                    s.close()
                    s = None
                    continue
                port = int(r.body) if path == "/whoami" and r.status == 200 else (
                    r.json()["server_port"] if r.status == 200 else None)
                with lock:
                    results.append((tid, i, r.status, port, after))
                    done[0] += 1
                if r.header("Connection", "").lower() == "close":
                    s.close()
                    s = None
        finally:
            if s is not None:
                s.close()

    threads = [threading.Thread(target=client, args=(t,), daemon=True)
               for t in range(nthreads)]
    t0 = time.monotonic()
    for t in threads:
        t.start()
    assert wait_until(lambda: done[0] >= kill_after, 10), "load did not get going"
    # Requests in flight on A when it dies: its reset comes after the whole
    # request was sent, so they must be retried (GET) on B, not answered 502.
    held = {}

    def hold(k):
        held[k] = request(p, "/slow/1500?m=held-%d" % k)

    holders = [threading.Thread(target=hold, args=(k,), daemon=True) for k in range(4)]
    for t in holders:
        t.start()
    on_a = wait_until(lambda: [k for k in range(4) if a.saw("m=held-%d" % k)], 1.4)
    assert on_a, "none of 4 round-robin requests reached A"
    kill(a)
    killed.set()
    for t in threads + holders:
        t.join(max(0.1, t0 + 18 - time.monotonic()))
    assert not any(t.is_alive() for t in holders), "held requests unanswered"
    for k in range(4):
        r = held.get(k)
        assert r is not None and r.status == 200, \
            "held request %d (in flight on A: %s): %r" % (k, k in on_a, r)
        assert r.json()["server_port"] == b.port
    assert not any(t.is_alive() for t in threads), "clients still running after 18 s"
    bad = [x for x in results if x[2] != 200]
    assert not bad, "%d of %d requests failed: %r" % (len(bad), len(results), bad[:10])
    assert len(results) == nthreads * per_thread
    assert {x[3] for x in results if not x[4]} >= {a.port}, "A served nothing before the kill"
    late = [x for x in results if x[4]]
    assert len(late) >= 40, "too few requests after the kill: %d" % len(late)
    assert {x[3] for x in late} == {b.port}, "served by the killed upstream: %r" % late[:10]


def test_connection_refused_marks_upstream_down_for_fail_duration(proxy_factory,
                                                                  upstream_factory, pinned):
    port_a = free_port()
    a, b = pinned(port_a), upstream_factory()
    fail_duration = 3.0
    p = proxy_factory(proxy_block(a, b, lb="round_robin",
                                  extra="\t\tfail_duration 3s\n\t\tmax_fails 1"))
    assert set(served_by(p, 4)) == {a.port, b.port}
    kill(a)
    t_first = time.monotonic()
    # Round robin tries A within two requests: refused, retried on B (nothing
    # was sent), and A is down from then on for fail_duration.
    assert served_by(p, 4) == [b.port] * 4
    t_last = time.monotonic()
    a = pinned(port_a)  # back at once, but psproxy remembers the failure
    seen = []
    while time.monotonic() < t_first + fail_duration - 0.7:
        seen += served_by(p, 1)
        time.sleep(0.02)
    assert len(seen) >= 5 and set(seen) == {b.port}, \
        "A got traffic within fail_duration of being refused: %r" % seen
    assert wait_log(p, a.addr, pattern=UNHEALTHY), \
        "no 'unhealthy' log line for %s:\n%s" % (a.addr, p.log_text()[-3000:])
    took = back_in(p, a, t_last + fail_duration + SLACK)
    assert took is not None, "A got no traffic after fail_duration ran out"


def test_dial_failure_is_retried_for_a_post(proxy_factory, upstream, tmp_path):
    dead = "127.0.0.1:%d" % closed_port()
    p = proxy_factory(proxy_block(dead, upstream, lb="first"))
    r = curl(p.url + "/echo?m=post-dial", "-d", "payload", tmp=tmp_path)
    assert r.status == 200, r
    assert r.json()["method"] == "POST" and r.json()["body_len"] == 7
    assert r.json()["server_port"] == upstream.port


@pytest.mark.parametrize("method,retried", [
    ("POST", False), ("PATCH", False), ("GET", True), ("HEAD", True), ("PUT", True),
    ("DELETE", True), ("OPTIONS", True),
])
def test_upstream_dying_after_the_request_was_sent_retries_only_idempotent_methods(
        proxy_factory, upstream_factory, tmp_path, method, retried):
    a, b = upstream_factory(), upstream_factory()
    p = proxy_factory(proxy_block(a, b, lb="round_robin", try_duration="2s"))
    marker = "m=%s-after-body" % method.lower()
    if method == "HEAD":
        args = ["-I"]
    elif method in ("GET", "OPTIONS"):
        args = ["-X", method]
    else:
        args = ["-X", method, "--data-binary", "x" * 1000]
    r = curl(p.url + "/hangup-after-body?" + marker, *args, tmp=tmp_path)
    got = [up for up in (a, b)
           if any(marker in rec[1] for rec in control(up, "received"))]
    if retried:
        assert len(got) == 2, "%s was not retried on the other upstream: %r" % (method, r)
        assert r.status in (502, 503), r
    else:
        assert len(got) == 1, "%s reached %d upstreams" % (method, len(got))
        other = b if got[0] is a else a
        assert not other.saw(marker), "%s was retried on the other upstream" % method
        assert r.status == 502, r
        rec = [x for x in control(got[0], "received") if marker in x[1]]
        assert rec[0][0] == method and rec[0][2] == 1000, rec


@pytest.mark.parametrize("retries", [0, 1, 2])
def test_lb_retries_bounds_how_many_upstreams_a_request_tries(proxy_factory,
                                                              upstream_factory, tmp_path,
                                                              retries):
    ups = [upstream_factory() for _ in range(3)]
    p = proxy_factory(proxy_block(*ups, lb="round_robin",
                                  extra="\t\tlb_retries %d" % retries))
    r = curl(p.url + "/hangup-after-body?m=retries", tmp=tmp_path)
    assert r.status == 502, r
    tries = [rec for up in ups for rec in control(up, "received") if "m=retries" in rec[1]]
    assert len(tries) == 1 + retries, "lb_retries %d: %d attempts: %r" % (
        retries, len(tries), tries)


def test_request_waits_for_a_down_upstream_within_lb_try_duration(proxy_factory, pinned,
                                                                  tmp_path):
    port = free_port()
    up = pinned(port)
    p = proxy_factory(proxy_block(up, try_duration="5s",
                                  extra="\t\tlb_try_interval 250ms"))
    assert served_by(p, 2) == [port] * 2
    kill(up)
    res = {}
    t = threading.Thread(target=lambda: res.update(
        r=curl(p.url + "/whoami", timeout=15, tmp=tmp_path)), daemon=True)
    t0 = time.monotonic()
    t.start()
    time.sleep(1.0)  # a real wait: the request waits for the upstream meanwhile
    pinned(port)
    t.join(10)
    assert not t.is_alive()
    r = res["r"]
    assert r.status == 200 and int(r.body) == port, r
    assert 0.9 <= r.elapsed and time.monotonic() - t0 < 1.0 + 0.25 + SLACK + 1.0, r


def test_502_when_every_dial_fails_until_lb_try_duration_ends(proxy_factory, tmp_path):
    """Caddy answers the last dial error (502), not 503, when every try
    until lb_try_duration failed (test_caddy_meaning.py compares)."""
    dead = "127.0.0.1:%d" % closed_port()
    p = proxy_factory(proxy_block(dead, try_duration="1s",
                                  extra="\t\tlb_try_interval 250ms"))
    r = curl(p.url + "/whoami", tmp=tmp_path)
    assert r.status == 502, r
    assert 0.9 <= r.elapsed < 1.0 + SLACK + 0.5, "502 after %.2f s (lb_try_duration 1s)" % (
        r.elapsed)


def test_503_with_retry_after_when_no_upstream_is_available_within_lb_try_duration(
        proxy_factory, tmp_path):
    """Every upstream fails its active check and the fail-open dial fails
    too: no upstream Caddy would try, so 503, with a Retry-After."""
    dead = "127.0.0.1:%d" % closed_port()
    p = proxy_factory(proxy_block(dead, try_duration="1s",
                                  extra="\t\tlb_try_interval 250ms\n" + health_cfg()))
    assert wait_log(p, dead, pattern=UNHEALTHY), \
        "the first check has not failed:\n" + p.log_text()[-3000:]
    r = curl(p.url + "/whoami", tmp=tmp_path)
    assert r.status == 503, r
    ra = r.header("Retry-After")
    assert ra is not None and ra.isdigit(), "no delta-seconds Retry-After: %r" % r
    assert 0.9 <= r.elapsed < 1.0 + SLACK + 0.5, "503 after %.2f s (lb_try_duration 1s)" % (
        r.elapsed)


# -- config ------------------------------------------------------------------------------


ISSUE_BLOCK = """\
		lb_policy %s
		lb_retries 2
		lb_try_duration 10s
		lb_try_interval 250ms
		health_uri /actuator/health
		health_port 9999
		health_interval 1s
		health_timeout 500ms
		health_status 2xx
		health_body "UP"
		health_passes 1
		health_fails 1
		health_fail_closed
		fail_duration 5s
		max_fails 1
		unhealthy_status 5xx
		unhealthy_latency 2s"""


def validate(tmp_path, text):
    f = tmp_path / "health.conf"
    f.write_text(text)
    return subprocess.run([PSPROXY, "validate", "-c", str(f)], capture_output=True,
                          timeout=10, stdin=subprocess.DEVNULL)


@pytest.mark.parametrize("lb", ["round_robin", "least_conn", "first", "random", "ip_hash"])
def test_validate_accepts_every_health_and_lb_sub_directive(tmp_path, lb):
    conf = make_config(8080, proxy_block("127.0.0.1:9000", "127.0.0.1:9001",
                                         extra=ISSUE_BLOCK % lb))
    p = validate(tmp_path, conf)
    assert p.returncode == 0, p.stderr.decode(errors="replace")


@pytest.mark.parametrize("line", [
    "lb_policy nonsense", "lb_policy", "health_status banana", "health_status 2xxx",
    "health_interval soon", "health_fails zero", 'health_body "(UP"',
], ids=["unknown_lb_policy", "lb_policy_without_value", "health_status_word",
        "health_status_2xxx", "health_interval_not_a_duration", "health_fails_not_a_number",
        "health_body_bad_regex"])
def test_validate_refuses_a_bad_sub_directive_naming_the_line(tmp_path, line):
    text = ("http://127.0.0.1:8080 {\n\treverse_proxy 127.0.0.1:9000 127.0.0.1:9001 {\n"
            "\t\thealth_uri /health\n\t\t%s\n\t}\n}\n" % line)
    p = validate(tmp_path, text)
    err = p.stderr.decode(errors="replace")
    assert p.returncode != 0, err
    assert re.search(r"(^|\s|/)health\.conf:4: \S", err, re.M), err
    assert line.split()[0] in err, err


# -- passive checks by response ----------------------------------------------------------


@pytest.mark.parametrize("extra,path,why", [
    (["unhealthy_status 5xx", "fail_duration 3s", "max_fails 1"], "/status/503", "status 503"),
    (["unhealthy_latency 200ms", "fail_duration 3s", "max_fails 1"], "/slow/500", "slow"),
])
def test_unhealthy_response_takes_the_upstream_out_for_fail_duration(
        proxy_factory, upstream_factory, extra, path, why):
    a, b = upstream_factory(), upstream_factory()
    body = "\n".join("\t\t" + x for x in extra)
    p = proxy_factory(proxy_block(a, b, lb="first", extra=body))
    assert served_by(p, 2) == [a.port] * 2  # first: A while it is healthy
    r = request(p, path)
    assert r is not None, "no answer to %s" % path
    # the answer that made A unhealthy still reached the client as it was
    assert (r.status == 503) == (path == "/status/503"), r
    assert log_lines(p, a.addr, why), p.log_text()
    assert served_by(p, 4) == [b.port] * 4  # A is out for fail_duration
    assert wait_until(lambda: served_by(p, 1) == [a.port], 3.0 + SLACK), \
        "A not back after fail_duration"
    assert served_by(p, 2) == [a.port] * 2  # and back after it
