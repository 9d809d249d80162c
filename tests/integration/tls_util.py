"""Helpers for the TLS integration tests (test_tls.py): a throwaway PKI made
with the openssl CLI, Caddyfiles for HTTPS sites, and TLS clients (Python's
ssl module, openssl s_client, curl) that report what they were served.

Everything is bounded in time: subprocesses get timeouts, sockets get
timeouts, and waits poll against a deadline.
"""

import os
import re
import socket
import ssl
import subprocess
import time
from pathlib import Path

from conftest import curl, wait_until

OPENSSL = "openssl"
CMD_TIMEOUT = 20


def run(cmd, *, input=None, timeout=CMD_TIMEOUT, check=True):
    """Runs CMD (no shell); returns CompletedProcess with text output."""
    p = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout,
                       stdin=None if input is not None else subprocess.DEVNULL)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s%s" % (
            " ".join(map(str, cmd)), p.returncode,
            p.stdout.decode(errors="replace")[-2000:],
            p.stderr.decode(errors="replace")[-2000:]))
    return p


# -- certificates -----------------------------------------------------------------


def _keygen_args(kind):
    if kind == "ec":
        return ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256"]
    if kind == "rsa":
        return ["-newkey", "rsa:2048"]
    raise ValueError(kind)


class Leaf:
    """A leaf certificate: PATHs of its cert and key, and what it says."""

    def __init__(self, crt, key, names, serial, cn, org):
        self.crt = Path(crt)
        self.key = Path(key)
        self.names = list(names)
        self.serial = serial
        self.cn = cn
        self.org = org

    @property
    def serial_hex(self):
        """As Python's getpeercert() spells it."""
        return "%X" % self.serial

    def __repr__(self):
        return "<Leaf %s O=%s serial=%X>" % (self.cn, self.org, self.serial)


class Pki:
    """A test CA in DIR and leaves it signs (EC P-256 by default)."""

    def __init__(self, directory):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.ca_key = self.dir / "ca.key"
        self.ca = self.dir / "ca.pem"
        self._serial = 0x1000
        run([OPENSSL, "req", "-x509", *_keygen_args("ec"), "-nodes",
             "-keyout", self.ca_key, "-out", self.ca, "-days", "2",
             "-subj", "/O=psproxy tests/CN=psproxy test CA",
             "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        os.chmod(self.ca_key, 0o600)

    def leaf(self, cn, names=None, *, kind="ec", org="psproxy tests", serial=None,
             crt=None, key=None):
        """Issues a server certificate for CN (SAN: NAMES, default [CN]);
        writes it to CRT and its key (0600) to KEY; returns a Leaf."""
        names = names or [cn]
        if serial is None:
            self._serial += 1
            serial = self._serial
        tag = "%s-%x" % (cn, serial)
        crt = Path(crt or self.dir / (tag + ".crt"))
        key = Path(key or self.dir / (tag + ".key"))
        csr = self.dir / (tag + ".csr")
        ext = self.dir / (tag + ".ext")
        ext.write_text(
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature%s\n"
            "extendedKeyUsage=serverAuth\n"
            "subjectAltName=%s\n" % (
                ",keyEncipherment" if kind == "rsa" else "",
                ",".join("DNS:" + n for n in names)))
        # New files are written next to the target and renamed over it, so
        # a reader never sees half a file.
        tmp_key = key.with_name(key.name + ".new")
        tmp_crt = crt.with_name(crt.name + ".new")
        run([OPENSSL, "req", "-new", *_keygen_args(kind), "-nodes",
             "-keyout", tmp_key, "-out", csr, "-subj", "/O=%s/CN=%s" % (org, cn)])
        os.chmod(tmp_key, 0o600)
        run([OPENSSL, "x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
             "-set_serial", str(serial), "-days", "2", "-sha256", "-extfile", ext,
             "-out", tmp_crt])
        os.replace(tmp_key, key)
        os.replace(tmp_crt, crt)
        return Leaf(crt, key, names, serial, cn, org)


def cert_info(der_or_pem):
    """{'subject': ..., 'serial': int, 'san': [names], 'key': 'EC'|'RSA ...'}
    of a certificate, read with openssl x509."""
    if isinstance(der_or_pem, (bytes, bytearray)) and not der_or_pem.startswith(b"-----"):
        args, data = ["-inform", "DER"], bytes(der_or_pem)
    else:
        args = []
        data = der_or_pem if isinstance(der_or_pem, bytes) else der_or_pem.encode()
    p = run([OPENSSL, "x509", *args, "-noout", "-subject", "-serial",
             "-ext", "subjectAltName", "-nameopt", "RFC2253"], input=data)
    out = p.stdout.decode()
    subject = re.search(r"^subject=(.*)$", out, re.M).group(1).strip()
    serial = int(re.search(r"^serial=([0-9A-Fa-f]+)$", out, re.M).group(1), 16)
    san = re.findall(r"DNS:([^,\s]+)", out)
    return {"subject": subject, "serial": serial, "san": san}


# -- config -----------------------------------------------------------------------


def tls_config(sites, *, http_port, https_port, workers=1, default_sni=None,
               read_header="2s", idle="5s", global_extra=""):
    """A Caddyfile serving SITES, a list of (address, leaf or None, body):
    each gets `tls CRT KEY` (when a Leaf is given) and BODY."""
    g = ["\tadmin off", "\tworkers %d" % workers]
    if http_port is not None:
        g.append("\thttp_port %d" % http_port)
    if https_port is not None:
        g.append("\thttps_port %d" % https_port)
    if default_sni:
        g.append("\tdefault_sni %s" % default_sni)
    g += ["\tservers {", "\t\ttimeouts {", "\t\t\tread_header %s" % read_header,
          "\t\t\tidle %s" % idle, "\t\t}", "\t}"]
    if global_extra:
        g.append(global_extra)
    out = ["{"] + g + ["}", ""]
    for addr, leaf, body in sites:
        out.append("%s {" % addr)
        if leaf is not None:
            out.append("\ttls %s %s" % (leaf.crt, leaf.key))
        out.append(body)
        out.append("}")
        out.append("")
    return "\n".join(out)


# -- clients ----------------------------------------------------------------------


def client_context(ca=None, *, minv=None, maxv=None, alpn=None):
    """An ssl client context trusting CA (or verifying nothing when None)."""
    if ca is not None:
        ctx = ssl.create_default_context(cafile=str(ca))
    else:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    if minv is not None:
        ctx.minimum_version = minv
    if maxv is not None:
        ctx.maximum_version = maxv
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def tls_connect(port, server_hostname, ctx=None, timeout=5.0):
    """A TLS socket to 127.0.0.1:PORT after a finished handshake, with
    SNI SERVER_HOSTNAME (None: no SNI, certificate not verified)."""
    if ctx is None:
        ctx = client_context()
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    sock.settimeout(timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        return ctx.wrap_socket(sock, server_hostname=server_hostname)
    except BaseException:
        sock.close()
        raise


def served_cert(port, server_hostname, timeout=5.0):
    """cert_info() of the certificate a handshake with SNI SERVER_HOSTNAME
    (None: no SNI) gets; raises ssl.SSLError when the handshake fails."""
    s = tls_connect(port, server_hostname, timeout=timeout)
    try:
        der = s.getpeercert(binary_form=True)
    finally:
        s.close()
    return cert_info(der)


_SESSION_RE = re.compile(r"^(New|Reused), (\(NONE\)|TLSv[\d.]+|SSLv3), Cipher is (\S+)", re.M)


class SClient:
    """The output of one openssl s_client run."""

    def __init__(self, cmd, rc, out):
        self.cmd = cmd
        self.rc = rc
        self.out = out

    def sessions(self):
        """[(New|Reused, protocol, cipher)] for each handshake reported."""
        return _SESSION_RE.findall(self.out)

    @property
    def established(self):
        return any(proto.startswith("TLS") for _, proto, _ in self.sessions())

    @property
    def protocol(self):
        # "Protocol :" is in the SSL-Session block, which a TLS 1.3 client
        # prints only once a ticket came; the "New, ..." line names the
        # cipher's protocol, which is exact for TLS 1.3 suites.
        m = re.search(r"^\s*Protocol\s*:\s*(\S+)", self.out, re.M)
        if m:
            return m.group(1)
        tls13 = [p for _, p, _ in self.sessions() if p == "TLSv1.3"]
        return tls13[0] if tls13 else None

    @property
    def alpn(self):
        m = re.search(r"^ALPN protocol: (\S+)", self.out, re.M)
        if m:
            return m.group(1)
        return None if "No ALPN negotiated" in self.out else "?"

    def cert_pem(self):
        m = re.search(r"-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----", self.out,
                      re.S)
        return m.group(0) if m else None

    def cert(self):
        pem = self.cert_pem()
        return cert_info(pem) if pem else None

    def __repr__(self):
        return "<s_client rc=%s cmd=%s\n%s>" % (self.rc, " ".join(self.cmd), self.out[-3000:])


def s_client(port, *args, servername=None, input=b"", timeout=15):
    """Runs openssl s_client against 127.0.0.1:PORT with ARGS, INPUT on its
    stdin (closed after), and -servername SERVERNAME or -noservername."""
    cmd = [OPENSSL, "s_client", "-connect", "127.0.0.1:%d" % port]
    cmd += ["-servername", servername] if servername else ["-noservername"]
    cmd += [str(a) for a in args]
    p = subprocess.run(cmd, input=input, capture_output=True, timeout=timeout)
    out = p.stdout.decode(errors="replace") + "\n" + p.stderr.decode(errors="replace")
    return SClient(cmd, p.returncode, out)


def https_curl(host, port, path, ca, *args, tmp=None, timeout=30):
    """curl https://HOST:PORT/PATH resolved to 127.0.0.1, trusting CA."""
    return curl("https://%s:%d%s" % (host, port, path), "--resolve",
                "%s:%d:127.0.0.1" % (host, port), "--cacert", str(ca), *args,
                tmp=tmp, timeout=timeout)


def wait_for(pred, timeout, interval=0.05, what="condition"):
    """conftest.wait_until with tls_util's older argument order."""
    return wait_until(pred, timeout, what=what, interval=interval)


def client_hello(server_hostname="a.test"):
    """The bytes of a real TLS ClientHello (Python's ssl, via memory BIOs)."""
    ctx = client_context()
    inc, outg = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, outg, server_hostname=server_hostname)
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    data = outg.read()
    assert data[:1] == b"\x16" and len(data) > 100, data[:20]
    return data


class SlowReadingUpstream:
    """An upstream in a thread of the test process that reads request bodies
    slowly through a small receive buffer, so that psproxy has to stop
    reading its client and resume later (backpressure). Answers each request
    with JSON {body_len, body_sha256}; HTTP/1.1 with Content-Length only."""

    def __init__(self, pause=0.5, chunk=16384, delay=0.002):
        import threading
        self.pause, self.chunk, self.delay = pause, chunk, delay
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.stopping = False
        self.errors = []
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    @property
    def addr(self):
        return "127.0.0.1:%d" % self.port

    def _serve(self):
        import threading
        while not self.stopping:
            try:
                c, _ = self.sock.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            threading.Thread(target=self._conn, args=(c,), daemon=True).start()

    def _conn(self, c):
        import hashlib
        import json
        c.settimeout(20)
        buf = b""
        try:
            while not self.stopping:
                while b"\r\n\r\n" not in buf:
                    data = c.recv(4096)
                    if not data:
                        return
                    buf += data
                head, _, buf = buf.partition(b"\r\n\r\n")
                n = 0
                for line in head.split(b"\r\n")[1:]:
                    k, _, v = line.partition(b":")
                    if k.strip().lower() == b"content-length":
                        n = int(v)
                time.sleep(self.pause)
                h = hashlib.sha256()
                body, buf = buf[:n], buf[n:]
                h.update(body)
                got = len(body)
                while got < n:
                    data = c.recv(min(self.chunk, n - got))
                    if not data:
                        return
                    h.update(data)
                    got += len(data)
                    time.sleep(self.delay)
                doc = json.dumps({"body_len": got, "body_sha256": h.hexdigest()}).encode()
                c.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                          b"Content-Length: %d\r\n\r\n" % len(doc) + doc)
        except OSError as e:
            self.errors.append(repr(e))
        finally:
            c.close()

    def stop(self):
        self.stopping = True
        self.sock.close()
        self.thread.join(5)
