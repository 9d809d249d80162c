"""A throwaway PostgreSQL server for one test (test_pg.py, issue #11).

PgServer(...).start() makes a cluster with initdb in a fresh directory under
/tmp, starts it with pg_ctl on a free port bound to 127.0.0.1 (its unix
socket in the same directory), and creates the role `psproxy` with a random
password and the database `psproxy` it owns. TCP connections need that
password (scram-sha-256); the unix socket trusts the superuser `postgres`,
which the helpers (psql, notify) use. stop(), start() again (a restart on
the same port and data), kill(); the `pg_server` fixture always stops it with
`pg_ctl stop -m immediate` and removes the directory, even when the test fails.

initdb and postgres refuse to run as root. As root, every server command
runs as the unprivileged system user `postgres` (the postgresql package
makes it; else `nobody`) through `runuser -u USER --`, and the directory is
made with mkdtemp in /tmp (pytest's tmp_path under /tmp/pytest-of-root is
0700, closed to that user) and chowned to it. Not root: the commands run as
the current user. Every command is bounded in time.
"""

import glob
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from conftest import free_port, tail

CMD_TIMEOUT = 30
START_WAIT = 20  # pg_ctl -t


def bindir():
    """The PostgreSQL 15 server binaries, else the newest installed."""
    for d in ["/usr/lib/postgresql/15/bin"] + sorted(glob.glob("/usr/lib/postgresql/*/bin"),
                                                     reverse=True):
        if os.access(os.path.join(d, "initdb"), os.X_OK):
            return d
    return None


def run_user():
    """The user server commands run as: None (ourselves) unless root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            pwd.getpwnam(name)
            return name
        except KeyError:
            pass
    return None


def missing_reason():
    if bindir() is None:
        return "PostgreSQL server binaries not installed (apt-get install postgresql)"
    if os.geteuid() == 0 and (run_user() is None or shutil.which("runuser") is None):
        return "running as root without runuser or an unprivileged user for initdb"
    return None


def dsn_quote(v):
    """A libpq connection-string value, quoted."""
    return "'" + str(v).replace("\\", "\\\\").replace("'", "\\'") + "'"


class PgServer:
    """SSL: the server also speaks TLS (a self-signed certificate made with
    the openssl CLI); clients choose with sslmode."""

    def __init__(self, ssl=False):
        self.ssl = ssl
        self.bin = bindir()
        self.user = run_user()
        self.dir = Path(tempfile.mkdtemp(prefix="psproxy-pg-"))
        self.data = self.dir / "data"
        self.sock = self.dir / "sock"
        self.log = self.dir / "postgres.log"
        self.port = free_port()
        self.password = "pw-" + secrets.token_hex(12)
        self.initialized = False
        self.starts = 0
        self.sock.mkdir()
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            for p in (self.dir, self.sock):
                os.chown(p, pw.pw_uid, pw.pw_gid)

    # -- commands -----------------------------------------------------------

    def _cmd(self, argv, timeout=CMD_TIMEOUT, check=True):
        argv = [str(a) for a in argv]
        if self.user is not None:
            argv = ["runuser", "-u", self.user, "--"] + argv
        p = subprocess.run(argv, capture_output=True, timeout=timeout, cwd=str(self.dir),
                           stdin=subprocess.DEVNULL)
        if check and p.returncode != 0:
            raise AssertionError("%s failed (%d):\n%s%s\nserver log:\n%s" % (
                " ".join(argv), p.returncode, p.stdout.decode(errors="replace")[-2000:],
                p.stderr.decode(errors="replace")[-2000:], tail(self.log)))
        return p

    def psql(self, sql, db="psproxy"):
        """Runs SQL as the superuser over the unix socket; returns stdout."""
        p = self._cmd([os.path.join(self.bin, "psql"), "-X", "-q", "-A", "-t",
                       "-v", "ON_ERROR_STOP=1", "-h", self.sock, "-p", self.port,
                       "-U", "postgres", "-d", db, "-c", sql])
        return p.stdout.decode()

    def notify(self, channel, payload):
        self.psql("SELECT pg_notify(%s, %s)" % (sql_quote(channel), sql_quote(payload)))

    # -- lifecycle ----------------------------------------------------------

    def start(self):
        """initdb (first time), then pg_ctl start -w; returns self."""
        if not self.initialized:
            pwfile = self.dir / "pwfile"
            pwfile.write_text(secrets.token_hex(16) + "\n")  # postgres: unused over TCP
            if self.user is not None:
                pw = pwd.getpwnam(self.user)
                os.chown(pwfile, pw.pw_uid, pw.pw_gid)
            self._cmd([os.path.join(self.bin, "initdb"), "-D", self.data, "-U", "postgres",
                       "--auth-local=trust", "--auth-host=scram-sha-256", "--pwfile", pwfile,
                       "--no-locale", "-E", "UTF8", "--no-sync", "--no-instructions"])
            pwfile.unlink()
            if self.ssl:
                self._make_cert()
        opts = ("-p %d -k %s -c listen_addresses=127.0.0.1 -c fsync=off "
                "-c synchronous_commit=off -c full_page_writes=off -c max_connections=20 "
                "-c shared_buffers=16MB" % (self.port, self.sock))
        if self.ssl:
            opts += " -c ssl=on -c ssl_cert_file=%s -c ssl_key_file=%s" % (
                self.dir / "server.crt", self.dir / "server.key")
        self.starts += 1
        self._cmd([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-o", opts,
                   "-l", self.log, "start", "-w", "-t", START_WAIT],
                  timeout=START_WAIT + 10)
        if not self.initialized:
            self.initialized = True
            self.psql("CREATE ROLE psproxy LOGIN PASSWORD %s" % sql_quote(self.password),
                      db="postgres")
            self.psql("CREATE DATABASE psproxy OWNER psproxy", db="postgres")
        return self

    def _make_cert(self):
        crt, key = self.dir / "server.crt", self.dir / "server.key"
        p = subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                            "ec_paramgen_curve:P-256", "-nodes", "-keyout", str(key),
                            "-out", str(crt), "-days", "2", "-subj", "/CN=127.0.0.1"],
                           capture_output=True, timeout=CMD_TIMEOUT, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr.decode(errors="replace")
        os.chmod(key, 0o600)  # postgres refuses a key others can read
        if self.user is not None:
            pw = pwd.getpwnam(self.user)
            for f in (crt, key):
                os.chown(f, pw.pw_uid, pw.pw_gid)

    def stop(self, mode="fast"):
        """pg_ctl stop -m MODE (fast: sessions get 'terminating connection
        due to administrator command'; immediate: no checkpoint)."""
        self._cmd([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m", mode,
                   "stop", "-w", "-t", START_WAIT], timeout=START_WAIT + 10)

    def running(self):
        return (self.data / "postmaster.pid").exists()

    def cleanup(self):
        """Stops the server whatever state it is in, removes the directory."""
        try:
            if self.running():
                p = self._cmd([os.path.join(self.bin, "pg_ctl"), "-D", self.data, "-m",
                               "immediate", "stop", "-w", "-t", "10"], timeout=20, check=False)
                if p.returncode != 0:
                    self._kill_postmaster()
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    def _kill_postmaster(self):
        try:
            pid = int((self.data / "postmaster.pid").read_text().split()[0])
            os.kill(pid, signal.SIGKILL)
        except (OSError, ValueError, IndexError):
            return
        # gone (or a zombie) before its directory is removed
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                with open("/proc/%d/stat" % pid) as f:
                    if f.read().rsplit(")", 1)[1].split()[0] == "Z":
                        return
            except (OSError, IndexError):
                return
            time.sleep(0.05)

    # -- what clients use ---------------------------------------------------

    def dsn(self, **kw):
        """The TCP DSN for role psproxy, password included; KW adds to it or
        replaces (None drops a key)."""
        d = {"host": "127.0.0.1", "port": self.port, "dbname": "psproxy", "user": "psproxy",
             "password": self.password, "connect_timeout": 5}
        d.update(kw)
        return " ".join("%s=%s" % (k, dsn_quote(v)) for k, v in d.items() if v is not None)

    def socket_dsn(self):
        return "host=%s port=%d dbname=psproxy user=postgres" % (self.sock, self.port)

    def log_text(self):
        return tail(self.log, 1 << 20)


def sql_quote(s):
    return "'" + str(s).replace("'", "''") + "'"


@pytest.fixture
def pg_factory():
    """start(**PgServer options) -> a started PgServer; each is always
    stopped (immediate) and removed after the test."""
    import peers
    peers.need("postgresql")
    made = []

    def start(**kw):
        srv = PgServer(**kw)
        made.append(srv)
        return srv.start()

    try:
        yield start
    finally:
        for srv in made:
            srv.cleanup()


@pytest.fixture
def pg_server(pg_factory):
    """A started PgServer (no TLS)."""
    return pg_factory()
