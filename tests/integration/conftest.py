"""Fixtures and helpers for psproxy's black-box integration tests.

Each test gets its own temp dir, free ports, a fresh test upstream
(upstream.py) and a fresh psproxy (env PSPROXY, default build/psproxy) started
on a config written there. Every wait is bounded; every child is reaped at
teardown, where psproxy's log is also checked for sanitizer reports and for a
crash during the test.
"""

import fcntl
import json
import os
import random
import select
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
PSPROXY = os.environ.get("PSPROXY") or str(ROOT / "build" / "psproxy")
UPSTREAM = HERE / "upstream.py"
START_TIMEOUT = 10.0
STOP_TIMEOUT = 10.0
SANITIZER_MARKS = (
    "ERROR: AddressSanitizer",
    "ERROR: LeakSanitizer",
    "runtime error:",
    "SUMMARY: UndefinedBehaviorSanitizer",
    "WARNING: ThreadSanitizer",  # a race (or lock misuse): scripts/test-tsan
)

# curl must talk to psproxy directly, whatever the environment says.
CURL_ENV = {k: v for k, v in os.environ.items()
            if k.lower() not in ("http_proxy", "https_proxy", "all_proxy", "no_proxy")}


def pytest_configure(config):
    config.addinivalue_line("markers", "peer(name, ...): the real peers the test needs "
                            "(peers.py: skipped without them, failed under CI)")
    config.addinivalue_line("markers", "serial: runs alone, not beside other tests (a fixed "
                            "port, or a load or timing the test measures)")


def pytest_runtest_setup(item):
    import peers  # here, not at the top: peers imports modules that import conftest
    for mark in item.iter_markers("peer"):
        for name in mark.args:
            peers.need(name)


_HANDED_OUT = set()
# Ports handed out by any test process on this machine (pytest-xdist
# workers, other runs): a file per port holding the pid that took it.
_PORT_CLAIMS = Path(tempfile.gettempdir()) / "psproxy-test-ports"


def _alive(pid):
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


def _quiet_range():
    """Ports the kernel never picks on its own: those below its ephemeral
    range (ip_local_port_range), which every outgoing connection (curl,
    Pebble, psproxy's upstreams) takes its local port from. None when that
    range leaves too few below it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as f:
            low = int(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    if low - 1 < 10000:
        return None
    return max(10000, low - 12000), low - 1


def _candidate_port(quiet):
    if quiet is None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            return s.getsockname()[1]
    port = random.randint(*quiet)
    with socket.socket() as s:
        try:
            s.bind(("0.0.0.0", port))  # no listener, no connection, no TIME_WAIT on it
        except OSError:
            return None
    return port


def free_port():
    """A port nobody listens on, never one this process handed out before:
    two roles on one port (http_port == https_port) made one test serve
    HTTP where it expected TLS. Nor one another live test process took:
    psproxy listens with SO_REUSEPORT, so two of them (tests running in
    parallel) could share a port and answer each other's clients. Taken
    below the kernel's ephemeral range: a port bound to 0 and released was
    free only until an outgoing connection got it as its local port, and
    psproxy then could not listen on it ("address already in use")."""
    quiet = _quiet_range()
    _PORT_CLAIMS.mkdir(exist_ok=True)
    with open(_PORT_CLAIMS / ".lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one process at a time looks and claims
        while True:
            port = _candidate_port(quiet)
            if port is None or port in _HANDED_OUT:
                continue
            claim = _PORT_CLAIMS / str(port)
            try:
                owner = int(claim.read_text())
            except (OSError, ValueError):
                owner = None
            if owner is not None and owner != os.getpid() and _alive(owner):
                continue  # a live test process's: maybe not listening yet
            claim.write_text(str(os.getpid()))
            _HANDED_OUT.add(port)
            return port


_HELD = []


def closed_port():
    """A port that refuses connections for the rest of this test process:
    bound but never listening, and held, so that no server another test
    starts on port 0 (tests run in parallel) can take it. A port from
    free_port() is free only until someone binds it."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    _HELD.append(s)
    return s.getsockname()[1]


def wait_port(port, proc, timeout, what, logfile):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            pytest.fail("%s exited with %s before listening on %d; log:\n%s"
                        % (what, proc.returncode, port, tail(logfile)))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            pytest.fail("%s not listening on %d after %.0f s; log:\n%s"
                        % (what, port, timeout, tail(logfile)))
        time.sleep(0.02)


# -- waiting ------------------------------------------------------------------------
#
# Tests run in parallel (pytest-xdist) on a loaded machine and under ASan, so a
# test never sleeps hoping psproxy has done something by then: it waits for
# the thing itself (a port, a log line, a metric, a file) with a generous
# bound, which only limits how long a broken test hangs.

WAIT_TIMEOUT = 20.0
# for a close psproxy makes at once (Connection: close, a refused request):
# room for a loaded machine, below make_config's 5 s idle timeout, which
# would close the connection anyway
CLOSE_WITHIN = 4.0


def wait_until(pred, timeout=WAIT_TIMEOUT, what="condition", interval=0.02):
    """Polls PRED until it returns a true value, and returns that value;
    after TIMEOUT seconds raises AssertionError naming WHAT and PRED's last
    value."""
    deadline = time.monotonic() + timeout
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError("waited %.1f s for %s (last: %r)" % (timeout, what, last))
        time.sleep(interval)


def wait_log(log, needle, timeout=WAIT_TIMEOUT, count=1):
    """Waits until LOG (a Proxy, or a log file's path) holds NEEDLE (a string,
    or a compiled regex) at least COUNT times; returns the log's text."""
    path = getattr(log, "log", log)

    def found():
        text = tail(path, 1 << 24)
        n = len(needle.findall(text)) if hasattr(needle, "findall") else text.count(needle)
        return text if n >= count else None

    try:
        return wait_until(found, timeout, interval=0.05,
                          what="%d x %r in %s" % (count, getattr(needle, "pattern", needle),
                                                  path))
    except AssertionError as e:
        raise AssertionError("%s; its tail:\n%s" % (str(e).split(" (last:")[0],
                                                     tail(path))) from None


def wait_stable(fn, settle=0.5, timeout=WAIT_TIMEOUT, what="a value"):
    """Waits until FN's value has stayed the same for SETTLE seconds, and
    returns it: for "whatever was in flight has arrived" (connections
    psproxy dialled and dropped reaching the upstream's accept) where no
    event says so."""
    deadline = time.monotonic() + timeout
    last, since = fn(), time.monotonic()
    while True:
        time.sleep(0.05)
        now = fn()
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= settle:
            return now
        if time.monotonic() > deadline:
            raise AssertionError("%s still changing after %.1f s (last: %r)"
                                 % (what, timeout, now))


def tail(path, n=4000):
    try:
        return Path(path).read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def reap(proc, sig=signal.SIGTERM, timeout=STOP_TIMEOUT):
    """Stops PROC with SIG, SIGKILL after TIMEOUT; returns (rc, killed)."""
    if proc.poll() is not None:
        return proc.returncode, False
    try:
        proc.send_signal(sig)
        return proc.wait(timeout=timeout), False
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait(timeout=timeout), True


# -- processes ------------------------------------------------------------------


class Upstream:
    """The test upstream as a child process."""

    def __init__(self, tmp_path, mode="normal"):
        self.log = tmp_path / ("upstream-%d.log" % id(self))
        self._logf = open(self.log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(UPSTREAM), "--mode", mode],
            stdout=subprocess.PIPE, stderr=self._logf, stdin=subprocess.DEVNULL)
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            reap(self.proc)
            pytest.fail("test upstream did not start; log:\n" + tail(self.log))
        self.port = int(line)
        self.stats_calls = 0

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def stats(self):
        """/stats, asked directly (not through psproxy). Its connection
        counts too: proxied_connections() leaves those out."""
        self.stats_calls += 1
        s = connect(self.port)
        try:
            s.sendall(b"GET /stats HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n")
            return json.loads(Reader(s).response().body)
        finally:
            s.close()

    def proxied_connections(self):
        st = self.stats()
        return st["connections"] - self.stats_calls

    def raw_conns(self):
        """[(conn id, still open, bytes received)] of every connection to the
        upstream except the tests' own /stats and /raw ones."""
        self.stats_calls += 1
        s = connect(self.port)
        try:
            s.sendall(b"GET /raw HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n")
            doc = json.loads(Reader(s).response().body)
        finally:
            s.close()
        return [(d["id"], d["open"], d["raw"].encode("latin-1")) for d in doc]

    def saw(self, marker):
        """Whether any request target the upstream read contains MARKER."""
        return any(marker in t for t in self.stats()["targets"])

    def stop(self):
        reap(self.proc)
        self.proc.stdout.close()
        self._logf.close()


def make_config(port, body, *, site=None, read_header="2s", idle="5s",
                max_header_size="16KB", global_extra=""):
    """A Caddyfile with the usual global options and one site, BODY inside."""
    site = site or "http://127.0.0.1:%d" % port
    return f"""{{
	admin off
	workers 1
	servers {{
		timeouts {{
			read_header {read_header}
			idle {idle}
		}}
		max_header_size {max_header_size}
	}}
{global_extra}}}

{site} {{
{body}
}}
"""


def proxy_block(*upstreams, lb="", try_duration="", dial_timeout="1s",
                response_header_timeout="10s", extra=""):
    lines = ["\treverse_proxy %s {" % " ".join(u if isinstance(u, str) else u.addr
                                               for u in upstreams)]
    if lb:
        lines.append("\t\tlb_policy %s" % lb)
    if try_duration:
        lines.append("\t\tlb_try_duration %s" % try_duration)
    if extra:
        lines.append(extra)
    lines += ["\t\ttransport http {",
              "\t\t\tdial_timeout %s" % dial_timeout,
              "\t\t\tresponse_header_timeout %s" % response_header_timeout,
              "\t\t}", "\t}"]
    return "\n".join(lines)


class Proxy:
    """psproxy as a child process, on the config CONFIG written to its dir."""

    def __init__(self, tmp_path, config, port):
        if not os.access(PSPROXY, os.X_OK):
            pytest.fail("psproxy binary not found or not executable: %s" % PSPROXY)
        self.port = port
        self.dir = tmp_path
        self.conf = tmp_path / ("psproxy-%d.conf" % port)
        self.conf.write_text(config)
        self.log = tmp_path / ("psproxy-%d.log" % port)
        self._logf = open(self.log, "w")
        self.stopped = None
        self.proc = subprocess.Popen([PSPROXY, "-c", str(self.conf)], cwd=str(tmp_path),
                                     stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self):
        wait_port(self.port, self.proc, START_TIMEOUT, "psproxy", self.log)

    @property
    def url(self):
        return "http://127.0.0.1:%d" % self.port

    def stop(self, sig=signal.SIGTERM):
        """Signals psproxy and waits; returns (exit status, killed)."""
        if self.stopped is None:
            self.stopped = reap(self.proc, sig)
            self._logf.close()
        return self.stopped

    def log_text(self):
        return tail(self.log, 1 << 20)


@pytest.fixture
def upstream_factory(tmp_path):
    started = []

    def start(mode="normal"):
        up = Upstream(tmp_path, mode)
        started.append(up)
        return up

    yield start
    for up in started:
        up.stop()


@pytest.fixture
def upstream(upstream_factory):
    return upstream_factory()


@pytest.fixture
def proxy_factory(tmp_path):
    """start(body, **make_config options) -> Proxy on a free port."""
    started = []

    def start(body, port=None, **opts):
        port = port or free_port()
        p = Proxy(tmp_path, make_config(port, body, **opts), port)
        started.append(p)
        p.wait_ready()
        return p

    yield start
    stop_and_check(started)


def stop_and_check(started):
    """A fixture's teardown: stops every Proxy in STARTED and fails the test
    when one crashed, ignored SIGTERM or logged a sanitizer report."""
    problems = []
    for p in started:
        crashed = p.proc.poll() if p.stopped is None else None
        rc, killed = p.stop()
        log = p.log_text()
        if crashed is not None:
            problems.append("psproxy exited with %s during the test" % crashed)
        elif killed:
            problems.append("psproxy ignored SIGTERM for %.0f s" % STOP_TIMEOUT)
        for mark in SANITIZER_MARKS:
            if mark in log:
                problems.append("sanitizer report (%s)" % mark)
                break
        if problems:
            pytest.fail("; ".join(problems) + "; psproxy log:\n" + log[-6000:])


@pytest.fixture
def proxy(proxy_factory, upstream):
    """psproxy reverse-proxying its one site to one test upstream."""
    p = proxy_factory(proxy_block(upstream))
    p.upstream = upstream
    return p


# -- clients ----------------------------------------------------------------------


class CurlResult:
    def __init__(self, rc, status, headers, body, stderr, elapsed):
        self.rc = rc
        self.status = status
        self.headers = headers  # [(name, value)] of the final response
        self.body = body
        self.stderr = stderr
        self.elapsed = elapsed

    def header(self, name, default=None):
        vals = self.header_all(name)
        return vals[0] if vals else default

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<curl rc=%d status=%d headers=%r body=%r stderr=%r>" % (
            self.rc, self.status, self.headers, self.body[:300], self.stderr[-500:])


def curl(url, *args, timeout=20, tmp=None):
    """Runs curl on URL (one transfer); returns a CurlResult."""
    tmp = Path(tmp or "/tmp")
    tag = "%d-%d" % (os.getpid(), time.monotonic_ns())
    hfile, bfile = tmp / ("h-" + tag), tmp / ("b-" + tag)
    cmd = ["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout - 2),
           "-D", str(hfile), "-o", str(bfile), "-w", "%{http_code}", *args, url]
    t0 = time.monotonic()
    p = subprocess.run(cmd, capture_output=True, timeout=timeout, env=CURL_ENV,
                       stdin=subprocess.DEVNULL)
    elapsed = time.monotonic() - t0
    try:
        raw_head = hfile.read_bytes().decode("latin-1")
        body = bfile.read_bytes() if bfile.exists() else b""
    except OSError:
        raw_head, body = "", b""
    finally:
        for f in (hfile, bfile):
            if f.exists():
                f.unlink()
    # -D holds every head (100 Continue, redirects): keep the last one.
    blocks = [b for b in raw_head.split("\r\n\r\n") if b.strip()]
    headers = []
    if blocks:
        for line in blocks[-1].split("\r\n")[1:]:
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
    status = int(p.stdout[-3:]) if p.stdout[-3:].isdigit() else 0
    return CurlResult(p.returncode, status, headers, body, p.stderr.decode(errors="replace"),
                      elapsed)


def connect(port, timeout=5.0):
    s = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    s.settimeout(timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


class Resp:
    def __init__(self, version, status, reason, headers, body):
        self.version = version
        self.status = status
        self.reason = reason
        self.headers = headers
        self.body = body

    def header(self, name, default=None):
        vals = self.header_all(name)
        return vals[0] if vals else default

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def json(self):
        return json.loads(self.body)

    def __repr__(self):
        return "<%s %d %s headers=%r body=%r>" % (self.version, self.status, self.reason,
                                                   self.headers, self.body[:300])


class Reader:
    """Reads HTTP/1.1 responses off a raw socket, one after another."""

    def __init__(self, sock):
        self.sock = sock
        self.buf = bytearray()

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise EOFError("connection closed by psproxy (buffered: %r)" % bytes(self.buf[:200]))
        self.buf += data

    def read_until(self, delim):
        while True:
            i = self.buf.find(delim)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[: i + len(delim)]
                return out
            self.fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_to_close(self):
        while True:
            try:
                self.fill()
            except EOFError:
                out = bytes(self.buf)
                self.buf.clear()
                return out

    def head(self):
        head = self.read_until(b"\r\n\r\n").decode("latin-1")
        lines = head.split("\r\n")
        version, _, rest = lines[0].partition(" ")
        code, _, reason = rest.partition(" ")
        if not version.startswith("HTTP/") or not code.isdigit():
            raise AssertionError("not an HTTP status line: %r" % lines[0])
        headers = []
        for line in lines[1:]:
            k, _, v = line.partition(":")
            headers.append((k.strip(), v.strip()))
        return Resp(version, int(code), reason, headers, b"")

    def response(self, method="GET", keep_1xx=False):
        """The next response; interim 1xx ones are skipped unless KEEP_1XX."""
        while True:
            r = self.head()
            if 100 <= r.status < 200 and r.status != 101 and not keep_1xx:
                continue
            break
        if method == "HEAD" or r.status in (204, 304) or 100 <= r.status < 200:
            return r
        te = ",".join(r.header_all("Transfer-Encoding")).lower()
        if te:
            assert te.split(",")[-1].strip() == "chunked", "response TE %r" % te
            body = bytearray()
            while True:
                size = int(self.read_until(b"\r\n").split(b";")[0], 16)
                if size == 0:
                    while self.read_until(b"\r\n"):
                        pass
                    break
                body += self.read_exact(size)
                assert self.read_exact(2) == b"\r\n", "chunk without CRLF"
            r.body = bytes(body)
        elif r.header("Content-Length") is not None:
            r.body = self.read_exact(int(r.header("Content-Length")))
        else:
            r.body = self.read_to_close()
        return r

    def closed_within(self, timeout):
        """True when psproxy closes the connection within TIMEOUT seconds
        (a reset counts); False when it stays open. Data is an error."""
        self.sock.settimeout(timeout)
        try:
            data = self.sock.recv(65536)
        except socket.timeout:
            return False
        except ConnectionResetError:
            return True
        assert not data, "unexpected bytes from psproxy: %r" % data[:300]
        return True


def raw(port, data, method="GET", timeout=5.0):
    """Sends DATA on a new connection; returns (Resp, Reader)."""
    s = connect(port, timeout)
    s.sendall(data)
    rd = Reader(s)
    return rd.response(method), rd


def raw_status(port, data, timeout=5.0):
    """Sends DATA and returns the status code psproxy answered, closing the
    socket; an empty close counts as 0."""
    s = connect(port, timeout)
    try:
        s.sendall(data)
        rd = Reader(s)
        try:
            return rd.response().status
        except EOFError:
            return 0
    finally:
        s.close()
