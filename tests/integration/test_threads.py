"""Four worker threads under load while what they share changes (issue #22):
the config snapshot and upstream tables (reload), the certificate store
(a certificate swapped on SIGHUP) and the health atomics (an upstream's
active check flapping). Every request must be answered correctly; under
ThreadSanitizer (scripts/test-tsan) conftest fails a test whose psproxy
logged a race.

The load is a few client threads, each sending keep-alive requests and
opening a new connection now and then (new connections take the newest
config). Every wait is for a condition, bounded.
"""

import re
import signal
import threading
import time

import pytest

from conftest import Proxy, Reader, connect, curl, free_port, stop_and_check
from tls_util import Pki, client_context, tls_config, tls_connect, wait_for

WORKERS = 4
CLIENTS = 4
WAIT = 20.0  # seconds: an upper bound for what takes milliseconds (TSan is slow)


@pytest.fixture
def started():
    procs = []
    yield procs
    stop_and_check(procs)


def wait(p, pred, what):
    """wait_for(PRED), failing at once when psproxy P exited (a crash, or a
    ThreadSanitizer report with halt_on_error)."""
    def check():
        if p.proc.poll() is not None:
            raise AssertionError("psproxy exited (%s) waiting for %s; log:\n%s"
                                 % (p.proc.returncode, what, p.log_text()[-6000:]))
        return pred()
    return wait_for(check, WAIT, what=what)


class Load:
    """CLIENTS threads sending requests to psproxy P through ONE(sock,
    reader, tag) on sockets from DIAL() until stopped; each reconnects
    every PER_CONN requests. Any exception is an error (kept, the thread
    ends)."""

    def __init__(self, p, dial, one, clients=CLIENTS, per_conn=20):
        self.p, self.dial, self.one, self.per_conn = p, dial, one, per_conn
        self.stopping = threading.Event()
        self.errors = []
        self.counts = [0] * clients
        self.threads = [threading.Thread(target=self._run, args=(k,), daemon=True)
                        for k in range(clients)]
        for t in self.threads:
            t.start()

    def _run(self, k):
        i = 0
        try:
            while not self.stopping.is_set():
                sock = self.dial()
                try:
                    reader = Reader(sock)
                    for _ in range(self.per_conn):
                        if self.stopping.is_set():
                            break
                        i += 1
                        self.one(sock, reader, "%d-%d" % (k, i))
                        self.counts[k] += 1
                finally:
                    sock.close()
        except Exception as e:  # noqa: BLE001 - reported by stop()
            self.errors.append("client %d request %d: %r" % (k, i, e))

    def total(self):
        return sum(self.counts)

    def wait_for_requests(self, n):
        """Waits until N more requests were answered (or a client failed)."""
        goal = self.total() + n
        wait(self.p, lambda: self.errors or self.total() >= goal,
             "%d more requests answered" % n)
        assert not self.errors, self.errors[:5]

    def stop(self):
        self.stopping.set()
        for t in self.threads:
            t.join(WAIT)
        assert not any(t.is_alive() for t in self.threads), "clients still running"
        assert not self.errors, self.errors[:5]
        assert all(c > 0 for c in self.counts), "a client got nothing through: %r" % self.counts


def get(sock, reader, host, path):
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: %s\r\n\r\n" % (path.encode(), host.encode()))
    return reader.response()


# -- reload under load ----------------------------------------------------------------


def reload_config(port, admin_port, ups, gen, log):
    """Generation GEN: a changing upstream set (the table is rebuilt, a
    removed target freed by whichever thread lets go last), a changing
    response header (the site is new), round robin across the workers, an
    access log file the workers write to."""
    return """{
	admin 127.0.0.1:%d
	workers %d
	servers {
		timeouts {
			idle 30s
		}
	}
}

http://127.0.0.1:%d {
	log {
		output file %s
	}
	header X-Gen %d
	reverse_proxy %s {
		lb_policy round_robin
		health_uri /health
		health_interval 50ms
	}
}
""" % (admin_port, WORKERS, port, log, gen, " ".join(u.addr for u in ups))


RELOADS = 40


def test_reload_under_load_answers_every_request(tmp_path, upstream_factory, started):
    a, b, c = upstream_factory(), upstream_factory(), upstream_factory()
    port, admin_port = free_port(), free_port()
    log = tmp_path / "access.log"
    p = Proxy(tmp_path, reload_config(port, admin_port, [a, b], 0, log), port)
    started.append(p)
    p.wait_ready()
    ports = {a.port, b.port, c.port}
    host = "127.0.0.1:%d" % port

    def one(sock, reader, tag):
        r = get(sock, reader, host, "/echo?tag=" + tag)
        assert r.status == 200, r
        doc = r.json()
        assert doc["query"] == "tag=" + tag, doc
        assert doc["server_port"] in ports, doc
        gen = r.header("X-Gen")
        assert gen is not None and 0 <= int(gen) <= RELOADS, r

    load = Load(p, lambda: connect(port, WAIT), one)
    try:
        load.wait_for_requests(20)
        for gen in range(1, RELOADS + 1):
            ups = [a, b, c] if gen % 3 else [b]
            p.conf.write_text(reload_config(port, admin_port, ups, gen, log))
            if gen % 2:
                r = curl("http://127.0.0.1:%d/reload" % admin_port, "-X", "POST")
                assert r.status == 200 and r.body == b"reloaded\n", r
            else:
                n = p.log_text().count("is serving")
                p.proc.send_signal(signal.SIGHUP)
                wait(p, lambda: p.log_text().count("is serving") > n, "reload %d serving" % gen)
            load.wait_for_requests(CLIENTS)
            # the control thread reads what the workers count
            r = curl("http://127.0.0.1:%d/metrics" % admin_port)
            assert r.status == 200 and b"psproxy_requests_total" in r.body, r
        # a new connection gets the last generation (its header)
        s = connect(port, WAIT)
        try:
            r = get(s, Reader(s), host, "/echo?last")
            assert r.status == 200 and r.header("X-Gen") == str(RELOADS), r
        finally:
            s.close()
    finally:
        load.stop()
    assert p.proc.poll() is None, p.log_text()[-3000:]
    assert log.read_text().count("\n") >= load.total(), "access log entries missing"


# -- certificate swap under load ------------------------------------------------------


SWAPS = 5


def test_certificate_swap_under_load(tmp_path, upstream, started):
    """New handshakes (each client's every connection) while the certificate
    is replaced and SIGHUP sent: every handshake and request succeeds, and a
    handshake that begins after one was seen with the new certificate never
    gets an older one. Each reload also turns HTTP/2 in ALPN on or off (a
    flag every handshake reads)."""
    pki = Pki(tmp_path / "pki")
    d = pki.dir / "site"
    d.mkdir()
    crt, key = d / "a.crt", d / "a.key"
    leaf = pki.leaf("a.test", serial=0x5000, crt=crt, key=key)
    https_port = free_port()
    def conf(gen):
        protocols = "h1 h2" if gen % 2 == 0 else "h1"
        return tls_config([("a.test", leaf, "\treverse_proxy %s" % upstream.addr)],
                          http_port=None, https_port=https_port, workers=WORKERS, idle="30s",
                          global_extra="\tservers {\n\t\tprotocols %s\n\t}" % protocols)

    p = Proxy(tmp_path, conf(0), https_port)
    started.append(p)
    p.wait_ready()
    ctx = client_context(pki.ca, alpn=["http/1.1"])
    h2_ctx = client_context(pki.ca, alpn=["h2", "http/1.1"])
    seen = []  # (handshake began, serial), in no particular order
    lock = threading.Lock()

    def dial():
        began = time.monotonic()
        s = tls_connect(https_port, "a.test", ctx, timeout=WAIT)
        serial = int(s.getpeercert()["serialNumber"], 16)
        with lock:
            seen.append((began, serial))
        return s

    def one(sock, reader, tag):
        r = get(sock, reader, "a.test", "/echo?tag=" + tag)
        assert r.status == 200, r
        assert r.json()["query"] == "tag=" + tag, r

    load = Load(p, dial, one, per_conn=3)  # mostly handshakes
    confirmed = []  # (time a handshake first saw the serial, serial)
    try:
        load.wait_for_requests(10)
        for gen in range(1, SWAPS + 1):
            serial = 0x5000 + gen
            pki.leaf("a.test", serial=serial, crt=crt, key=key)
            p.conf.write_text(conf(gen))
            p.proc.send_signal(signal.SIGHUP)

            def swapped():
                with lock:
                    return any(s == serial for _, s in seen)

            wait(p, swapped, "a handshake with serial %X" % serial)
            confirmed.append((time.monotonic(), serial))
            s = tls_connect(https_port, "a.test", h2_ctx, timeout=WAIT)
            alpn = s.selected_alpn_protocol()
            s.close()
            assert alpn == ("h2" if gen % 2 == 0 else "http/1.1"), (gen, alpn)
            load.wait_for_requests(2 * CLIENTS)
    finally:
        load.stop()
    for t_new, serial in confirmed:
        assert any(began > t_new for began, _ in seen), "no handshake after %X" % serial
        older = sorted({s for began, s in seen if began > t_new and s < serial})
        assert not older, "handshakes after %X was served got %s" % (
            serial, ["%X" % s for s in older])
    assert p.proc.poll() is None, p.log_text()[-3000:]


# -- health flapping ------------------------------------------------------------------


INTERVAL_MS = 50
SLACK = 3.0  # seconds: TSan and a busy machine


def health_config(port, a, b):
    return """{
	admin off
	workers %d
	servers {
		timeouts {
			idle 30s
		}
	}
}

http://127.0.0.1:%d {
	reverse_proxy %s %s {
		lb_policy round_robin
		health_uri /health
		health_interval %dms
		health_timeout 2s
		health_fails 1
		health_passes 1
	}
}
""" % (WORKERS, port, a.addr, b.addr, INTERVAL_MS)


def set_health(up, status):
    s = connect(up.port)
    try:
        s.sendall(b"GET /control/health?status=%d HTTP/1.1\r\nHost: up\r\n"
                  b"Connection: close\r\n\r\n" % status)
        assert Reader(s).response().status == 200
    finally:
        s.close()


def test_health_flapping_with_four_workers(tmp_path, upstream_factory, started):
    """A's check flips between 200 and 503 faster than the check runs, then
    in slower cycles; B stays healthy. Every request is answered; in each
    slow cycle, no request that began after psproxy logged A unhealthy and
    ended before A's check was let pass again went to A."""
    a, b = upstream_factory(), upstream_factory()
    port = free_port()
    p = Proxy(tmp_path, health_config(port, a, b), port)
    started.append(p)
    p.wait_ready()
    host = "127.0.0.1:%d" % port
    served = []  # (request began, ended, upstream port)
    lock = threading.Lock()

    def one(sock, reader, tag):
        began = time.monotonic()
        r = get(sock, reader, host, "/whoami")
        assert r.status == 200, r
        with lock:
            served.append((began, time.monotonic(), int(r.body)))

    def marks(word):
        return len(re.findall(r"upstream %s %s\b" % (re.escape(a.addr), word), p.log_text()))

    load = Load(p, lambda: connect(port, WAIT), one)
    down_spans = []
    try:
        load.wait_for_requests(20)
        # fast: flips as fast as the upstream takes them, until the verdict
        # has changed both ways a few times under load
        down, up = marks("unhealthy"), marks("healthy again")
        flips = [0]

        def flapped():
            for _ in range(10):
                set_health(a, 503 if flips[0] % 2 == 0 else 200)
                flips[0] += 1
            return marks("unhealthy") >= down + 3 and marks("healthy again") >= up + 3

        wait(p, flapped, "A's verdict flapping")
        load.wait_for_requests(CLIENTS)
        # slow: each verdict observed, then checked against the traffic
        for cycle in range(5):
            set_health(a, 200)
            wait(p, lambda: any(up == a.port for _, _, up in served[-50:]),
                 "A serving again (cycle %d)" % cycle)
            n = marks("unhealthy")
            set_health(a, 503)
            t_set = time.monotonic()
            wait(p, lambda: marks("unhealthy") > n, "A logged unhealthy (cycle %d)" % cycle)
            t_down = time.monotonic()
            # one interval to the next check, its answer, and slack for a slow build
            assert t_down - t_set < INTERVAL_MS / 1000.0 + SLACK, \
                "A marked down %.2f s after it failed" % (t_down - t_set)
            load.wait_for_requests(4 * CLIENTS)
            t_up = time.monotonic()  # A is still failing its check here
            down_spans.append((t_down, t_up))
            n = marks("healthy again")
            set_health(a, 200)
            wait(p, lambda: marks("healthy again") > n,
                 "A logged healthy again (cycle %d)" % cycle)
    finally:
        load.stop()
    with lock:
        inside = [up for began, ended, up in served
                  if any(t0 < began and ended < t1 for t0, t1 in down_spans)]
    assert inside, "no request fell inside a span where A was marked down"
    assert a.port not in inside, "%d of %d requests went to A while it was marked down" % (
        inside.count(a.port), len(inside))
    assert p.proc.poll() is None, p.log_text()[-3000:]
