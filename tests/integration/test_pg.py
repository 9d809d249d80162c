"""acme/pg.c against a real PostgreSQL (issue #11), through the driver
tests/pg/pg_probe.c: queries and bytea both ways, LISTEN/NOTIFY, one
on_down per outage while the retries go on, reconnection and LISTEN again
after a restart, a query in flight when the server goes, errors that say
what failed without the password, and a loop that ends with no handle open
(the probe exits 0 only then), under ASan too.

The probe is the one next to $PSPROXY (build/tests/pg_probe by default;
build-asan/tests/pg_probe when the suite runs under ASan), or $PG_PROBE.
"""

import os
import re
import select
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

from conftest import PSPROXY, ROOT, SANITIZER_MARKS, closed_port, free_port, reap
from pg_util import pg_factory, pg_server  # noqa: F401 - fixtures

pytestmark = pytest.mark.peer("postgresql")

PG_PROBE = os.environ.get("PG_PROBE") or str(Path(PSPROXY).parent / "tests" / "pg_probe")
ASAN_PROBE = ROOT / "build-asan" / "tests" / "pg_probe"


class Probe:
    """pg_probe as a child; its stdout read line by line as it comes, its
    stderr (debug log) in a file. SECRET must appear in neither."""

    count = 0

    def __init__(self, tmp_path, dsn, *args, secret=None, binary=None, limit=60):
        binary = binary or PG_PROBE
        if not os.access(binary, os.X_OK):
            pytest.fail("pg_probe not built: %s" % binary)
        Probe.count += 1
        self.secret = secret
        self.err_path = tmp_path / ("probe-%d.err" % Probe.count)
        self._errf = open(self.err_path, "wb")
        env = dict(os.environ, PSPROXY_LOG_LEVEL="debug", PG_PROBE_TIMEOUT=str(limit))
        env.pop("JOURNAL_STREAM", None)
        self.t0 = time.monotonic()
        self.proc = subprocess.Popen([binary, dsn, *args], stdout=subprocess.PIPE,
                                     stderr=self._errf, stdin=subprocess.DEVNULL, env=env)
        self.lines = []  # (seconds since start, line)
        self._buf = b""
        self._eof = False
        self.rc = None

    def _read(self, timeout):
        if self._eof:
            time.sleep(min(timeout, 0.05))
            return
        fd = self.proc.stdout.fileno()
        ready, _, _ = select.select([fd], [], [], max(timeout, 0))
        if not ready:
            return
        data = os.read(fd, 65536)
        if not data:
            self._eof = True
            return
        self._buf += data
        now = time.monotonic() - self.t0
        while b"\n" in self._buf:
            line, self._buf = self._buf.split(b"\n", 1)
            self.lines.append((now, line.decode(errors="replace")))

    def wait_line(self, pattern, timeout=15.0, start=0):
        """The first line from index START matching regex PATTERN; returns
        its index. Fails with the output so far after TIMEOUT."""
        deadline = time.monotonic() + timeout
        rx = re.compile(pattern)
        while True:
            for i in range(start, len(self.lines)):
                if rx.search(self.lines[i][1]):
                    return i
            if time.monotonic() > deadline or (self._eof and self.proc.poll() is not None):
                pytest.fail("no line matching %r after %.0f s; output:\n%s" % (
                    pattern, timeout, self.report()))
            self._read(min(0.2, deadline - time.monotonic()))

    def text(self):
        return [l for _, l in self.lines]

    def matching(self, pattern):
        rx = re.compile(pattern)
        return [(t, l) for t, l in self.lines if rx.search(l)]

    def stderr(self):
        return self.err_path.read_text(errors="replace")

    def report(self):
        out = [l for l in self.text() if l not in ("ok",)]
        return "stdout (without 'ok' lines):\n%s\nstderr (tail):\n%s" % (
            "\n".join(out[-80:]), self.stderr()[-4000:])

    def finish(self, timeout=20.0):
        """Waits for the exit; checks exit 0, a closed loop, no sanitizer
        report, no secret. Returns the lines."""
        deadline = time.monotonic() + timeout
        while not self._eof and time.monotonic() < deadline:
            self._read(0.2)
        try:
            self.rc = self.proc.wait(timeout=max(deadline - time.monotonic(), 1))
        except subprocess.TimeoutExpired:
            self.close()
            pytest.fail("pg_probe did not exit within %.0f s; output:\n%s" % (
                timeout, self.report()))
        self.close()
        err = self.stderr()
        for mark in SANITIZER_MARKS:
            assert mark not in err, "sanitizer report in pg_probe:\n%s" % err[-6000:]
        if self.secret:
            assert self.secret not in "\n".join(self.text()), "password on stdout"
            assert self.secret not in err, "password in the log"
        assert self.rc == 0 and self.text()[-1:] == ["exit 0"], (
            "pg_probe exited %s; output:\n%s" % (self.rc, self.report()))
        return self.text()

    def signal(self, sig=signal.SIGTERM):
        self.proc.send_signal(sig)

    def close(self):
        if self.proc.poll() is None:
            reap(self.proc, signal.SIGKILL, timeout=5)
        self.proc.stdout.close()
        self._errf.close()


@pytest.fixture
def probe(tmp_path):
    """start(dsn, *args, **Probe options) -> a running Probe; all reaped."""
    started = []

    def start(dsn, *args, **kw):
        p = Probe(tmp_path, dsn, *args, **kw)
        started.append(p)
        return p

    yield start
    for p in started:
        p.close()


def attempts_logged(p):
    """How many connection attempts failed, from the probe's debug log."""
    return p.stderr().count("next attempt in")


# -- queries ----------------------------------------------------------------------

QUERY_LINES = [
    "up session 1",
    "create ok CREATE TABLE",
    "insert1 ok INSERT 0 1",
    "insert2 ok INSERT 0 1",
    "row 1 zo\u00eb \"quoted\" 'x' 256 same",
    "row 2 NULL 3 same",
    "divide err 22012 division by zero",
    "add ok 42",
    "begin ok BEGIN",
    "insert3 ok INSERT 0 1",
    "rollback ok ROLLBACK",
    "count ok 2",
    "cancelled 3 twice 0",
    "exit 0",
]


@pytest.mark.parametrize("via", ["tcp", "unix", "uri", "name", "failover"])
def test_queries_run_in_order_with_bytea_both_ways(pg_server, probe, via):
    """Ten queries queued at once run in order: text and binary parameters,
    NULL, bytea written binary and as text hex and read back as hex, a
    server error with its SQLSTATE (the next query still runs), a rolled
    back transaction; then pg_free from inside a callback answers three
    queued queries once each. Over TCP with a password, the unix socket, a
    URI, a host name resolved off the loop (localhost), and two hosts of
    which the first refuses."""
    if via == "tcp":
        dsn = pg_server.dsn()
    elif via == "unix":
        dsn = pg_server.socket_dsn()
    elif via == "uri":
        dsn = "postgresql://psproxy:%s@127.0.0.1:%d/psproxy" % (pg_server.password,
                                                                 pg_server.port)
    elif via == "name":
        dsn = pg_server.dsn(host="localhost")
    else:
        # the first host refuses: libpq moves to a new socket (often under
        # the same descriptor number) inside PQconnectPoll
        dsn = pg_server.dsn(host="127.0.0.1,127.0.0.1",
                            port="%d,%d" % (closed_port(), pg_server.port))
    p = probe(dsn, "query", secret=pg_server.password)
    lines = p.finish()
    assert lines[0].startswith("target host=")
    assert lines[1:] == QUERY_LINES, p.report()
    if via == "name":
        assert re.search(r"localhost is [0-9a-f.:,]+", p.stderr()), p.report()


@pytest.mark.parametrize("sslmode", ["disable", "require"])
def test_eight_megabytes_go_and_come_back(pg_factory, probe, sslmode):
    """An 8 MB binary parameter is more than the socket takes at once
    (PQflush returns 1: the write waits for UV_WRITABLE); its 16 MB hex echo
    comes back in many reads; plain and over TLS."""
    srv = pg_factory(ssl=True)
    p = probe(srv.dsn(sslmode=sslmode), "big", str(8 << 20), secret=srv.password)
    lines = p.finish()
    assert lines[1:] == ["up session 1", "echo %d same" % (8 << 20), "exit 0"], p.report()


# -- LISTEN/NOTIFY ------------------------------------------------------------------


def test_notify_reaches_the_listener(pg_server, probe):
    """pg_listen before the connection: LISTEN runs before on_up, so a
    NOTIFY sent once "up" is printed arrives; channel names keep their case,
    other channels are not heard, payloads arrive as sent."""
    p = probe(pg_server.dsn(), "listen", "Certs.Changed", "3", secret=pg_server.password)
    p.wait_line(r"^up session 1$")
    pg_server.notify("certs.changed", "other case: not ours")
    pg_server.notify("Certs.Changed", "api.photospots.live")
    pg_server.notify("Certs.Changed", "")
    pg_server.psql("BEGIN; SELECT pg_notify('Certs.Changed', 'after commit'); COMMIT")
    lines = p.finish()
    assert [l for l in lines if l.startswith("notify")] == [
        "notify Certs.Changed api.photospots.live",
        "notify Certs.Changed ",
        "notify Certs.Changed after commit",
    ], p.report()


# -- outages ------------------------------------------------------------------------


def test_server_stop_is_one_outage_and_restart_listens_again(pg_server, probe):
    """The server stops: one "down" (with the server's reason) however many
    attempts fail after it, queries refused at once while down; the server
    starts again: "up" on a new session, LISTEN issued again (a NOTIFY
    after the restart arrives), queries run."""
    p = probe(pg_server.dsn(), "outage", "60", "certs", secret=pg_server.password)
    p.wait_line(r"^up session 1$")
    p.wait_line(r"^ok$")
    pg_server.notify("certs", "before")
    p.wait_line(r"^notify certs before$")

    pg_server.stop()
    down = p.wait_line(r"^down ")
    assert p.text()[down] == "down terminating connection due to administrator command"
    refused = p.wait_line(r"^query refused ", start=down)
    assert p.lines[refused][0] - p.lines[down][0] < 1.0, "queries not refused at once"
    deadline = time.monotonic() + 15
    while attempts_logged(p) < 3 and time.monotonic() < deadline:
        time.sleep(0.2)  # the loss and two failed attempts at least
    assert attempts_logged(p) >= 3, p.report()

    pg_server.start()
    up = p.wait_line(r"^up session 2$", timeout=30)
    p.wait_line(r"^ok$", start=up)
    pg_server.notify("certs", "after")
    p.wait_line(r"^notify certs after$", start=up)
    p.signal()
    lines = p.finish()
    assert len([l for l in lines if l.startswith("down")]) == 1, p.report()
    assert len([l for l in lines if l.startswith("up")]) == 2, p.report()
    assert not [l for l in lines[down:up] if l == "ok"], "a query ran while down"
    assert "query refused socket is not connected" in lines[down:up]


def test_terminated_session_reconnects_within_seconds(pg_server, probe):
    """An administrator ends our session (pg_terminate_backend): down with
    the reason, up again about a second later, still listening."""
    p = probe(pg_server.dsn(), "outage", "60", "certs", secret=pg_server.password)
    p.wait_line(r"^up session 1$")
    n = pg_server.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                       "WHERE application_name = 'psproxy'").strip()
    assert n == "1"
    down = p.wait_line(r"^down ")
    assert p.text()[down] == "down terminating connection due to administrator command"
    up = p.wait_line(r"^up session 2$", timeout=20)
    # the first attempt comes after 1 s (PG_BACKOFF_MIN_MS); room for load
    assert p.lines[up][0] - p.lines[down][0] < 6.0
    pg_server.notify("certs", "again")
    p.wait_line(r"^notify certs again$", start=up)
    p.signal()
    p.finish()


def wait_query_running(server, timeout=20):
    """Waits until the probe's pg_sleep query runs on SERVER."""
    deadline = time.monotonic() + timeout
    while "pg_sleep" not in server.psql("SELECT query FROM pg_stat_activity "
                                        "WHERE application_name = 'psproxy'"):
        assert time.monotonic() < deadline, "the query never started"
        time.sleep(0.1)


@pytest.mark.parametrize("mode", ["fast", "immediate"])
def test_query_in_flight_fails_once_when_the_server_goes(pg_server, probe, mode):
    """A query running when the server stops gets no result (its outcome is
    unknown) exactly once, with the server's reason; the outage is reported
    once."""
    p = probe(pg_server.dsn(), "inflight", secret=pg_server.password)
    p.wait_line(r"^up session 1$")
    wait_query_running(pg_server)
    pg_server.stop(mode=mode)
    lines = p.finish()
    why = {"fast": "terminating connection due to administrator command",
           "immediate": "terminating connection due to immediate shutdown command"}[mode]
    assert [l for l in lines if l.startswith("sleep")] == ["sleep err - " + why], p.report()
    assert [l for l in lines if l.startswith("down")] == ["down " + why], p.report()


# -- failures to connect -------------------------------------------------------------


@pytest.mark.parametrize("form", ["keywords", "uri"])
def test_wrong_password_is_one_clear_error_without_the_password(pg_server, probe, form):
    wrong = "wrong-%s" % os.urandom(8).hex()
    if form == "keywords":
        dsn = pg_server.dsn(password=wrong)
    else:
        dsn = "postgresql://psproxy:%s@127.0.0.1:%d/psproxy" % (wrong, pg_server.port)
    p = probe(dsn, "outage", "3.5", secret=wrong)
    lines = p.finish()
    downs = [l for l in lines if l.startswith("down")]
    assert downs == ['down connection to server at "127.0.0.1", port %d failed: FATAL:  '
                     'password authentication failed for user "psproxy"' % pg_server.port], \
        p.report()
    assert not [l for l in lines if l.startswith("up")]
    assert attempts_logged(p) >= 2, "no retry after the first failure"
    assert "target host=127.0.0.1 port=%d dbname=psproxy user=psproxy" % pg_server.port in lines


def test_nobody_listening_is_connection_refused(probe):
    port = free_port()
    p = probe("host=127.0.0.1 port=%d dbname=x user=y password=hunter2-secret" % port,
              "outage", "2.5", secret="hunter2-secret")
    lines = p.finish()
    downs = [l for l in lines if l.startswith("down")]
    assert len(downs) == 1 and "Connection refused" in downs[0], p.report()
    assert "port %d" % port in downs[0]


def test_a_server_that_never_answers_times_out(probe):
    """The TCP handshake completes (the kernel's backlog) but nothing
    answers: connect_timeout ends the attempt; the probe ending while the
    next attempt is connecting still leaves no handle open."""
    with socket.socket() as ls:
        ls.bind(("127.0.0.1", 0))
        ls.listen(16)
        port = ls.getsockname()[1]
        p = probe("host=127.0.0.1 port=%d dbname=x user=y connect_timeout=2" % port,
                  "outage", "3.5")
        p.finish()
    downs = p.matching(r"^down ")
    assert [l for _, l in downs] == ["down timeout: no connection after 2000 ms"], p.report()
    assert 1.8 < downs[0][0] < 3.4, downs
    assert "CONNECTING -> CLOSING" in p.stderr(), p.report()


def test_an_invalid_connection_string_does_not_echo_the_password(tmp_path):
    """libpq quotes the text it could not parse; here that is the password."""
    p = subprocess.run([PG_PROBE, "postgresql://psproxy:Hunter%ZZ2secret@127.0.0.1/psproxy",
                        "outage", "1"], capture_output=True, timeout=20,
                       stdin=subprocess.DEVNULL)
    out = p.stdout.decode() + p.stderr.decode()
    assert p.returncode == 1 and "invalid dsn" in out, out
    assert "invalid connection string" in out
    assert "Hunter" not in out and "secret" not in out, out


# -- ASan ------------------------------------------------------------------------------


@pytest.mark.skipif(not os.access(ASAN_PROBE, os.X_OK),
                    reason="build-asan/tests/pg_probe not built (yet: scripts/test runs this "
                    "in its ASan pass)")
def test_asan_probe_queries_and_loses_a_query_cleanly(pg_server, probe):
    """The ASan+UBSan build of the probe: queries, cancellation by pg_free,
    an outage with a query in flight; no report, the loop closes."""
    p = probe(pg_server.dsn(), "query", binary=str(ASAN_PROBE), secret=pg_server.password)
    assert p.finish()[1:] == QUERY_LINES, p.report()
    p = probe(pg_server.dsn(), "inflight", binary=str(ASAN_PROBE))
    p.wait_line(r"^up session 1$")
    wait_query_running(pg_server)
    pg_server.stop(mode="immediate")
    lines = p.finish()
    assert len([l for l in lines if l.startswith("sleep err - ")]) == 1, p.report()
