"""The embedded ACME client (issue #5) against a real CA: Pebble on loopback
(pebble.py). psproxy obtains a certificate for api.photospots.live at start
over HTTP-01 (or TLS-ALPN-01 when `acme_challenges tls-alpn-01`), stores it
under `storage file_system`, serves it, serves what is stored after a
restart without a new order, copes with badNonce and with the CA being
down, and renews by lifetime while old connections keep working.

Black-box: the real binary, curl, openssl s_client/verify and Python's ssl.
Every wait is bounded; PSPROXY_FAST=1 skips the renewal test (~20 s).
"""

import http.client
import json
import os
import re
import socket
import ssl
import stat
import subprocess
import time

import pytest

from conftest import (PSPROXY, Proxy, SANITIZER_MARKS, STOP_TIMEOUT, closed_port, free_port,
                      proxy_block, tail)
from pebble import https_ca, pebble_factory  # noqa: F401 - fixtures
from tls_util import cert_info, client_context, https_curl, s_client, tls_connect, wait_for

pytestmark = pytest.mark.peer("pebble")

NAME = "api.photospots.live"
EMAIL = "admin@photospots.live"
FIRST_CERT_TIMEOUT = 60.0   # a first certificate takes ~0.5 s here (ACME.md); a hang guard
# stored certificate: the first request succeeds this soon. An order takes
# ~0.5 s idle but more under ASan and parallel tests, so the bound cannot
# tell one from none: orders_seen() and the log do, and this bound is only
# "at once" on a loaded machine
RESTART_SERVE_WITHIN = 10.0
# "retry"/"back" as the brief says, but not "background" or "fallback".
BACKOFF_RE = re.compile(r"retr(y|ies|ying)|back[ -]?off|backing off", re.I)
PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", re.S)


# -- setup --------------------------------------------------------------------


def ca_id(directory_url):
    """The storage directory name of a CA, as acme/store.h defines it."""
    m = re.match(r"^[a-z]+://([^/]+)(.*)$", directory_url)
    s = (m.group(1).replace(":", "-") + m.group(2).replace("/", "-")).lower()
    return re.sub(r"[^a-z0-9._-]", "_", s)


class Acme:
    """One test's world: psproxy's ports and storage, the test upstream, a
    Pebble validating on psproxy's ports, and psproxy runs (each in its own
    directory, so logs of earlier runs are kept)."""

    def __init__(self, tmp_path, upstream, pebble_factory, https_ca):
        self.tmp = tmp_path
        self.https_ca = https_ca
        self.upstream = upstream
        self._pebble_factory = pebble_factory
        self.http_port = free_port()
        self.https_port = free_port()
        self.storage = tmp_path / "storage"
        self.pebble = None
        self.runs = []

    def start_pebble(self, **kw):
        self.pebble = self._pebble_factory(http_port=self.http_port, tls_port=self.https_port,
                                           **kw)
        return self.pebble

    @property
    def root(self):
        return self.pebble.root

    def config(self, challenges=None, ca_url=None):
        ca_url = ca_url or self.pebble.directory_url
        g = ["\tadmin off", "\tworkers 1",
             "\thttp_port %d" % self.http_port, "\thttps_port %d" % self.https_port,
             "\temail %s" % EMAIL,
             "\tacme_ca %s" % ca_url,
             "\tacme_ca_root %s" % self.https_ca.ca,
             "\tstorage file_system %s" % self.storage]
        if challenges:
            g.append("\tacme_challenges %s" % challenges)
        return "{\n%s\n}\n\n%s {\n%s\n}\n" % ("\n".join(g), NAME, proxy_block(self.upstream))

    def start(self, **config_kw):
        """Starts a psproxy run; .t0 is the monotonic time just before exec."""
        d = self.tmp / ("run-%d" % (len(self.runs) + 1))
        d.mkdir()
        cfg = self.config(**config_kw)
        t0 = time.monotonic()
        p = Proxy(d, cfg, self.https_port)
        p.t0 = t0
        p.https_port = self.https_port
        p.http_port = self.http_port
        self.runs.append(p)
        return p

    # -- paths in storage -----------------------------------------------------

    def cert_dir(self, directory_url=None):
        url = directory_url or self.pebble.directory_url
        return self.storage / "certificates" / ca_id(url) / NAME

    def stored(self, ext):
        return self.cert_dir() / ("%s.%s" % (NAME, ext))

    def stored_serial(self):
        return cert_info(PEM_RE.search(self.stored("crt").read_text()).group(0))["serial"]


@pytest.fixture
def acme(tmp_path, upstream, pebble_factory, https_ca):  # noqa: F811 - fixtures
    a = Acme(tmp_path, upstream, pebble_factory, https_ca)
    yield a
    problems = []
    for p in a.runs:
        crashed = p.proc.poll() if p.stopped is None else None
        rc, killed = p.stop()
        log = p.log_text()
        if crashed is not None:
            problems.append("psproxy (%s) exited with %s during the test" % (p.dir.name, crashed))
        elif killed:
            problems.append("psproxy (%s) ignored SIGTERM for %.0f s" % (p.dir.name,
                                                                         STOP_TIMEOUT))
        for mark in SANITIZER_MARKS:
            if mark in log:
                problems.append("sanitizer report (%s) in %s" % (mark, p.dir.name))
                break
    if problems:
        pytest.fail("; ".join(problems) + "; psproxy logs:\n" + logs_of(a))


def logs_of(a, n=5000):
    out = []
    for p in a.runs:
        out.append("--- psproxy %s:\n%s" % (p.dir.name, tail(p.log, n)))
    if a.pebble is not None:
        out.append("--- pebble (tail):\n%s" % a.pebble.log_text()[-2500:])
    return "\n".join(out)


# -- helpers --------------------------------------------------------------------


def obtained_lines(p):
    return [l for l in p.log_text().splitlines()
            if "certificate obtained" in l.lower() and NAME in l]


def first_success(a, p, timeout, path="/echo"):
    """Polls an HTTPS request (curl, trusting Pebble's root) from psproxy's
    start until one succeeds; returns (seconds since exec, CurlResult)."""
    deadline = p.t0 + timeout
    last = None
    while True:
        if p.proc.poll() is not None:
            pytest.fail("psproxy exited with %s; last curl: %r\n%s"
                        % (p.proc.returncode, last, logs_of(a)))
        r = https_curl(NAME, p.https_port, path, a.root, tmp=a.tmp, timeout=6)
        now = time.monotonic()
        if r.rc == 0 and r.status == 200:
            return now - p.t0, r
        last = r
        if now > deadline:
            pytest.fail("no successful HTTPS request to %s within %.1f s of psproxy's start; "
                        "last curl: %r\n%s" % (NAME, timeout, last, logs_of(a)))
        time.sleep(0.02)


def served_chain(port):
    """The PEM certificates psproxy sends for NAME (leaf first)."""
    sc = s_client(port, "-showcerts", servername=NAME)
    certs = PEM_RE.findall(sc.out)
    assert certs, "no certificate served for %s: %r" % (NAME, sc)
    return certs


def verify_chain(a, certs):
    """openssl verify -CAfile root -untrusted chain leaf; returns leaf info."""
    d = a.tmp / ("verify-%d" % time.monotonic_ns())
    d.mkdir()
    leaf, chain = d / "leaf.pem", d / "chain.pem"
    leaf.write_text(certs[0])
    chain.write_text("".join(certs[1:]))
    assert len(certs) >= 2, "psproxy served the leaf without Pebble's intermediate"
    p = subprocess.run(["openssl", "verify", "-CAfile", str(a.root), "-untrusted", str(chain),
                        str(leaf)], capture_output=True, timeout=20, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, "served chain does not verify against Pebble's root: %s%s" % (
        p.stdout.decode(errors="replace"), p.stderr.decode(errors="replace"))
    info = cert_info(certs[0])
    assert info["san"] == [NAME], info
    return info


def xfp(r):
    return [v for k, v in r.json()["headers"] if k.lower() == "x-forwarded-proto"]


def check_storage(a, served_serial):
    crt, key, meta = a.stored("crt"), a.stored("key"), a.stored("json")
    for f in (crt, key, meta):
        assert f.is_file(), "%s missing; storage holds: %s" % (
            f, sorted(str(x.relative_to(a.storage)) for x in a.storage.rglob("*")))
    mode = stat.S_IMODE(key.stat().st_mode)
    assert mode == 0o600, "%s has mode %o, want 600" % (key, mode)
    assert b"PRIVATE KEY" in key.read_bytes(), "%s holds no PEM private key" % key
    assert len(PEM_RE.findall(crt.read_text())) >= 2, "%s: want leaf + intermediate" % crt
    assert a.stored_serial() == served_serial, "stored leaf is not the one served"
    json.loads(meta.read_text())  # valid JSON


def assert_alive(a, p):
    assert p.proc.poll() is None, "psproxy exited (%s)\n%s" % (p.proc.returncode, logs_of(a))


def obtain(a, **config_kw):
    """A first run on empty storage up to the first successful request;
    returns (proxy, seconds to first success, CurlResult)."""
    p = a.start(**config_kw)
    secs, r = first_success(a, p, FIRST_CERT_TIMEOUT)
    return p, secs, r


def check_obtained(a, p, r):
    """What every first certificate must satisfy; returns the leaf's serial."""
    assert r.status == 200, r
    assert r.json()["path"] == "/echo", r
    assert xfp(r) == ["https"], "X-Forwarded-Proto at the upstream: %r" % xfp(r)
    info = verify_chain(a, served_chain(p.https_port))
    check_storage(a, info["serial"])
    lines = obtained_lines(p)
    assert len(lines) == 1, "want one 'certificate obtained ... %s' line, got %r\n%s" % (
        NAME, lines, logs_of(a))
    assert a.pebble.issued_seen() == 1, "Pebble issued %d certificates\n%s" % (
        a.pebble.issued_seen(), logs_of(a))
    return info["serial"]


class KeepAlive(http.client.HTTPSConnection):
    """HTTPS to 127.0.0.1:PORT with SNI and verification for NAME."""

    def __init__(self, port, ctx):
        super().__init__(NAME, port, context=ctx, timeout=10)
        self._ctx, self._port = ctx, port

    def connect(self):
        s = socket.create_connection(("127.0.0.1", self._port), timeout=10)
        self.sock = self._ctx.wrap_socket(s, server_hostname=NAME)

    def get(self, path):
        self.request("GET", path)
        r = self.getresponse()
        return r.status, r.read()


# -- tests ----------------------------------------------------------------------


def test_http01_first_certificate(acme, record_property):
    acme.start_pebble()
    p, secs, r = obtain(acme)
    record_property("time_to_first_certificate_s", "%.3f" % secs)
    print("\ntime to first certificate (HTTP-01, psproxy start -> first HTTPS 200): %.3f s"
          % secs)
    check_obtained(acme, p, r)
    assert "Attempting to validate w/ HTTP" in acme.pebble.log_text(), \
        "Pebble never validated over HTTP-01\n" + logs_of(acme)
    assert_alive(acme, p)


def test_tls_alpn01_first_certificate(acme, record_property):
    acme.start_pebble()
    p, secs, r = obtain(acme, challenges="tls-alpn-01")
    record_property("time_to_first_certificate_s", "%.3f" % secs)
    print("\ntime to first certificate (TLS-ALPN-01): %.3f s" % secs)
    check_obtained(acme, p, r)
    plog = acme.pebble.log_text()
    assert "Attempting to validate w/ HTTP" not in plog, \
        "acme_challenges tls-alpn-01, yet Pebble validated over HTTP-01\n" + logs_of(acme)
    assert re.search(r"Starting \d+ validations", plog), logs_of(acme)
    assert_alive(acme, p)


def test_restart_serves_stored_certificate_without_new_order(acme):
    acme.start_pebble()
    p1, _, r = obtain(acme)
    serial = verify_chain(acme, served_chain(p1.https_port))["serial"]
    rc, killed = p1.stop()
    assert not killed and rc == 0, "first run: exit %s killed=%s\n%s" % (rc, killed,
                                                                        logs_of(acme))
    orders = acme.pebble.orders_seen()
    assert orders >= 1, acme.pebble.log_text()[-2000:]

    p2 = acme.start()
    secs, r2 = first_success(acme, p2, RESTART_SERVE_WITHIN)
    print("\nrestart with storage: first HTTPS 200 after %.3f s" % secs)
    assert xfp(r2) == ["https"], r2
    info = verify_chain(acme, served_chain(p2.https_port))
    assert info["serial"] == serial == acme.stored_serial(), \
        "restart served serial %X, first run %X" % (info["serial"], serial)
    time.sleep(1.0)  # a grace: room for a wrong background order to show up
    assert obtained_lines(p2) == [], "second run obtained a certificate:\n" + logs_of(acme)
    assert acme.pebble.orders_seen() == orders, \
        "Pebble saw a new order after the restart\n" + logs_of(acme)
    assert acme.pebble.issued_seen() == 1, logs_of(acme)
    assert_alive(acme, p2)


def test_bad_nonce_retries(acme):
    # 30%: most orders meet several rejections, and 11 in a row on one POST
    # (psproxy re-signs up to 10 times) is a 1 in 500,000 chance; at 50% it
    # was 1 in 2,048 per POST, and the test failed about once in 300 runs
    acme.start_pebble(nonce_reject=30)
    p, secs, r = obtain(acme)
    print("\ntime to first certificate with PEBBLE_WFE_NONCEREJECT=30: %.3f s" % secs)
    check_obtained(acme, p, r)
    assert "Configured to reject 30% of good nonces" in acme.pebble.log_text()
    assert_alive(acme, p)


def test_ca_down_serves_stored_certificate(acme):
    acme.start_pebble()
    p1, _, _ = obtain(acme)
    serial = acme.stored_serial()
    p1.stop()
    acme.pebble.stop()

    p2 = acme.start()
    secs, r = first_success(acme, p2, RESTART_SERVE_WITHIN)
    assert xfp(r) == ["https"], r
    info = verify_chain(acme, served_chain(p2.https_port))
    assert info["serial"] == serial
    time.sleep(1.0)  # a grace: a wrong "obtained" would show by now
    assert obtained_lines(p2) == [], logs_of(acme)
    assert https_curl(NAME, p2.https_port, "/echo", acme.root, tmp=acme.tmp).status == 200
    assert_alive(acme, p2)


def test_ca_down_empty_storage_backs_off_and_serves_no_certificate(acme):
    acme.start_pebble()
    dead = "https://127.0.0.1:%d/dir" % closed_port()  # nothing listens there
    acme.pebble.stop()
    p = acme.start(ca_url=dead)
    # Still running, and says it will try again.
    def backoff_lines():
        return [l for l in p.log_text().splitlines() if BACKOFF_RE.search(l)]

    try:
        wait_for(lambda: p.proc.poll() is not None or backoff_lines(), 15.0, interval=0.1,
                 what="a back-off/retry line in psproxy's log")
    except AssertionError as e:
        pytest.fail("%s\n%s" % (e, logs_of(acme)))
    assert_alive(acme, p)
    lines = backoff_lines()
    print("\nback-off line: %s" % lines[0])

    # Handshakes for the name fail, promptly, with no certificate at all.
    for _ in range(3):
        t = time.monotonic()
        try:
            s = tls_connect(p.https_port, NAME, client_context(None), timeout=5.0)
        except ssl.SSLError:
            pass
        except (socket.timeout, TimeoutError):
            pytest.fail("handshake for %s hung instead of failing\n%s" % (NAME, logs_of(acme)))
        except (ConnectionResetError, BrokenPipeError):
            pass
        else:
            der = s.getpeercert(binary_form=True)
            s.close()
            pytest.fail("psproxy served a certificate for %s with no certificate obtained: %r"
                        % (NAME, cert_info(der)))
        assert time.monotonic() - t < 5.0
    sc = s_client(p.https_port, servername=NAME)
    assert "BEGIN CERTIFICATE" not in sc.out, sc
    assert not sc.established, sc
    r = https_curl(NAME, p.https_port, "/echo", acme.root, tmp=acme.tmp, timeout=10)
    assert r.rc != 0 and r.status == 0, r
    assert not acme.stored("crt").exists()
    time.sleep(1.0)  # a real wait: it keeps running, backing off, obtaining nothing
    assert_alive(acme, p)
    assert obtained_lines(p) == []


@pytest.mark.skipif(os.environ.get("PSPROXY_FAST") == "1",
                    reason="PSPROXY_FAST=1: renewal waits ~20 s")
def test_renewal_by_lifetime_keeps_old_connections(acme):
    acme.start_pebble(validity=30)
    p, secs, r = obtain(acme)
    ctx = ssl.create_default_context(cafile=str(acme.root))
    old = KeepAlive(p.https_port, ctx)
    try:
        status, body = old.get("/echo?n=1")
        assert status == 200, body
        old_sock = old.sock
        serial_a = cert_info(old_sock.getpeercert(binary_form=True))["serial"]
        assert serial_a == acme.stored_serial()

        # 30 s lifetime: a renewal is due with half of it left, ~15 s in.
        t = time.monotonic()

        def new_serial():
            assert_alive(acme, p)
            try:
                s = tls_connect(p.https_port, NAME, ctx)
            except ssl.SSLError as e:
                pytest.fail("handshake for %s failed %.1f s after the first request (expired "
                            "without renewal?): %r\n%s" % (NAME, time.monotonic() - t, e,
                                                            logs_of(acme)))
            try:
                serial = cert_info(s.getpeercert(binary_form=True))["serial"]
            finally:
                s.close()
            return serial if serial != serial_a else None

        try:
            serial_b = wait_for(new_serial, 40.0, interval=0.5,
                                what="a renewed certificate on new handshakes")
        except AssertionError as e:
            pytest.fail("%s\n%s" % (e, logs_of(acme)))
        print("\nrenewed certificate served %.1f s after the first request"
              % (time.monotonic() - t))
        assert serial_b == acme.stored_serial(), "served renewal is not the stored one"
        verify_chain(acme, served_chain(p.https_port))

        status, body = old.get("/echo?n=2")
        assert status == 200, body
        assert old.sock is old_sock, "the old connection was replaced"
        assert cert_info(old.sock.getpeercert(binary_form=True))["serial"] == serial_a
        # A line that says this order is a renewal: after the first
        # certificate, and not just the "renewal due in Ns" schedule note.
        after = p.log_text().split(obtained_lines(p)[0], 1)[1].splitlines()
        renew = [l for l in after
                 if "renew" in re.sub(r"renewal due in \S+", "", l, flags=re.I).lower()]
        assert renew, "no line in psproxy's log says it is renewing %s\n%s" % (NAME,
                                                                            logs_of(acme))
        assert len(obtained_lines(p)) >= 2, \
            "renewed certificate installed without a second 'certificate obtained' line\n" \
            + logs_of(acme)
    finally:
        old.close()
    assert acme.pebble.issued_seen() >= 2
    assert_alive(acme, p)


@pytest.mark.parametrize("challenges", [None, "tls-alpn-01", "http-01"])
def test_validate_does_not_contact_the_ca(tmp_path, https_ca, challenges):  # noqa: F811
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(8)
    lsock.setblocking(False)
    try:
        port = lsock.getsockname()[1]
        storage = tmp_path / "storage"
        g = ["\tadmin off", "\tworkers 1", "\thttp_port %d" % free_port(),
             "\thttps_port %d" % free_port(), "\temail %s" % EMAIL,
             "\tacme_ca https://127.0.0.1:%d/dir" % port, "\tacme_ca_root %s" % https_ca.ca,
             "\tstorage file_system %s" % storage]
        if challenges:
            g.append("\tacme_challenges %s" % challenges)
        f = tmp_path / "acme.conf"
        f.write_text("{\n%s\n}\n\n%s {\n%s\n}\n" % ("\n".join(g), NAME,
                                                   proxy_block("127.0.0.1:9")))
        t = time.monotonic()
        p = subprocess.run([PSPROXY, "validate", "-c", str(f)], capture_output=True,
                           timeout=10, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stderr.decode(errors="replace")
        assert time.monotonic() - t < 5.0
        try:
            c, _ = lsock.accept()
            c.close()
            pytest.fail("psproxy validate connected to the ACME CA")
        except BlockingIOError:
            pass
        assert not (storage / "certificates").exists(), "validate wrote certificates"
    finally:
        lsock.close()


def test_validate_rejects_unknown_challenge_type(tmp_path, https_ca):  # noqa: F811
    f = tmp_path / "bad.conf"
    f.write_text("{\n\tadmin off\n\temail %s\n\tacme_ca https://127.0.0.1:1/dir\n"
                 "\tacme_challenges dns-99\n}\n\n%s {\n%s\n}\n"
                 % (EMAIL, NAME, proxy_block("127.0.0.1:9")))
    p = subprocess.run([PSPROXY, "validate", "-c", str(f)], capture_output=True, timeout=10,
                       stdin=subprocess.DEVNULL)
    err = p.stderr.decode(errors="replace")
    assert p.returncode != 0, err
    assert "bad.conf:5:" in err, err
