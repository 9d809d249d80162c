"""ARI (RFC 9773) against Pebble 2.4, which has none: the test serves a
directory of its own that copies Pebble's URLs and adds renewalInfo pointing
at a small endpoint here, whose window the test sets."""

import base64
import datetime
import http.server
import json
import ssl
import subprocess
import threading
import time
import urllib.request

import pytest

from pebble import https_ca, pebble_factory  # noqa: F401 - fixtures
from test_acme import NAME, Acme, first_success, logs_of, FIRST_CERT_TIMEOUT

pytestmark = pytest.mark.peer("pebble")


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def cert_id(pem_path):
    """RFC 9773 CertID of the leaf in PEM_PATH, computed with the openssl CLI."""
    der = subprocess.run(["openssl", "x509", "-in", str(pem_path), "-outform", "DER"],
                         capture_output=True, check=True, timeout=10).stdout
    text = subprocess.run(["openssl", "x509", "-in", str(pem_path), "-noout", "-text"],
                          capture_output=True, text=True, check=True, timeout=10).stdout
    lines = text.splitlines()
    aki = next(lines[i + 1] for i, l in enumerate(lines) if "Authority Key Identifier" in l)
    aki = bytes.fromhex(aki.strip().replace("keyid:", "").replace(":", ""))
    serial = subprocess.run(["openssl", "x509", "-in", str(pem_path), "-noout", "-serial"],
                            capture_output=True, text=True, check=True,
                            timeout=10).stdout.strip().split("=")[1]
    sb = bytes.fromhex(serial if len(serial) % 2 == 0 else "0" + serial)
    if sb[0] & 0x80:
        sb = b"\0" + sb  # the DER INTEGER content keeps a leading 00
    assert der  # the leaf parsed
    return "%s.%s" % (b64url(aki), b64url(sb))


def rfc3339(t):
    return datetime.datetime.fromtimestamp(t, datetime.timezone.utc).strftime(
        "%Y-%m-%dT%H:%M:%SZ")


class AriServer:
    """HTTPS on loopback: /dir is Pebble's directory plus renewalInfo."""

    def __init__(self, ca, pebble_dir_url):
        self.window = (time.time() + 86400, time.time() + 2 * 86400)
        self.seen = []
        self.profiles = None
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a):
                pass

            def do_GET(self):
                if self.path == "/dir":
                    ctx = ssl.create_default_context(cafile=str(ca.ca))
                    with urllib.request.urlopen(pebble_dir_url, context=ctx, timeout=5) as r:
                        d = json.load(r)
                    d["renewalInfo"] = "https://127.0.0.1:%d/ari" % outer.port
                    if outer.profiles is not None:
                        d.setdefault("meta", {})["profiles"] = outer.profiles
                    body = json.dumps(d).encode()
                    self.send_response(200)
                elif self.path.startswith("/ari/"):
                    outer.seen.append(self.path[5:])
                    s, e = outer.window
                    body = json.dumps({"suggestedWindow": {"start": rfc3339(s),
                                                           "end": rfc3339(e)}}).encode()
                    self.send_response(200)
                    self.send_header("Retry-After", "21600")
                else:
                    body = b"{}"
                    self.send_response(404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        sctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        sctx.load_cert_chain(str(ca.crt), str(ca.key))
        self.httpd.socket = sctx.wrap_socket(self.httpd.socket, server_side=True)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self):
        return "https://127.0.0.1:%d/dir" % self.port

    def stop(self):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def ari(tmp_path, upstream, pebble_factory, https_ca):  # noqa: F811
    a = Acme(tmp_path, upstream, pebble_factory, https_ca)
    a.start_pebble()
    srv = AriServer(https_ca, a.pebble.directory_url)
    yield a, srv
    srv.stop()
    for p in a.runs:
        p.stop()


def wait_log(p, text, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if text in p.log_text():
            return True
        time.sleep(0.1)
    return False


def test_ari_window_is_fetched_for_the_served_certificate(ari):
    a, srv = ari
    p = a.start(ca_url=srv.url)
    secs, r = first_success(a, p, FIRST_CERT_TIMEOUT)
    assert r.status == 200, r
    assert wait_log(p, "ARI window", 10), logs_of(a)
    stored = a.cert_dir(srv.url) / ("%s.crt" % NAME)
    assert srv.seen and srv.seen[-1] == cert_id(stored), (srv.seen, logs_of(a))
    # a window a day away: no renewal now
    time.sleep(1)  # a grace: a wrong renewal would start by now
    assert "renewing" not in p.log_text(), logs_of(a)


def test_ari_window_in_the_past_renews_at_once_after_a_restart(ari):
    a, srv = ari
    p = a.start(ca_url=srv.url)
    secs, r = first_success(a, p, FIRST_CERT_TIMEOUT)
    assert r.status == 200, r
    assert wait_log(p, "ARI window", 10), logs_of(a)
    p.stop()
    first = cert_id(a.cert_dir(srv.url) / ("%s.crt" % NAME))
    srv.window = (time.time() - 120, time.time() - 60)  # the CA wants it replaced now
    p2 = a.start(ca_url=srv.url)
    assert wait_log(p2, "serving the stored certificate", 10), logs_of(a)
    assert wait_log(p2, "renewing the certificate", 15), logs_of(a)
    assert wait_log(p2, "certificate obtained", 20), logs_of(a)
    second = cert_id(a.cert_dir(srv.url) / ("%s.crt" % NAME))
    assert second != first
    assert first in srv.seen


def test_certs_command_shows_expiry_next_renewal_and_why(ari):
    a, srv = ari
    p = a.start(ca_url=srv.url)
    secs, r = first_success(a, p, FIRST_CERT_TIMEOUT)
    assert r.status == 200, r
    assert wait_log(p, "ARI window", 10), logs_of(a)
    out = subprocess.run([pb_psproxy(), "certs", "-c", str(p.conf)], capture_output=True,
                         text=True, timeout=10)
    assert out.returncode == 0, out
    assert NAME in out.stdout and "Pebble Intermediate" in out.stdout, out.stdout
    assert "not after:" in out.stdout and "in the CA's ARI window" in out.stdout, out.stdout


def pb_psproxy():
    from conftest import PSPROXY
    return PSPROXY


def start_with(a, extra, ca_url):
    """A psproxy run whose global options get EXTRA lines."""
    from conftest import Proxy
    d = a.tmp / ("run-%d" % (len(a.runs) + 1))
    d.mkdir()
    cfg = a.config(ca_url=ca_url).replace("\tadmin off", "\tadmin off\n" + extra, 1)
    p = Proxy(d, cfg, a.https_port)
    p.t0 = time.monotonic()
    p.https_port, p.http_port = a.https_port, a.http_port
    a.runs.append(p)
    return p


def test_profile_the_ca_does_not_offer_stops_psproxy_at_start(tmp_path, upstream,
                                                             pebble_factory, https_ca):  # noqa
    from conftest import PSPROXY
    a = Acme(tmp_path, upstream, pebble_factory, https_ca)
    a.start_pebble()  # Pebble 2.4 lists no profiles
    conf = tmp_path / "profile.conf"
    conf.write_text(a.config().replace("\tadmin off", "\tadmin off\n\tacme_profile shortlived",
                                       1))
    p = subprocess.run([PSPROXY, "-c", str(conf)], capture_output=True, text=True, timeout=20,
                       stdin=subprocess.DEVNULL, cwd=str(tmp_path))
    assert p.returncode != 0, p.stderr
    assert 'does not offer "shortlived"' in p.stderr, p.stderr
    assert "ordering a certificate" not in p.stderr, p.stderr


def test_profile_the_ca_offers_is_used(ari):
    a, srv = ari
    srv.profiles = {"classic": "90 days", "shortlived": "160 hours"}
    p = start_with(a, "\tacme_profile shortlived", srv.url)
    secs, r = first_success(a, p, FIRST_CERT_TIMEOUT)
    assert r.status == 200, r
    assert "does not offer" not in p.log_text(), logs_of(a)
