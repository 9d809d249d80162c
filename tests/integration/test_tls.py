"""TLS termination (issue #4): Caddyfile sites with a host name and no
http:// scheme are served over HTTPS on https_port with the certificate of
their `tls CERT KEY`, and http_port redirects to them.

Black-box: the real binary against openssl s_client, curl, Python's ssl and
testssl.sh; certificates come from a throwaway CA made with the openssl CLI in
the test's own temp dir (tls_util.Pki).
"""

import hashlib
import json
import os
import random
import select
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time

import pytest

from conftest import (CURL_ENV, PSPROXY, WAIT_TIMEOUT, Proxy, Reader, curl, free_port,
                      proxy_block, stop_and_check, wait_port)
from tls_util import (Pki, SlowReadingUpstream, cert_info, client_context, client_hello,
                      https_curl, s_client, served_cert, tls_config, tls_connect, wait_for)
from upstream import pattern

RELOAD_TIMEOUT = 20.0


# -- fixtures ---------------------------------------------------------------------


@pytest.fixture
def pki(tmp_path):
    return Pki(tmp_path / "pki")


@pytest.fixture
def tls_factory(tmp_path):
    """start(sites, **tls_config options) -> Proxy listening on a free
    https_port (and http_port unless http_port=None is passed), with
    .https_port and .http_port set. Teardown as conftest's proxy_factory."""
    started = []

    def start(sites, *, http_port=0, https_port=0, wait_http=True, **opts):
        https_port = https_port or free_port()
        if http_port == 0:
            http_port = free_port()
        p = Proxy(tmp_path, tls_config(sites, http_port=http_port, https_port=https_port,
                                       **opts), https_port)
        p.https_port = https_port
        p.http_port = http_port
        started.append(p)
        p.wait_ready()
        if wait_http and http_port is not None:
            wait_port(http_port, p.proc, 10.0, "psproxy (http_port)", p.log)
        return p

    yield start
    stop_and_check(started)


def site(name, leaf, upstream, **block_opts):
    return (name, leaf, proxy_block(upstream, **block_opts))


@pytest.fixture
def one_site(pki, upstream, tls_factory):
    """psproxy serving a.test over HTTPS (cert pki leaf a.test) to upstream."""
    leaf = pki.leaf("a.test")
    p = tls_factory([site("a.test", leaf, upstream)])
    p.leaf = leaf
    p.ca = pki.ca
    p.upstream = upstream
    return p


def assert_alive(p):
    assert p.proc.poll() is None, "psproxy exited (%s); log:\n%s" % (
        p.proc.returncode, p.log_text()[-4000:])


def assert_serves(p, ca, host="a.test", tmp=None):
    """A normal HTTPS client still gets a 200 through psproxy."""
    assert_alive(p)
    r = https_curl(host, p.https_port, "/echo?still=serving", ca, tmp=tmp)
    assert r.rc == 0 and r.status == 200, r
    assert r.json()["query"] == "still=serving"


def tls_request(sock, reader, host, path, method="GET", body=b""):
    head = "%s %s HTTP/1.1\r\nHost: %s\r\n" % (method, path, host)
    if body or method in ("POST", "PUT"):
        head += "Content-Length: %d\r\n" % len(body)
    sock.sendall(head.encode() + b"\r\n" + body)
    return reader.response(method)


def get_json_headers(doc):
    out = {}
    for k, v in doc["headers"]:
        out.setdefault(k.lower(), []).append(v)
    return out


# -- certificate selection --------------------------------------------------------


def test_sni_selects_each_sites_certificate(pki, upstream, tls_factory):
    a, b = pki.leaf("a.test"), pki.leaf("b.test")
    p = tls_factory([site("a.test", a, upstream), site("b.test", b, upstream)])
    for name, leaf in (("a.test", a), ("b.test", b)):
        sc = s_client(p.https_port, "-CAfile", pki.ca, servername=name)
        assert sc.established, sc
        info = sc.cert()
        assert info, "no certificate in s_client output: %r" % sc
        assert info["serial"] == leaf.serial and info["san"] == [name], (name, info)
        assert "CN=%s" % name in info["subject"], info
        assert "Verify return code: 0 (ok)" in sc.out, sc
        # And Python's ssl, verifying chain and host name against the test CA.
        s = tls_connect(p.https_port, name, client_context(pki.ca))
        try:
            cert = s.getpeercert()
            assert cert["serialNumber"] == leaf.serial_hex, cert
            assert ("DNS", name) in cert["subjectAltName"], cert
        finally:
            s.close()


def test_client_without_sni_gets_the_only_sites_certificate(one_site):
    sc = s_client(one_site.https_port)  # -noservername
    assert sc.established, sc
    assert sc.cert()["serial"] == one_site.leaf.serial, sc
    assert served_cert(one_site.https_port, None)["serial"] == one_site.leaf.serial


def test_client_without_sni_gets_default_sni_certificate(pki, upstream, tls_factory):
    a, b = pki.leaf("a.test"), pki.leaf("b.test")
    # b.test is the second site, so "the first site" would not pass.
    p = tls_factory([site("a.test", a, upstream), site("b.test", b, upstream)],
                    default_sni="b.test")
    sc = s_client(p.https_port)
    assert sc.established, sc
    assert sc.cert()["serial"] == b.serial, sc
    assert served_cert(p.https_port, None)["serial"] == b.serial
    # SNI still wins over default_sni.
    assert served_cert(p.https_port, "a.test")["serial"] == a.serial


@pytest.mark.parametrize("proto", ["-tls1_2", "-tls1_3"])
def test_unknown_sni_gets_unrecognized_name_alert_not_a_certificate(pki, upstream,
                                                                     tls_factory, proto):
    a, b = pki.leaf("a.test"), pki.leaf("b.test")
    p = tls_factory([site("a.test", a, upstream), site("b.test", b, upstream)],
                    default_sni="a.test")
    sc = s_client(p.https_port, proto, servername="c.test")
    assert not sc.established, "handshake with unknown SNI c.test succeeded: %r" % sc
    assert sc.cert_pem() is None, "a certificate was sent for c.test: %r" % sc
    assert "unrecognized name" in sc.out and "alert number 112" in sc.out, (
        "expected a fatal unrecognized_name(112) alert: %r" % sc)
    with pytest.raises(ssl.SSLError) as ei:
        served_cert(p.https_port, "c.test")
    assert "UNRECOGNIZED_NAME" in str(ei.value).upper(), ei.value
    assert_serves(p, pki.ca)


def test_unknown_sni_with_one_site_is_refused_too(one_site):
    sc = s_client(one_site.https_port, servername="other.test")
    assert not sc.established, "handshake with unknown SNI succeeded: %r" % sc
    assert sc.cert_pem() is None, sc
    assert "alert number 112" in sc.out, sc


def _config_unmanageable(tmp_path, site_line, body):
    conf = tmp_path / "unmanageable.conf"
    conf.write_text("{\n\tadmin off\n\thttp_port %d\n\thttps_port %d\n\tstorage file_system %s\n}\n"
                    "%s {\n%s\treverse_proxy 127.0.0.1:9\n}\n"
                    % (free_port(), free_port(), tmp_path / "storage", site_line, body))
    return conf


# A site with no tls directive gets its certificate from ACME (test_acme.py);
# the ones ACME cannot serve are refused, by validate as at start, naming the line.
@pytest.mark.parametrize("site_line,body,why", [
    ("b.test", "\ttls internal\n", "tls internal"),
    ("*.wild.test", "", "DNS-01"),
])
def test_https_site_acme_cannot_serve_is_refused(tmp_path, site_line, body, why):
    conf = _config_unmanageable(tmp_path, site_line, body)
    for args in (["validate", "-c", str(conf)], ["-c", str(conf)]):
        p = subprocess.run([PSPROXY] + args, capture_output=True, timeout=10,
                           stdin=subprocess.DEVNULL, cwd=str(tmp_path))
        out = (p.stdout + p.stderr).decode(errors="replace")
        assert p.returncode != 0, out
        assert "%s:7:" % conf in out and why in out, out  # the site line


# -- protocols ----------------------------------------------------------------------


@pytest.mark.parametrize("proto,name", [("-tls1_2", "TLSv1.2"), ("-tls1_3", "TLSv1.3")])
def test_tls12_and_tls13_are_accepted(one_site, proto, name):
    sc = s_client(one_site.https_port, proto, "-CAfile", one_site.ca, servername="a.test")
    assert sc.established and sc.protocol == name, sc
    assert "Verify return code: 0 (ok)" in sc.out, sc
    ctx = client_context(one_site.ca)
    v = ssl.TLSVersion.TLSv1_2 if name == "TLSv1.2" else ssl.TLSVersion.TLSv1_3
    ctx.minimum_version = ctx.maximum_version = v
    s = tls_connect(one_site.https_port, "a.test", ctx)
    try:
        assert s.version() == name
        rd = Reader(s)
        r = tls_request(s, rd, "a.test", "/echo?proto=" + name)
        assert r.status == 200 and r.json()["query"] == "proto=" + name, r
    finally:
        s.close()


@pytest.mark.parametrize("proto", ["-tls1_1", "-tls1"])
def test_tls11_and_tls10_are_refused(one_site, proto):
    # SECLEVEL=0 lets this client really offer the old protocol (calibrated
    # against openssl s_server -tls1_1 -cipher DEFAULT@SECLEVEL=0, which
    # accepts it).
    sc = s_client(one_site.https_port, proto, "-cipher", "DEFAULT@SECLEVEL=0", "-msg",
                  servername="a.test")
    assert "ClientHello" in sc.out, "the client did not even try: %r" % sc
    assert not sc.established, "psproxy accepted %s: %r" % (proto, sc)
    assert sc.rc != 0, sc
    assert_serves(one_site, one_site.ca)


def _read_until(proc, buf, pred, timeout):
    """Appends PROC's output to BUF until PRED(BUF), its EOF or TIMEOUT;
    returns BUF."""
    fd = proc.stdout.fileno()
    deadline = time.monotonic() + timeout
    while not pred(buf):
        left = deadline - time.monotonic()
        if left <= 0 or not select.select([fd], [], [], left)[0]:
            break
        data = os.read(fd, 65536)
        if not data:
            break
        buf += data
    return buf


def test_client_initiated_renegotiation_is_refused(one_site):
    cmd = ["openssl", "s_client", "-connect", "127.0.0.1:%d" % one_site.https_port,
           "-servername", "a.test", "-tls1_2", "-state"]
    proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT)
    try:
        # handshake done: s_client prints the session, then reads its input
        got = _read_until(proc, b"", lambda b: b"Verify return code" in b, WAIT_TIMEOUT)
        proc.stdin.write(b"R\n")
        proc.stdin.flush()
        # renegotiation attempted, and answered (an alert, a close, or a
        # second handshake, which the checks below refuse); a server that
        # ignores it says nothing, so that wait is a grace of 3 s
        got = _read_until(proc, got, lambda b: b"RENEGOTIATING" in b, WAIT_TIMEOUT)
        got = _read_until(proc, got, lambda b: b.count(b"read finished") >= 2
                          or b"alert" in b or b"errno" in b, 3.0)
        out, _ = proc.communicate(timeout=10)
        out = got + out
    except BaseException:
        proc.kill()
        proc.communicate()
        raise
    out = out.decode(errors="replace")
    assert "New, TLSv1.2" in out, out
    assert "RENEGOTIATING" in out, "s_client did not try to renegotiate:\n" + out
    finished = out.count("SSL_connect:SSLv3/TLS read finished")
    assert finished == 1, "renegotiation succeeded (%d handshakes finished):\n%s" % (
        finished, out[-3000:])
    assert_serves(one_site, one_site.ca)


def test_alpn_prefers_h2_and_keeps_http11(one_site):
    sc = s_client(one_site.https_port, "-alpn", "h2,http/1.1", servername="a.test")
    assert sc.established and sc.alpn == "h2", sc
    sc = s_client(one_site.https_port, "-alpn", "http/1.1,h2", servername="a.test")
    assert sc.established and sc.alpn == "h2", sc  # the server's preference
    sc = s_client(one_site.https_port, "-alpn", "http/1.1", servername="a.test")
    assert sc.established and sc.alpn == "http/1.1", sc


def test_alpn_without_h2_when_protocols_says_h1(pki, upstream, tls_factory):
    leaf = pki.leaf("a.test")
    p = tls_factory([site("a.test", leaf, upstream)],
                    global_extra="\tservers {\n\t\tprotocols h1\n\t}")
    sc = s_client(p.https_port, "-alpn", "h2,http/1.1", servername="a.test")
    assert sc.established and sc.alpn == "http/1.1", sc


def test_curl_over_https_reaches_upstream_with_x_forwarded_proto_https(one_site, tmp_path):
    r = https_curl("a.test", one_site.https_port, "/echo/x?y=1", one_site.ca, tmp=tmp_path)
    assert r.rc == 0 and r.status == 200, r
    doc = r.json()
    assert doc["target"] == "/echo/x?y=1", doc
    h = get_json_headers(doc)
    assert h.get("x-forwarded-proto") == ["https"], doc["headers"]
    assert h.get("host") == ["a.test:%d" % one_site.https_port], doc["headers"]


@pytest.mark.parametrize("flag,version", [("--http1.1", "1.1"), ("--http2", "2")])
def test_curl_negotiates_what_it_asks_for_over_https(one_site, flag, version):
    p = subprocess.run(
        ["curl", "-sS", "--noproxy", "*", "--max-time", "10", "-o", "/dev/null", flag,
         "-w", "%{http_version} %{http_code}", "--resolve",
         "a.test:%d:127.0.0.1" % one_site.https_port, "--cacert", str(one_site.ca),
         "https://a.test:%d/echo" % one_site.https_port],
        capture_output=True, timeout=15, env=CURL_ENV, stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    assert p.stdout.decode() == version + " 200", p.stdout


def test_rsa_2048_certificate_works(pki, upstream, tls_factory, tmp_path):
    leaf = pki.leaf("a.test", kind="rsa")
    p = tls_factory([site("a.test", leaf, upstream)])
    for proto in ("-tls1_2", "-tls1_3"):
        sc = s_client(p.https_port, proto, "-CAfile", pki.ca, servername="a.test")
        assert sc.established, sc
        assert "Server public key is 2048 bit" in sc.out, sc
        assert sc.cert()["serial"] == leaf.serial
        assert "Verify return code: 0 (ok)" in sc.out, sc
    r = https_curl("a.test", p.https_port, "/echo", pki.ca, tmp=tmp_path)
    assert r.rc == 0 and r.status == 200, r


# -- session resumption -------------------------------------------------------------


@pytest.mark.parametrize("workers", [1, 2])
def test_tls12_session_resumption_with_reconnect(pki, upstream, tls_factory, workers):
    leaf = pki.leaf("a.test")
    p = tls_factory([site("a.test", leaf, upstream)], workers=workers)
    sc = s_client(p.https_port, "-tls1_2", "-reconnect", servername="a.test", timeout=30)
    sessions = sc.sessions()
    assert sessions and sessions[0][0] == "New", sc
    reused = [s for s in sessions[1:] if s[0] == "Reused"]
    assert len(sessions) >= 6 and len(reused) == len(sessions) - 1, (
        "reconnects not all resumed: %r\n%r" % (sessions, sc))


@pytest.mark.parametrize("proto", ["-tls1_2", "-tls1_3"])
@pytest.mark.parametrize("workers", [1, 2])
def test_session_resumption_across_connections_and_workers(pki, upstream, tls_factory,
                                                           tmp_path, proto, workers):
    """Eight separate s_client runs, each resuming the session (ticket) the
    previous one saved; with workers 2 they land on both worker threads."""
    leaf = pki.leaf("a.test")
    p = tls_factory([site("a.test", leaf, upstream)], workers=workers)
    req = b"GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    prev = None
    results = []
    for i in range(8):
        out = tmp_path / ("sess-%d.pem" % i)
        args = [proto, "-ign_eof", "-sess_out", out]
        if prev:
            args += ["-sess_in", prev]
        sc = s_client(p.https_port, *args, servername="a.test", input=req)
        assert sc.established, sc
        assert "HTTP/1.1 200" in sc.out, sc
        kinds = {k for k, _, _ in sc.sessions()}
        results.append("Reused" if "Reused" in kinds else "New")
        # s_client saves a session only when it gets a new one (a TLS 1.2
        # resumption need not issue a new ticket): else the old one is kept.
        if out.exists() and out.stat().st_size > 0:
            prev = out
        assert prev, "no session saved by the first connection: %r" % sc
    assert results[0] == "New"
    assert results[1:] == ["Reused"] * 7, "resumption results per connection: %r" % results


def test_tls13_resumption_issues_a_fresh_ticket(pki, upstream, tls_factory, tmp_path):
    """A TLS 1.3 client uses a ticket once (RFC 8446 section 4.6.1): each
    resumed connection must get a fresh ticket, or the client's next
    connection is a full handshake. A client that keeps the last session it
    got, as wrk and browsers do, resumes every reconnect."""
    leaf = pki.leaf("a.test")
    p = tls_factory([site("a.test", leaf, upstream)])
    ctx = client_context(pki.ca, minv=ssl.TLSVersion.TLSv1_3)
    req = b"GET /echo HTTP/1.1\r\nHost: a.test\r\nConnection: close\r\n\r\n"
    session, reused, ids = None, [], []
    for _ in range(6):
        with socket.create_connection(("127.0.0.1", p.https_port), 10) as raw:
            with ctx.wrap_socket(raw, server_hostname="a.test", session=session) as c:
                c.sendall(req)
                data = b""
                while True:  # to the close: the ticket comes before the response
                    d = c.recv(65536)
                    if not d:
                        break
                    data += d
                assert data.startswith(b"HTTP/1.1 200"), data[:200]
                reused.append(c.session_reused)
                session = c.session
                ids.append(session.id)
    assert reused == [False] + [True] * 5, "resumed per connection: %r" % reused
    assert len(set(ids)) == len(ids), "a resumed connection brought no new ticket"

    # the same on the wire: the resumed handshake carries one NewSessionTicket
    sess = tmp_path / "s13.pem"
    sc = s_client(p.https_port, "-tls1_3", "-ign_eof", "-sess_out", sess, servername="a.test",
                  input=req)
    assert sc.established and sess.stat().st_size > 0, sc
    sc = s_client(p.https_port, "-tls1_3", "-ign_eof", "-msg", "-sess_in", sess,
                  servername="a.test", input=req)
    assert [k for k, _, _ in sc.sessions()] == ["Reused"], sc
    assert sc.out.count("NewSessionTicket") == 1, sc


# -- traffic through TLS --------------------------------------------------------------


def test_10mb_response_arrives_intact(one_site, tmp_path):
    n = 10_000_000
    r = https_curl("a.test", one_site.https_port, "/bytes/%d" % n, one_site.ca,
                   tmp=tmp_path, timeout=60)
    assert r.rc == 0 and r.status == 200, r
    assert len(r.body) == n
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(pattern(n)).hexdigest()


def test_10mb_chunked_response_arrives_intact(one_site, tmp_path):
    n = 10_000_000
    r = https_curl("a.test", one_site.https_port, "/chunked/%d" % n, one_site.ca,
                   tmp=tmp_path, timeout=60)
    assert r.rc == 0 and r.status == 200, r
    assert len(r.body) == n
    assert hashlib.sha256(r.body).hexdigest() == hashlib.sha256(pattern(n)).hexdigest()


def _raw_upload(port, ca, body, expect=False, timeout=10):
    """POSTs BODY to /echo on a new TLS connection (head and body in one
    write unless EXPECT); returns the echo document."""
    s = tls_connect(port, "a.test", client_context(ca), timeout=timeout)
    try:
        head = b"POST /echo HTTP/1.1\r\nHost: a.test\r\nContent-Length: %d\r\n" % len(body)
        rd = Reader(s)
        if expect:
            s.sendall(head + b"Expect: 100-continue\r\n\r\n")
            r = rd.response(keep_1xx=True)
            assert r.status == 100, r
            s.sendall(body)
        else:
            s.sendall(head + b"\r\n" + body)
        r = rd.response()
        assert r.status == 200, r
        return r.json()
    finally:
        s.close()


@pytest.mark.parametrize("how", ["curl", "curl-no-expect", "raw-one-write", "raw-expect"])
def test_8mib_upload_arrives_intact(one_site, tmp_path, how):
    """Four uploads each, on new connections: the stalls seen so far were
    intermittent."""
    data = random.Random(4).randbytes(8 << 20)
    digest = hashlib.sha256(data).hexdigest()
    f = tmp_path / "upload.bin"
    f.write_bytes(data)
    for i in range(4):
        if how.startswith("curl"):
            extra = ["-H", "Expect:"] if how == "curl-no-expect" else []
            r = https_curl("a.test", one_site.https_port, "/echo", one_site.ca,
                           "--data-binary", "@%s" % f,
                           "-H", "Content-Type: application/octet-stream", *extra,
                           tmp=tmp_path, timeout=20)
            assert r.rc == 0 and r.status == 200, "upload %d: %r" % (i, r)
            doc = r.json()
        else:
            doc = _raw_upload(one_site.https_port, one_site.ca, data,
                              expect=how == "raw-expect")
        assert doc["body_len"] == len(data), (i, doc)
        assert doc["body_sha256"] == digest, i


def test_100kb_uploads_arrive_intact(one_site):
    data = random.Random(5).randbytes(100_000)
    for i in range(10):
        doc = _raw_upload(one_site.https_port, one_site.ca, data)
        assert doc["body_len"] == len(data) and doc[
            "body_sha256"] == hashlib.sha256(data).hexdigest(), (i, doc)


@pytest.mark.parametrize("how", ["raw-one-write", "curl"])
def test_upload_to_slow_reading_upstream_arrives_intact(pki, tls_factory, tmp_path, how):
    """psproxy must stop reading the client while the upstream is slow and
    resume later, including records OpenSSL already holds decrypted."""
    slow = SlowReadingUpstream()
    try:
        leaf = pki.leaf("a.test")
        p = tls_factory([site("a.test", leaf, slow, response_header_timeout="30s")])
        data = random.Random(6).randbytes(2 << 20)
        digest = hashlib.sha256(data).hexdigest()
        for i in range(2):
            if how == "curl":
                f = tmp_path / "upload.bin"
                f.write_bytes(data)
                r = https_curl("a.test", p.https_port, "/echo", pki.ca, "--data-binary",
                               "@%s" % f, "-H", "Expect:", tmp=tmp_path, timeout=40)
                assert r.rc == 0 and r.status == 200, "upload %d: %r" % (i, r)
                doc = r.json()
            else:
                doc = _raw_upload(p.https_port, pki.ca, data, timeout=30)
            assert doc == {"body_len": len(data), "body_sha256": digest}, (i, doc)
    finally:
        slow.stop()


def test_keepalive_requests_reuse_one_tls_connection(one_site):
    n = 20
    port = one_site.https_port
    args = ["curl", "-sS", "--noproxy", "*", "--max-time", "28", "--resolve",
            "a.test:%d:127.0.0.1" % port, "--cacert", str(one_site.ca),
            "-w", "\\n@@connects=%{num_connects} status=%{http_code}\\n"]
    args += ["https://a.test:%d/echo?i=%d" % (port, i) for i in range(n)]
    p = subprocess.run(args, capture_output=True, timeout=30, env=CURL_ENV,
                       stdin=subprocess.DEVNULL)
    assert p.returncode == 0, p.stderr
    docs, connects = [], 0
    for line in p.stdout.decode().splitlines():
        if line.startswith("@@connects="):
            c, s = line[len("@@connects="):].split(" status=")
            assert s == "200", p.stdout[-2000:]
            connects += int(c)
        elif line.strip():
            docs.append(json.loads(line))
    assert [d["query"] for d in docs] == ["i=%d" % i for i in range(n)]
    assert connects == 1, "%d requests used %d TLS connections" % (n, connects)


def test_raw_tls_socket_keepalive_and_pipelining(one_site):
    s = tls_connect(one_site.https_port, "a.test", client_context(one_site.ca))
    try:
        rd = Reader(s)
        for i in range(5):
            r = tls_request(s, rd, "a.test", "/echo?i=%d" % i)
            assert r.status == 200 and r.json()["query"] == "i=%d" % i, r
        reqs = b"".join(b"GET /bytes/%d HTTP/1.1\r\nHost: a.test\r\n\r\n" % (1000 * (i + 1))
                        for i in range(4))
        s.sendall(reqs)
        for i in range(4):
            r = rd.response()
            assert r.status == 200 and r.body == pattern(1000 * (i + 1)), r
    finally:
        s.close()


def test_busy_connection_serves_after_its_buffers_are_given_back(one_site):
    """Back-to-back requests keep OpenSSL's record buffers on the connection;
    quiet for two sweeps (CONN_TLS_SWEEP_MS, 1 s each) it gives them back.
    Either way every request, small or large, must arrive intact."""
    s = tls_connect(one_site.https_port, "a.test", client_context(one_site.ca))
    try:
        rd = Reader(s)
        for rnd in range(3):
            for i in range(10):
                r = tls_request(s, rd, "a.test", "/echo?r=%d&i=%d" % (rnd, i))
                assert r.status == 200 and r.json()["query"] == "r=%d&i=%d" % (rnd, i), r
            r = tls_request(s, rd, "a.test", "/bytes/300000")
            assert r.status == 200 and r.body == pattern(300000), r.status
            time.sleep(2.5)  # a real wait: quiet for two sweeps, the buffers go back
    finally:
        s.close()
    assert_alive(one_site)


# -- HTTP -> HTTPS redirect -----------------------------------------------------------


def test_http_port_redirects_to_https_with_308(pki, upstream, tls_factory, tmp_path):
    a, b = pki.leaf("a.test"), pki.leaf("b.test")
    p = tls_factory([site("a.test", a, upstream), site("b.test", b, upstream)])
    for host in ("a.test", "b.test"):
        r = curl("http://%s:%d/p/q?x=1" % (host, p.http_port), "--resolve",
                 "%s:%d:127.0.0.1" % (host, p.http_port), tmp=tmp_path)
        assert r.rc == 0 and r.status == 308, r
        # as Caddy: https_port is assumed to be 443 outside, so no port
        assert r.header("Location") == "https://%s/p/q?x=1" % host, r
    # A redirect is answered by psproxy itself: the upstream saw nothing.
    assert not upstream.saw("/p/q")
    # Following it lands on the site.
    r = curl("http://a.test:%d/echo?f=1" % p.http_port, "-L", "--resolve",
             "a.test:%d:127.0.0.1" % p.http_port, "--connect-to",
             "a.test:443:127.0.0.1:%d" % p.https_port, "--cacert", str(pki.ca), tmp=tmp_path)
    assert r.rc == 0 and r.status == 200, r
    assert r.json()["query"] == "f=1"


def test_redirect_omits_port_when_https_port_is_443(pki, upstream, tls_factory, tmp_path):
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("0.0.0.0", 443))
    except OSError as e:
        pytest.skip("cannot bind port 443 here (%s)" % e)
    leaf = pki.leaf("a.test")
    p = tls_factory([site("a.test", leaf, upstream)], https_port=443)
    r = curl("http://a.test:%d/p/q?x=1" % p.http_port, "--resolve",
             "a.test:%d:127.0.0.1" % p.http_port, tmp=tmp_path)
    assert r.rc == 0 and r.status == 308, r
    assert r.header("Location") == "https://a.test/p/q?x=1", r


def test_acme_challenge_path_is_not_redirected(one_site, tmp_path):
    r = curl("http://a.test:%d/.well-known/acme-challenge/anything" % one_site.http_port,
             "--resolve", "a.test:%d:127.0.0.1" % one_site.http_port, tmp=tmp_path)
    assert r.rc == 0 and r.status == 404, r
    assert r.header("Location") is None, r


def test_disable_redirects_has_no_http_listener(pki, upstream, tls_factory, tmp_path):
    """Caddy 2.6 (caddy adapt: automatic_https.disable_redirects) opens no
    listener on http_port then: connection refused."""
    leaf = pki.leaf("a.test")
    p = tls_factory([site("a.test", leaf, upstream)], wait_http=False,
                    global_extra="\tauto_https disable_redirects")
    assert_serves(p, pki.ca, tmp=tmp_path)
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", p.http_port), timeout=2).close()


# -- robustness -----------------------------------------------------------------------


@pytest.mark.parametrize("garbage", [
    b"GET / HTTP/1.1\r\nHost: a.test\r\n\r\n",
    bytes(random.Random(7).randrange(256) for _ in range(3000)),
    b"\x16\x03\x01\xff\xff" + b"\x01" * 200,  # a handshake record claiming 64 KiB
    b"\x16\x03\x01\x00\x05\x01\x00\x00\x01\x00",  # a ClientHello of length 1
], ids=["plain-http", "random", "huge-record", "tiny-hello"])
def test_garbage_instead_of_client_hello_leaves_psproxy_serving(one_site, garbage):
    s = socket.create_connection(("127.0.0.1", one_site.https_port), timeout=5)
    try:
        s.settimeout(5)
        try:
            s.sendall(garbage)
            s.shutdown(socket.SHUT_WR)
            # psproxy answers with an alert (or nothing) and closes: bounded.
            deadline = time.monotonic() + 5
            while time.monotonic() < deadline and s.recv(65536):
                pass
        except (ConnectionResetError, BrokenPipeError):
            pass
    finally:
        s.close()
    assert_serves(one_site, one_site.ca)


def test_disconnect_mid_handshake_leaves_psproxy_serving(one_site):
    hello = client_hello("a.test")
    for cut in (50, 5, len(hello) - 1):
        s = socket.create_connection(("127.0.0.1", one_site.https_port), timeout=5)
        s.sendall(hello[:cut])
        time.sleep(0.05)  # a real wait: the part arrives on its own before the close
        s.close()
    # A reset instead of a close.
    s = socket.create_connection(("127.0.0.1", one_site.https_port), timeout=5)
    s.sendall(hello[:50])
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
    s.close()
    assert_serves(one_site, one_site.ca)


def _closed_after(sock, t0, timeout):
    """Seconds from T0 until the peer closes SOCK (a TLS alert before the
    close is allowed), or None when it is still open TIMEOUT seconds after T0."""
    deadline = t0 + timeout
    got = b""
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        sock.settimeout(left)
        try:
            data = sock.recv(65536)
        except socket.timeout:
            return None
        except ConnectionResetError:
            return time.monotonic() - t0
        if not data:
            return time.monotonic() - t0
        got += data
        assert got[:1] in (b"\x15", b"\x16"), "unexpected bytes: %r" % got[:100]


@pytest.mark.parametrize("sends", ["nothing", "client-hello-then-nothing"])
def test_silent_client_is_cut_after_read_header(pki, upstream, tls_factory, sends):
    leaf = pki.leaf("a.test")
    p = tls_factory([site("a.test", leaf, upstream)], read_header="1s")
    s = socket.create_connection(("127.0.0.1", p.https_port), timeout=5)
    # From the connect: psproxy's clock starts at its accept, no earlier,
    # and serving the other client below may take longer than read_header.
    t0 = time.monotonic()
    try:
        if sends != "nothing":
            s.sendall(client_hello("a.test"))
        # Another client is served meanwhile.
        assert_serves(p, pki.ca)
        t = _closed_after(s, t0, 10.0)
    finally:
        s.close()
    assert t is not None, "a silent client is still connected after 10 s (read_header 1s)"
    assert 0.9 <= t <= 8, "silent client cut after %.2f s (read_header 1s)" % t
    assert_serves(p, pki.ca)


def test_handshaken_but_silent_client_is_cut_too(pki, upstream, tls_factory):
    leaf = pki.leaf("a.test")
    p = tls_factory([site("a.test", leaf, upstream)], read_header="1s")
    s = tls_connect(p.https_port, "a.test", client_context(pki.ca))
    try:
        t0 = time.monotonic()
        s.settimeout(5)
        try:
            data = s.recv(1)
        except (socket.timeout, TimeoutError):
            pytest.fail("TLS client that sends no request is still connected after 5 s")
        except (ssl.SSLError, ConnectionResetError):
            data = b""
        t = time.monotonic() - t0
        assert data == b"", data
        assert t <= 3.5, t
    finally:
        s.close()


def test_many_concurrent_handshakes(one_site):
    """50 connections opened at once, handshakes interleaved."""
    errors = []

    def one(i):
        try:
            s = tls_connect(one_site.https_port, "a.test", client_context(one_site.ca),
                            timeout=10)
            try:
                r = tls_request(s, Reader(s), "a.test", "/echo?c=%d" % i)
                assert r.status == 200 and r.json()["query"] == "c=%d" % i, r
            finally:
                s.close()
        except Exception as e:  # noqa: BLE001
            errors.append("%d: %r" % (i, e))

    threads = [threading.Thread(target=one, args=(i,)) for i in range(50)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    assert not any(t.is_alive() for t in threads), "clients still running after 20 s"
    assert not errors, errors[:5]


# -- certificate reload on SIGHUP -----------------------------------------------------


def _handshake_serial(port):
    return served_cert(port, "a.test")["serial"]


class KeptConn:
    """A keep-alive TLS connection that makes requests now and then."""

    def __init__(self, port, ca, gen):
        self.sock = tls_connect(port, "a.test", client_context(ca), timeout=5)
        self.reader = Reader(self.sock)
        self.gen = gen
        self.serial = int(self.sock.getpeercert()["serialNumber"], 16)
        self.n = 0

    def request(self):
        self.n += 1
        r = tls_request(self.sock, self.reader, "a.test", "/echo?gen=%d&n=%d" % (self.gen,
                                                                               self.n))
        assert r.status == 200, r
        assert r.json()["query"] == "gen=%d&n=%d" % (self.gen, self.n)
        return r


def test_sighup_swaps_certificate_for_new_handshakes_only(pki, upstream, tls_factory):
    d = pki.dir / "site"
    d.mkdir()
    crt, key = d / "a.crt", d / "a.key"
    leaf = pki.leaf("a.test", org="gen 1", serial=0x2001, crt=crt, key=key)
    p = tls_factory([site("a.test", leaf, upstream)], workers=2, idle="60s")
    assert _handshake_serial(p.https_port) == 0x2001
    kept = [KeptConn(p.https_port, pki.ca, 1)]
    kept[0].request()
    for gen in (2, 3, 4):
        prev, new = 0x2000 + gen - 1, 0x2000 + gen
        pki.leaf("a.test", org="gen %d" % gen, serial=new, crt=crt, key=key)
        assert cert_info(crt.read_bytes())["serial"] == new
        p.proc.send_signal(signal.SIGHUP)
        seen = []

        def swapped():
            s = _handshake_serial(p.https_port)
            seen.append(s)
            return s == new

        wait_for(swapped, RELOAD_TIMEOUT, what="new handshakes get gen %d" % gen)
        assert set(seen) <= {prev, new}, "handshakes got %r (expected %X then %X)" % (
            ["%X" % s for s in seen], prev, new)
        after = [_handshake_serial(p.https_port) for _ in range(10)]
        assert after == [new] * 10, "after the swap to %X, handshakes got %r" % (
            new, ["%X" % s for s in after])
        # Connections made before the swap keep working, on their old cert.
        for kc in kept:
            for _ in range(3):
                kc.request()
            assert int(kc.sock.getpeercert()["serialNumber"], 16) == kc.serial
        assert_alive(p)
        kept.append(KeptConn(p.https_port, pki.ca, gen))
        assert kept[-1].serial == new
        kept[-1].request()
    for kc in kept:
        kc.sock.close()
    assert [kc.n for kc in kept] == [10, 7, 4, 1]


@pytest.mark.parametrize("breakage", ["garbage-pem", "key-mismatch", "missing-file"])
def test_sighup_with_broken_certificate_keeps_previous(pki, upstream, tls_factory, breakage):
    d = pki.dir / "site"
    d.mkdir()
    crt, key = d / "a.crt", d / "a.key"
    leaf = pki.leaf("a.test", org="gen 1", serial=0x3001, crt=crt, key=key)
    p = tls_factory([site("a.test", leaf, upstream)], workers=2, idle="60s")
    kc = KeptConn(p.https_port, pki.ca, 1)
    kc.request()
    if breakage == "garbage-pem":
        tmp = crt.with_name("a.crt.bad")
        tmp.write_text("-----BEGIN CERTIFICATE-----\nthis is not base64!!\n"
                       "-----END CERTIFICATE-----\n")
        os.replace(tmp, crt)
    elif breakage == "key-mismatch":
        other = pki.leaf("a.test", org="other", serial=0x3999)
        shutil.copyfile(other.crt, crt)  # a valid cert whose key is not a.key
    else:
        crt.unlink()
    log_before = len(p.log_text())
    p.proc.send_signal(signal.SIGHUP)

    def logged():
        new = p.log_text()[log_before:]
        return new if ("a.crt" in new or "a.key" in new) else None

    why = wait_for(logged, RELOAD_TIMEOUT,
                   what="psproxy logging why %s/a.crt was not loaded" % d)
    time.sleep(0.3)  # a grace: a crash after the refusal would show by now
    assert_alive(p)
    serials = [_handshake_serial(p.https_port) for _ in range(10)]
    assert serials == [0x3001] * 10, "after a broken reload handshakes got %r; log: %s" % (
        ["%X" % s for s in serials], why)
    for _ in range(3):
        kc.request()
    kc.sock.close()
    assert_serves(p, pki.ca)
    # A good certificate afterwards is picked up by the next SIGHUP.
    pki.leaf("a.test", org="gen 2", serial=0x3002, crt=crt, key=key)
    p.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: _handshake_serial(p.https_port) == 0x3002, RELOAD_TIMEOUT,
             what="the fixed certificate served after SIGHUP")


# -- testssl.sh -----------------------------------------------------------------------


TESTSSL = shutil.which("testssl")


@pytest.mark.skipif(os.environ.get("PSPROXY_TESTSSL") != "1",
                    reason="slow; set PSPROXY_TESTSSL=1 to run testssl.sh")
@pytest.mark.peer("testssl")
def test_testssl_finds_no_high_severity_issue(one_site, tmp_path):
    out = tmp_path / "testssl.json"
    cmd = [TESTSSL, "--quiet", "--color", "0", "--warnings", "off", "--ip", "127.0.0.1",
           "--openssl-timeout", "10", "--jsonfile", str(out), "-p", "-s", "-f", "-U",
           "a.test:%d" % one_site.https_port]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=330,
                              stdin=subprocess.DEVNULL, cwd=str(tmp_path))
    except subprocess.TimeoutExpired as e:
        pytest.fail("testssl did not finish in 330 s; output:\n%s" % (
            (e.stdout or b"").decode(errors="replace")[-4000:]))
    text = proc.stdout.decode(errors="replace")
    print(text)
    assert out.exists(), "testssl wrote no JSON (rc %d):\n%s%s" % (
        proc.returncode, text[-3000:], proc.stderr.decode(errors="replace")[-2000:])
    findings = json.loads(out.read_text())
    by_id = {f["id"]: f for f in findings}
    summary = "\n".join("%-28s %-8s %s" % (f["id"], f["severity"], f["finding"])
                        for f in findings)
    print(summary)
    bad = [f for f in findings if f["severity"] in ("HIGH", "CRITICAL", "FATAL")]
    assert not bad, "testssl flagged:\n" + "\n".join(
        "%s %s %s" % (f["id"], f["severity"], f["finding"]) for f in bad)
    for pid in ("SSLv2", "SSLv3", "TLS1", "TLS1_1"):
        assert pid in by_id and by_id[pid]["finding"].startswith("not offered"), (
            pid, by_id.get(pid), summary)
    for pid in ("TLS1_2", "TLS1_3"):
        assert pid in by_id and by_id[pid]["finding"].startswith("offered"), (
            pid, by_id.get(pid), summary)
    fs = by_id.get("FS") or by_id.get("PFS")
    assert fs and "offered" in fs["finding"] and "not offered" not in fs["finding"], (
        fs, summary)
