"""`psproxy import-caddy DIR -c FILE` (issue #5): moving from Caddy without
a new order.

- With Pebble: Caddy 2.6.2 obtains a certificate for api.photospots.live
  into its data directory; after the import, psproxy serves that very
  certificate (same serial) with no new order, the account Caddy registered
  is psproxy's, a second import changes nothing, and Caddy's directory is
  byte for byte what it was.
- Without Pebble: a Caddy directory built here (certmagic's layout) with
  the cases the import must sort out: another CA's certificates, an expired
  one, a key that does not match, a wildcard, psproxy certificates that
  expire earlier or later, accounts with a P-256 and an RSA key, and a
  storage inside Caddy's directory.

The import runs as `psproxy import-caddy DIR -c CONF`. Every wait is
bounded; every child is reaped.
"""

import datetime
import hashlib
import json
import os
import re
import shutil
import stat
import subprocess
import time
from pathlib import Path

import pytest

import peers
from conftest import (PSPROXY, ROOT, SANITIZER_MARKS, Proxy, free_port, proxy_block, reap,
                      tail)
from pebble import https_ca, pebble_factory  # noqa: F401 - fixtures
from tls_util import cert_info, https_curl, s_client, wait_for

CADDY = shutil.which("caddy")
NAME = "api.photospots.live"
EMAIL = "admin@photospots.live"
LE = "https://acme-v02.api.letsencrypt.org/directory"
LE_KEY = "acme-v02.api.letsencrypt.org-directory"
CADDY_CERT_TIMEOUT = 30.0  # Caddy takes ~0.6 s here (ACME.md)
SERVE_TIMEOUT = 10.0
IMPORT_TIMEOUT = 60
PEM_RE = re.compile(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n?", re.S)


# -- the import command -----------------------------------------------------------


def _cli_wired():
    try:
        p = subprocess.run([PSPROXY, "--help"], capture_output=True, timeout=10,
                           stdin=subprocess.DEVNULL)
    except OSError:
        return False
    return b"import-caddy" in p.stdout


@pytest.fixture(scope="session")
def importer():
    """run(caddy_dir, storage, ca_url, conf) -> CompletedProcess (text):
    `psproxy import-caddy DIR -c CONF` (the config names storage and CA)."""
    assert _cli_wired(), "psproxy --help does not list import-caddy"

    def run(caddy_dir, storage, ca_url, conf):
        return _run([PSPROXY, "import-caddy", str(caddy_dir), "-c", str(conf)])
    return run


def _run(cmd):
    p = subprocess.run(cmd, capture_output=True, timeout=IMPORT_TIMEOUT,
                       stdin=subprocess.DEVNULL, text=True)
    for mark in SANITIZER_MARKS:
        assert mark not in p.stdout + p.stderr, "sanitizer report from %s:\n%s%s" % (
            cmd[0], p.stdout, p.stderr)
    return p


def lines(p, prefix):
    return [l for l in p.stdout.splitlines() if l.startswith(prefix)]


def config(storage, ca_url, *, http_port=80, https_port=443, ca_root=None, body=None):
    g = ["\tadmin off", "\tworkers 1", "\temail %s" % EMAIL,
         "\thttp_port %d" % http_port, "\thttps_port %d" % https_port,
         "\tacme_ca %s" % ca_url, "\tstorage file_system %s" % storage]
    if ca_root:
        g.append("\tacme_ca_root %s" % ca_root)
    return "{\n%s\n}\n\n%s {\n%s\n}\n" % ("\n".join(g), NAME, body or "\trespond ok")


def snapshot(d):
    """Every entry under D: relative path -> (mode, sha256 or 'dir')."""
    out = {}
    for p in sorted(Path(d).rglob("*")):
        st = p.lstat()
        if stat.S_ISDIR(st.st_mode):
            what = "dir"
        else:
            what = hashlib.sha256(p.read_bytes()).hexdigest()
        out[str(p.relative_to(d))] = (stat.S_IMODE(st.st_mode), st.st_mtime_ns, what)
    return out


def ca_id(directory_url):
    """psproxy's storage directory for a CA, as acme/store.h defines it."""
    m = re.match(r"^[a-z]+://([^/]+)(.*)$", directory_url)
    s = (m.group(1).replace(":", "-") + m.group(2).replace("/", "-")).lower()
    return re.sub(r"[^a-z0-9._-]", "_", s)


# -- with Caddy and Pebble ----------------------------------------------------------


class Caddy:
    """Caddy 2.6.2 on a Caddyfile asking Pebble for NAME; HOME and the XDG
    directories point into the test's directory."""

    def __init__(self, tmp, pebble, https_ca_file, http_port, https_port):
        self.dir = tmp / "caddy"
        self.dir.mkdir()
        self.data = self.dir / "data"
        self.caddyfile = self.dir / "Caddyfile"
        self.caddyfile.write_text(
            "{\n\tadmin off\n\temail %s\n\tacme_ca %s\n\tacme_ca_root %s\n"
            "\thttp_port %d\n\thttps_port %d\n\tstorage file_system %s\n}\n\n"
            "%s {\n\trespond ok\n}\n" % (EMAIL, pebble.directory_url, https_ca_file, http_port,
                                         https_port, self.data, NAME))
        self.log = self.dir / "caddy.log"
        self._logf = open(self.log, "w")
        env = dict(os.environ, HOME=str(self.dir / "home"),
                   XDG_DATA_HOME=str(self.dir / "xdg-data"),
                   XDG_CONFIG_HOME=str(self.dir / "xdg-config"))
        self.proc = subprocess.Popen([CADDY, "run", "--config", str(self.caddyfile),
                                      "--adapter", "caddyfile"], env=env, cwd=str(self.dir),
                                     stdin=subprocess.DEVNULL, stdout=self._logf,
                                     stderr=subprocess.STDOUT)

    def crt(self, issuer):
        return self.data / "certificates" / issuer / NAME / ("%s.crt" % NAME)

    def stop(self):
        rc = reap(self.proc, timeout=10.0)
        if not self._logf.closed:
            self._logf.close()
        return rc


@pytest.fixture
def caddy_run(tmp_path, pebble_factory, https_ca):  # noqa: F811 - fixtures
    """Pebble on fresh ports and a Caddy that has obtained NAME from it and
    stopped; yields (pebble, caddy, http_port, https_port)."""
    peers.need("pebble")
    peers.need("caddy")
    http_port, https_port = free_port(), free_port()
    pebble = pebble_factory(http_port=http_port, tls_port=https_port)
    caddy = Caddy(tmp_path, pebble, https_ca.ca, http_port, https_port)
    try:
        issuer = "127.0.0.1-%d-dir" % pebble.port  # certmagic's issuer key
        acct = caddy.data / "acme" / issuer / "users" / EMAIL / "admin.json"

        def obtained():
            if caddy.proc.poll() is not None:
                raise AssertionError("caddy exited with %s:\n%s" % (caddy.proc.returncode,
                                                                     tail(caddy.log)))
            crt = caddy.crt(issuer)
            return crt.is_file() and "END CERTIFICATE" in crt.read_text() and acct.is_file()
        try:
            wait_for(obtained, CADDY_CERT_TIMEOUT, what="Caddy's certificate in its storage")
        except AssertionError as e:
            raise AssertionError("%s\ncaddy log:\n%s\npebble log:\n%s" % (
                e, tail(caddy.log), pebble.log_text()[-3000:]))
        # certmagic writes .crt, .key, .json in that order: let it finish.
        def meta_written():
            try:
                return json.loads(caddy.crt(issuer).with_suffix(".json").read_text())
            except (OSError, ValueError):
                return None
        wait_for(meta_written, 20.0, what="Caddy's certificate metadata")
        rc, killed = caddy.stop()
        assert not killed, "caddy ignored SIGTERM"
        caddy.issuer = issuer
        caddy.account = acct
        yield pebble, caddy, http_port, https_port
    finally:
        caddy.stop()


def served_serial(port):
    sc = s_client(port, "-showcerts", servername=NAME)
    certs = PEM_RE.findall(sc.out)
    assert certs, "no certificate served for %s: %r" % (NAME, sc)
    return cert_info(certs[0])["serial"]


def test_import_caddy_serves_caddys_certificate_without_a_new_order(
        tmp_path, caddy_run, importer, upstream, https_ca):  # noqa: F811
    pebble, caddy, http_port, https_port = caddy_run
    caddy_serial = cert_info(caddy.crt(caddy.issuer).read_text())["serial"]
    caddy_kid = json.loads(caddy.account.read_text())["location"]
    orders_before = pebble.orders_seen()
    assert pebble.issued_seen() == 1, pebble.log_text()[-3000:]
    before = snapshot(caddy.data)

    storage = tmp_path / "storage"
    conf = tmp_path / "psproxy.conf"
    conf.write_text(config(storage, pebble.directory_url, http_port=http_port,
                           https_port=https_port, ca_root=https_ca.ca,
                           body=proxy_block(upstream)))
    p = importer(caddy.data, storage, pebble.directory_url, conf)
    assert p.returncode == 0, p.stdout + p.stderr
    assert not lines(p, "error"), p.stdout
    imported = lines(p, "imported certificate %s " % NAME)
    assert len(imported) == 1, p.stdout
    assert str(caddy.crt(caddy.issuer)) in imported[0], p.stdout
    assert len(lines(p, "imported account %s " % caddy_kid)) == 1, p.stdout
    assert re.search(r"2 imported, 0 skipped, 0 failed", p.stdout), p.stdout
    assert snapshot(caddy.data) == before, "the import changed Caddy's directory"

    # What psproxy's storage holds now.
    cdir = storage / "certificates" / ca_id(pebble.directory_url) / NAME
    assert cert_info((cdir / ("%s.crt" % NAME)).read_text())["serial"] == caddy_serial
    assert stat.S_IMODE((cdir / ("%s.key" % NAME)).stat().st_mode) == 0o600
    meta = json.loads((cdir / ("%s.json" % NAME)).read_text())
    assert meta["imported_from"] == str(caddy.crt(caddy.issuer).resolve()), meta
    assert meta["not_after"] > time.time(), meta
    acct = json.loads((storage / "acme" / ca_id(pebble.directory_url) / "account.json")
                      .read_text())
    assert acct["kid"] == caddy_kid, acct

    # psproxy serves the imported certificate at once, without ordering.
    run = tmp_path / "run"
    run.mkdir()
    proxy = Proxy(run, conf.read_text(), https_port)
    try:
        t0 = time.monotonic()
        while True:
            assert proxy.proc.poll() is None, "psproxy exited:\n" + proxy.log_text()
            r = https_curl(NAME, https_port, "/echo", pebble.root, tmp=tmp_path, timeout=6)
            if r.rc == 0 and r.status == 200:
                break
            assert time.monotonic() - t0 < SERVE_TIMEOUT, "no HTTPS success: %r\n%s" % (
                r, proxy.log_text())
            time.sleep(0.05)
        assert served_serial(https_port) == caddy_serial, "psproxy serves another certificate"
        time.sleep(0.5)  # a grace: an order would start at once: give it the chance to show
        log = proxy.log_text()
        assert "ordering a certificate" not in log, log
        assert "serving the stored certificate" in log, log
        assert pebble.orders_seen() == orders_before, pebble.log_text()[-3000:]
        assert pebble.issued_seen() == 1
    finally:
        rc, killed = proxy.stop()
        log = proxy.log_text()
        for mark in SANITIZER_MARKS:
            assert mark not in log, log[-6000:]
        assert not killed, "psproxy ignored SIGTERM"

    # Again: everything is there already, nothing is written.
    stored = snapshot(storage)
    p = importer(caddy.data, storage, pebble.directory_url, conf)
    assert p.returncode == 0, p.stdout + p.stderr
    assert len(lines(p, "skipped certificate %s " % NAME)) == 1, p.stdout
    assert "already in psproxy's storage" in p.stdout, p.stdout
    assert len(lines(p, "skipped account ")) == 1, p.stdout
    assert "psproxy already has an account" in p.stdout, p.stdout
    assert not lines(p, "imported"), p.stdout
    assert snapshot(storage) == stored, "a second import rewrote psproxy's storage"
    assert snapshot(caddy.data) == before, "the import changed Caddy's directory"


# -- a Caddy directory made here ------------------------------------------------------


class Pki:
    """Self-signed leaves and keys made with the `cryptography` package."""

    def __init__(self):
        peers.need("cryptography")
        import cryptography.x509
        self.x509 = cryptography.x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec, rsa
        from cryptography.x509.oid import NameOID
        self.hashes, self.ser, self.ec, self.rsa, self.oid = (hashes, serialization, ec, rsa,
                                                              NameOID)

    def ec_key(self):
        return self.ec.generate_private_key(self.ec.SECP256R1())

    def rsa_key(self):
        return self.rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def key_pem(self, key, traditional=True):
        fmt = (self.ser.PrivateFormat.TraditionalOpenSSL if traditional
               else self.ser.PrivateFormat.PKCS8)
        return key.private_bytes(self.ser.Encoding.PEM, fmt, self.ser.NoEncryption())

    def cert(self, key, name, days_from, days_to):
        x = self.x509
        now = datetime.datetime.now(datetime.timezone.utc)
        subject = x.Name([x.NameAttribute(self.oid.COMMON_NAME, name)])
        b = (x.CertificateBuilder().subject_name(subject).issuer_name(subject)
             .public_key(key.public_key()).serial_number(x.random_serial_number())
             .not_valid_before(now + datetime.timedelta(days=days_from))
             .not_valid_after(now + datetime.timedelta(days=days_to))
             .add_extension(x.SubjectAlternativeName([x.DNSName(name)]), critical=False))
        c = b.sign(key, self.hashes.SHA256())
        return c.public_bytes(self.ser.Encoding.PEM), c.serial_number


def put_cert(pki, base, issuer, name, *, days_from=-1, days_to=60, key=None, cert_key=None):
    """certmagic's three files for NAME under BASE/certificates/ISSUER;
    returns the leaf's serial."""
    safe = name.replace("*", "wildcard_")
    d = base / "certificates" / issuer / safe
    d.mkdir(parents=True)
    cert_key = cert_key or pki.ec_key()
    crt, serial = pki.cert(cert_key, name, days_from, days_to)
    (d / (safe + ".crt")).write_bytes(crt)
    (d / (safe + ".key")).write_bytes(pki.key_pem(key or cert_key))
    (d / (safe + ".json")).write_text(json.dumps({"sans": [name], "issuer_data": {}}))
    for f in d.iterdir():
        f.chmod(0o600)
    return serial


def put_account(pki, base, issuer, email, location, key, origin=LE):
    user = email.split("@")[0] if email != "default" else "default"
    d = base / "acme" / issuer / "users" / email
    d.mkdir(parents=True)
    (d / (user + ".json")).write_text(json.dumps({
        "status": "valid", "contact": ["mailto:" + email] if "@" in email else [],
        "termsOfServiceAgreed": True, "orders": origin + "/orders/1", "location": location},
        indent="\t"))
    (d / (user + ".key")).write_bytes(pki.key_pem(key))
    return d / (user + ".json")


def psproxy_cert(pki, storage, name, days_to):
    """A certificate for NAME in psproxy's own storage for Let's Encrypt."""
    d = storage / "certificates" / LE_KEY / name
    d.mkdir(parents=True)
    key = pki.ec_key()
    crt, serial = pki.cert(key, name, -1, days_to)
    (d / (name + ".crt")).write_bytes(crt)
    (d / (name + ".key")).write_bytes(pki.key_pem(key, traditional=False))
    (d / (name + ".json")).write_text(json.dumps({"not_after": 0}))
    return serial


def stored_serial(storage, name):
    safe = name.replace("*", "wildcard_")
    crt = storage / "certificates" / LE_KEY / safe / (safe + ".crt")
    return cert_info(crt.read_text())["serial"]


def test_import_caddy_sorts_out_what_it_finds(tmp_path, importer):
    pki = Pki()
    caddy = tmp_path / "caddy"
    storage = tmp_path / "storage"
    conf = tmp_path / "psproxy.conf"
    conf.write_text(config(storage, LE))

    good = put_cert(pki, caddy, LE_KEY, "good.example.com")
    wild = put_cert(pki, caddy, LE_KEY, "*.example.com")
    put_cert(pki, caddy, LE_KEY, "expired.example.com", days_from=-90, days_to=-1)
    put_cert(pki, caddy, LE_KEY, "mismatch.example.com", key=pki.ec_key())
    put_cert(pki, caddy, "acme.zerossl.com-v2-dv90", "zero.example.com")
    replaced = put_cert(pki, caddy, LE_KEY, "older.example.com", days_to=80)
    put_cert(pki, caddy, LE_KEY, "newer.example.com", days_to=30)
    rsa = put_cert(pki, caddy, LE_KEY, "rsa.example.com", cert_key=pki.rsa_key())
    psproxy_cert(pki, storage, "older.example.com", 20)
    kept = psproxy_cert(pki, storage, "newer.example.com", 70)
    acct_json = put_account(pki, caddy, LE_KEY, EMAIL, LE.rsplit("/", 1)[0] + "/acme/acct/42",
                            pki.ec_key())
    rsa_json = put_account(pki, caddy, LE_KEY, "rsa@example.com",
                           LE.rsplit("/", 1)[0] + "/acme/acct/43", pki.rsa_key())
    put_account(pki, caddy, "acme.zerossl.com-v2-dv90", "default",
                "https://acme.zerossl.com/v2/DV90/account/x", pki.ec_key())
    before = snapshot(caddy)
    storage_before = snapshot(storage)

    p = importer(caddy, storage, LE, conf)
    out = p.stdout
    # One failure (the mismatched key) makes the exit status non-zero, and
    # every other item is still handled.
    assert p.returncode != 0, out
    errors = lines(p, "error: ")
    assert len(errors) == 1 and "mismatch.example.com.crt: " in errors[0], out
    for name in ("good.example.com", "*.example.com", "older.example.com", "rsa.example.com"):
        assert len(lines(p, "imported certificate %s " % name)) == 1, (name, out)
    assert "replaces psproxy's" in lines(p, "imported certificate older.example.com")[0], out
    assert re.search(r"^skipped certificate expired\.example\.com .*expired on ", out, re.M), out
    assert re.search(r"^skipped certificate newer\.example\.com .*psproxy's own expires", out,
                     re.M), out
    assert re.search(r"^skipped certificate zero\.example\.com .*from another CA", out, re.M), out
    assert re.search(r"^skipped account .*zerossl.*from another CA", out, re.M), out
    assert re.search(r"^skipped account .*/acme/acct/43 \(%s\): its key is not P-256"
                     % re.escape(str(rsa_json)), out, re.M), out
    assert len(lines(p, "imported account %s/acme/acct/42 from %s" % (
        LE.rsplit("/", 1)[0], acct_json))) == 1, out
    assert re.search(r"5 imported, 5 skipped, 1 failed", out), out

    assert stored_serial(storage, "good.example.com") == good
    assert stored_serial(storage, "*.example.com") == wild
    assert stored_serial(storage, "older.example.com") == replaced
    assert stored_serial(storage, "rsa.example.com") == rsa
    assert stored_serial(storage, "newer.example.com") == kept
    for name in ("expired.example.com", "mismatch.example.com", "zero.example.com"):
        assert not (storage / "certificates" / LE_KEY / name).exists(), name
    key = storage / "certificates" / LE_KEY / "good.example.com" / "good.example.com.key"
    assert key.read_text().startswith("-----BEGIN PRIVATE KEY-----"), "not PKCS #8"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    acct = json.loads((storage / "acme" / LE_KEY / "account.json").read_text())
    assert acct == {"kid": LE.rsplit("/", 1)[0] + "/acme/acct/42", "ca": LE}, acct
    prefix = "certificates/%s/newer.example.com/" % LE_KEY
    after = snapshot(storage)
    assert {k: v for k, v in after.items() if k.startswith(prefix)} == {
        k: v for k, v in storage_before.items() if k.startswith(prefix)}, "newer.example.com rewritten"
    assert snapshot(caddy) == before, "the import changed Caddy's directory"


def test_import_caddy_exits_0_when_nothing_failed_and_is_idempotent(tmp_path, importer):
    pki = Pki()
    caddy, storage, conf = tmp_path / "caddy", tmp_path / "storage", tmp_path / "p.conf"
    conf.write_text(config(storage, LE))
    put_cert(pki, caddy, LE_KEY, "good.example.com")
    put_cert(pki, caddy, LE_KEY, "expired.example.com", days_from=-90, days_to=-1)
    p = importer(caddy, storage, LE, conf)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "1 imported, 1 skipped, 0 failed" in p.stdout, p.stdout
    assert "no ACME account" in p.stdout, p.stdout
    p = importer(caddy, storage, LE, conf)
    assert p.returncode == 0, p.stdout + p.stderr
    assert "0 imported, 2 skipped, 0 failed" in p.stdout, p.stdout


def test_import_caddy_refuses_storage_inside_caddys_directory(tmp_path, importer):
    pki = Pki()
    caddy = tmp_path / "caddy"
    put_cert(pki, caddy, LE_KEY, "good.example.com")
    before = snapshot(caddy)
    for storage in (caddy, caddy / "psproxy"):
        conf = tmp_path / "p.conf"
        conf.write_text(config(storage, LE))
        p = importer(caddy, storage, LE, conf)
        assert p.returncode != 0, p.stdout
        assert re.search(r"^error: .*inside Caddy's data directory", p.stdout, re.M), p.stdout
        assert snapshot(caddy) == before, "the import wrote into Caddy's directory"


def test_import_caddy_says_what_is_not_a_caddy_directory(tmp_path, importer):
    storage, conf = tmp_path / "storage", tmp_path / "p.conf"
    conf.write_text(config(storage, LE))
    for d in (tmp_path / "missing", tmp_path):
        p = importer(d, storage, LE, conf)
        assert p.returncode != 0, p.stdout
        assert lines(p, "error: %s: " % d), p.stdout
