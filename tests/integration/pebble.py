"""A real ACME CA on loopback for the ACME integration tests (test_acme.py):
Pebble with pebble-challtestsrv as its mock DNS, recipe in
/work/shared/ACME.md.

- pebble_https_ca(dir): a CA and a leaf (SAN localhost, 127.0.0.1) made with
  the openssl CLI for Pebble's own HTTPS listener; psproxy trusts that CA
  through `acme_ca_root`.
- Pebble(...): challtestsrv (DNS only, every name resolves to 127.0.0.1, no
  AAAA) plus pebble on free loopback ports, validating HTTP-01 on HTTP_PORT
  and TLS-ALPN-01 on TLS_PORT (psproxy's http_port/https_port). After start,
  .root and .intermediate are Pebble's issuing root and intermediate (PEM
  files fetched from the management port: Pebble makes new ones at every
  start).
- The `pebble_factory` fixture starts them and always reaps them.

Every wait is bounded; every child is reaped.
"""

import json
import os
import shutil
import socket
import ssl
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import free_port, reap, tail

PEBBLE = shutil.which("pebble")
CHALLTESTSRV = shutil.which("pebble-challtestsrv")
OPENSSL = "openssl"
START_TIMEOUT = 15.0
CMD_TIMEOUT = 20

# The names the tests ask certificates for resolve to 127.0.0.1 in the mock DNS.
MISSING_REASON = ("pebble / pebble-challtestsrv not installed "
                  "(apt-get install pebble): no local ACME CA to test against")


def available():
    return bool(PEBBLE and CHALLTESTSRV)


def _run(cmd, timeout=CMD_TIMEOUT):
    p = subprocess.run([str(c) for c in cmd], capture_output=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s%s" % (
            " ".join(map(str, cmd)), p.returncode,
            p.stdout.decode(errors="replace")[-2000:], p.stderr.decode(errors="replace")[-2000:]))
    return p


class HttpsCa:
    """Files of the CA and leaf for Pebble's HTTPS listener (and management)."""

    def __init__(self, directory):
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        self.ca_key = d / "pebble-https-ca.key"
        self.ca = d / "pebble-https-ca.pem"
        self.key = d / "pebble-https.key"
        self.crt = d / "pebble-https.pem"
        csr = d / "pebble-https.csr"
        ext = d / "pebble-https.ext"
        ec = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
        _run([OPENSSL, "req", "-x509", *ec, "-nodes", "-keyout", self.ca_key, "-out", self.ca,
              "-days", "2", "-subj", "/O=psproxy tests/CN=Pebble HTTPS test CA",
              "-addext", "basicConstraints=critical,CA:TRUE",
              "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        ext.write_text("basicConstraints=critical,CA:FALSE\n"
                       "keyUsage=critical,digitalSignature\n"
                       "extendedKeyUsage=serverAuth\n"
                       "subjectAltName=DNS:localhost,IP:127.0.0.1\n")
        _run([OPENSSL, "req", "-new", *ec, "-nodes", "-keyout", self.key, "-out", csr,
              "-subj", "/O=psproxy tests/CN=localhost"])
        _run([OPENSSL, "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
              "-CAcreateserial", "-days", "2", "-sha256", "-extfile", ext, "-out", self.crt])
        os.chmod(self.ca_key, 0o600)
        os.chmod(self.key, 0o600)

    def context(self):
        return ssl.create_default_context(cafile=str(self.ca))


def pebble_https_ca(directory):
    return HttpsCa(directory)


def _wait_tcp(port, procs, deadline, what, logs):
    while True:
        for proc, log in zip(procs, logs):
            if proc.poll() is not None:
                raise AssertionError("%s: a child exited with %s before %s listened on %d; "
                                     "log:\n%s" % (what, proc.returncode, what, port, tail(log)))
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise AssertionError("%s not listening on 127.0.0.1:%d after %.0f s; logs:\n%s"
                                 % (what, port, START_TIMEOUT,
                                    "\n".join(tail(l) for l in logs)))
        time.sleep(0.02)


class Pebble:
    """pebble-challtestsrv (mock DNS) + pebble, logs and config in DIRECTORY.

    http_port/tls_port: where Pebble validates HTTP-01 / TLS-ALPN-01.
    validity: certificateValidityPeriod in seconds (None: Pebble's default).
    nonce_reject: PEBBLE_WFE_NONCEREJECT (percent of good nonces rejected).
    port: reuse this ACME port (for a restart on the same directory URL).
    """

    def __init__(self, directory, https_ca, *, http_port, tls_port, validity=None,
                 nonce_reject=0, port=None):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.https_ca = https_ca
        self.http_port = http_port
        self.tls_port = tls_port
        self.validity = validity
        self.nonce_reject = nonce_reject
        self.port = port or free_port()
        self.mgmt_port = free_port()
        self.dns_port = free_port()
        self.dns_mgmt_port = free_port()
        self.dns = None
        self.proc = None
        self.starts = 0
        self.root = self.dir / "pebble-root.pem"
        self.intermediate = self.dir / "pebble-intermediate.pem"
        self.chain_roots = self.dir / "pebble-roots-all.pem"

    # -- lifecycle ----------------------------------------------------------

    @property
    def directory_url(self):
        return "https://127.0.0.1:%d/dir" % self.port

    @property
    def running(self):
        return self.proc is not None and self.proc.poll() is None

    def start(self):
        """Starts challtestsrv and pebble; waits until the directory answers
        and fetches the root and intermediate. Bounded by START_TIMEOUT."""
        assert not self.running
        self.starts += 1
        n = self.starts
        cfg = {
            "listenAddress": "127.0.0.1:%d" % self.port,
            "managementListenAddress": "127.0.0.1:%d" % self.mgmt_port,
            "certificate": str(self.https_ca.crt),
            "privateKey": str(self.https_ca.key),
            "httpPort": self.http_port,
            "tlsPort": self.tls_port,
            "ocspResponderURL": "",
            "externalAccountBindingRequired": False,
        }
        if self.validity is not None:
            cfg["certificateValidityPeriod"] = int(self.validity)
        self.config = self.dir / ("pebble-config-%d.json" % n)
        self.config.write_text(json.dumps({"pebble": cfg}, indent=2))
        self.dns_log = self.dir / ("challtestsrv-%d.log" % n)
        self.log = self.dir / ("pebble-%d.log" % n)
        deadline = time.monotonic() + START_TIMEOUT

        self._dns_logf = open(self.dns_log, "w")
        self.dns = subprocess.Popen(
            [CHALLTESTSRV, "-dns01", "127.0.0.1:%d" % self.dns_port, "-http01", "",
             "-https01", "", "-tlsalpn01", "",
             "-management", "127.0.0.1:%d" % self.dns_mgmt_port,
             "-defaultIPv4", "127.0.0.1", "-defaultIPv6", ""],
            stdin=subprocess.DEVNULL, stdout=self._dns_logf, stderr=subprocess.STDOUT,
            cwd=str(self.dir))
        try:
            _wait_tcp(self.dns_mgmt_port, [self.dns], deadline, "pebble-challtestsrv",
                      [self.dns_log])
            _wait_tcp(self.dns_port, [self.dns], deadline, "pebble-challtestsrv DNS",
                      [self.dns_log])

            env = dict(os.environ)
            env.update({"PEBBLE_VA_NOSLEEP": "1",
                        "PEBBLE_WFE_NONCEREJECT": str(self.nonce_reject),
                        "PEBBLE_AUTHZREUSE": "0"})
            self._logf = open(self.log, "w")
            self.proc = subprocess.Popen(
                [PEBBLE, "-config", str(self.config),
                 "-dnsserver", "127.0.0.1:%d" % self.dns_port],
                stdin=subprocess.DEVNULL, stdout=self._logf, stderr=subprocess.STDOUT,
                env=env, cwd=str(self.dir))
            procs, logs = [self.dns, self.proc], [self.dns_log, self.log]
            _wait_tcp(self.port, procs, deadline, "pebble", logs)
            _wait_tcp(self.mgmt_port, procs, deadline, "pebble management", logs)
            self._wait_directory(deadline)
            self.fetch_roots()
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_directory(self, deadline):
        ctx = self.https_ca.context()
        last = None
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.directory_url, context=ctx, timeout=2) as r:
                    doc = json.loads(r.read())
                if "newOrder" in doc:
                    self.directory = doc
                    return
                last = doc
            except Exception as e:  # noqa: BLE001 - keep polling until the deadline
                last = e
            time.sleep(0.05)
        raise AssertionError("Pebble directory %s not answering after %.0f s (last: %r); "
                             "log:\n%s" % (self.directory_url, START_TIMEOUT, last,
                                           tail(self.log)))

    def mgmt_get(self, path):
        with urllib.request.urlopen("https://127.0.0.1:%d%s" % (self.mgmt_port, path),
                                    context=self.https_ca.context(), timeout=5) as r:
            return r.read()

    def fetch_roots(self):
        """Pebble's issuing root and intermediate, as PEM files."""
        root = self.mgmt_get("/roots/0")
        inter = self.mgmt_get("/intermediates/0")
        assert b"BEGIN CERTIFICATE" in root, root[:200]
        assert b"BEGIN CERTIFICATE" in inter, inter[:200]
        self.root.write_bytes(root)
        self.intermediate.write_bytes(inter)

    def stop(self):
        """Stops pebble and challtestsrv (SIGTERM, then SIGKILL); idempotent."""
        for attr, fattr in (("proc", "_logf"), ("dns", "_dns_logf")):
            proc = getattr(self, attr)
            if proc is not None:
                reap(proc, timeout=5.0)
                setattr(self, attr, None)
            f = getattr(self, fattr, None)
            if f is not None:
                f.close()
                setattr(self, fattr, None)

    # -- what Pebble saw ------------------------------------------------------

    def log_text(self):
        parts = []
        for n in range(1, self.starts + 1):
            parts.append(tail(self.dir / ("pebble-%d.log" % n), 1 << 20))
        return "\n".join(parts)

    def orders_seen(self):
        """How many new orders all Pebble runs logged ("Added order")."""
        return self.log_text().count("Added order")

    def issued_seen(self):
        """How many certificates all Pebble runs logged as issued."""
        return self.log_text().count("Issued certificate serial")


@pytest.fixture(scope="session")
def https_ca(tmp_path_factory):
    return HttpsCa(tmp_path_factory.mktemp("pebble-https-ca"))


@pytest.fixture
def pebble_factory(tmp_path, https_ca):
    """start(http_port=, tls_port=, validity=None, nonce_reject=0) -> a
    started Pebble in tmp_path/pebble-N; all are stopped at teardown."""
    made = []

    def start(**kw):
        p = Pebble(tmp_path / ("pebble-%d" % (len(made) + 1)), https_ca, **kw)
        made.append(p)
        return p.start()

    yield start
    for p in made:
        p.stop()
