"""The access log against Caddy's own (issue #19): one Caddyfile, run by
`caddy run` (Caddy 2.6.2) and by psproxy, the two copies differing only in
ports and log file paths; the same requests to both, through one test
upstream; then the entries compared field by field, JSON and console.

What may differ, and why (everything else must be equal):
- ts, duration, request.remote_port: the clock and the client's port;
- request.host: the port in it (each server has its own);
- size and resp_headers Content-Length for /echo-like answers: the
  upstream echoes the request it got (its X-Forwarded-* and ports), so the
  bodies differ by a few bytes;
- resp_headers Server (Caddy adds "Server: Caddy") and Alt-Svc (Caddy
  advertises the HTTP/3 it serves; psproxy has no HTTP/3), Date and Via;
- request.tls.cipher_suite: each server's preference among the suites the
  client offers (Go puts AES-128-GCM first, OpenSSL AES-256-GCM); both
  must be TLS 1.3 suites;
- top-level keys: psproxy writes two more, bytes_read (where Caddy 2.7 and
  later write it) and upstream (psproxy's own, last).

Caddy lays out header maps in Go's random map order; they are compared as
maps (psproxy keeps the order in which the names came).
"""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from conftest import PSPROXY, SANITIZER_MARKS, curl, free_port, reap, wait_port
from tls_util import Pki

CADDY = shutil.which("caddy")
pytestmark = pytest.mark.peer("caddy")

CADDYFILE = """{{
	admin off
	http_port {http_port}
	https_port {https_port}
	auto_https off
}}

http://127.0.0.1:{json_port} {{
	log {{
		output file {dir}/json.log
		format json
	}}
	respond /gone "bye" 410
	reverse_proxy {upstream}
}}

http://127.0.0.1:{console_port} {{
	log {{
		output file {dir}/console.log
		format console
	}}
	reverse_proxy {upstream}
}}

https://a.test:{https_port} {{
	tls {crt} {key}
	log {{
		output file {dir}/https.log
		format json
	}}
	reverse_proxy {upstream}
}}
"""

TLS13_SUITES = {0x1301, 0x1302, 0x1303}

# (site, path, curl arguments, the body varies between the two servers)
JSON_REQUESTS = [
    ("/echo?q=%22x", ["-A", "TestAgent/1.0", "-e", "http://ref.example/x",
                      "-H", "Authorization: Bearer secret", "-H", "Cookie: a=b",
                      "-H", "x-dup: 1", "-H", "X-DUP: 2", "-H", "x-wEIRD-cASE: v",
                      "-H", "X-Utf: caf\u00e9"], True),
    ("/echo", ["-d", "hello"], True),
    ("/echo", ["-H", "Transfer-Encoding: chunked", "-d", "hello"], True),
    ("/bytes/10", ["-I"], False),
    ("/status/404", [], False),
    ("/respheaders?X-A=1&X-A=2&Set-Cookie=z", [], True),
    ("/chunked/100", [], False),
    ("/gone", [], False),
    ("/echo", ["--http1.0"], True),
]
CONSOLE_REQUESTS = [
    ("/echo?console", ["-A", "TestAgent/1.0", "-e", "http://ref.example/c"], True),
    ("/status/503", [], False),
]
HTTPS_REQUESTS = [
    ("/echo", ["--http2", "-A", "h2agent"], True),
    ("/echo", ["--http2", "-X", "POST"], True),  # no body: no content-length from the client
    ("/echo", ["--http2", "-d", "hi", "-H", "Cookie: a=1", "-H", "Cookie: b=2"], True),
    ("/bytes/10", ["--http1.1"], False),
]


class Server:
    """Caddy or psproxy on its own copy of CADDYFILE."""

    def __init__(self, tmp, name, cmd, upstream, pki_leaf):
        self.dir = tmp / name
        self.dir.mkdir()
        self.json_port, self.console_port = free_port(), free_port()
        self.https_port, self.http_port = free_port(), free_port()
        conf = self.dir / "Caddyfile"
        conf.write_text(CADDYFILE.format(
            dir=self.dir, upstream=upstream.addr, crt=pki_leaf.crt, key=pki_leaf.key,
            json_port=self.json_port, console_port=self.console_port,
            https_port=self.https_port, http_port=self.http_port))
        self.logpath = self.dir / "server.log"
        self._logf = open(self.logpath, "w")
        env = dict(os.environ, HOME=str(self.dir / "home"),
                   XDG_DATA_HOME=str(self.dir / "xdg-data"),
                   XDG_CONFIG_HOME=str(self.dir / "xdg-config"))
        self.proc = subprocess.Popen(cmd + [str(conf)] if name == "psproxy" else
                                     cmd + ["--config", str(conf), "--adapter", "caddyfile"],
                                     env=env, cwd=str(self.dir), stdin=subprocess.DEVNULL,
                                     stdout=self._logf, stderr=subprocess.STDOUT)
        for port in (self.json_port, self.console_port, self.https_port):
            wait_port(port, self.proc, 15, name, self.logpath)

    def url(self, site, path):
        if site == "https":
            return "https://a.test:%d%s" % (self.https_port, path)
        return "http://127.0.0.1:%d%s" % (getattr(self, site + "_port"), path)

    def entries(self, log, want, timeout=20.0):
        path = self.dir / log
        deadline = time.monotonic() + timeout
        while True:
            lines = path.read_text().splitlines() if path.exists() else []
            if len(lines) >= want or time.monotonic() > deadline:
                return lines
            time.sleep(0.05)

    def stop(self):
        """Stops it; returns what went wrong in psproxy's log, or None."""
        rc, killed = reap(self.proc)
        self._logf.close()
        text = self.logpath.read_text(errors="replace")
        if killed or any(m in text for m in SANITIZER_MARKS):
            return "%s exited %s (killed: %s); log:\n%s" % (self.dir.name, rc, killed,
                                                             text[-4000:])
        return None


@pytest.fixture
def servers(tmp_path, upstream):
    pki = Pki(tmp_path / "pki")
    leaf = pki.leaf("a.test")
    started = []
    try:
        started.append(Server(tmp_path, "caddy", [CADDY, "run"], upstream, leaf))
        started.append(Server(tmp_path, "psproxy", [PSPROXY, "-c"], upstream, leaf))
        yield started[0], started[1], pki
    finally:
        problems = [p for p in (s.stop() for s in started) if p is not None]
    assert not problems, problems


def send(server, pki, site, requests, tmp):
    for path, args, _ in requests:
        extra = []
        if site == "https":
            extra = ["--resolve", "a.test:%d:127.0.0.1" % server.https_port,
                     "--cacert", str(pki.ca)]
        r = curl(server.url(site, path), *extra, *args, tmp=tmp)
        assert r.rc == 0 and r.status > 0, (server.dir.name, path, r)


RESP_IGNORED = {"Server", "Alt-Svc", "Date", "Via"}


def compare(caddy, ours, port_caddy, port_ours, body_varies, what):
    """Asserts the psproxy entry OURS says what Caddy's entry CADDY says,
    but for the differences the module docstring lists."""
    assert set(caddy) <= set(ours) and set(ours) - set(caddy) <= {"bytes_read", "upstream"}, \
        (what, sorted(caddy), sorted(ours))
    # Caddy's order of the keys it writes
    assert [k for k in ours if k in caddy] == list(caddy), (what, list(caddy), list(ours))
    for k in ("level", "logger", "msg", "user_id", "status"):
        assert ours[k] == caddy[k], (what, k, caddy[k], ours[k])
    if not body_varies:
        assert ours["size"] == caddy["size"], (what, caddy["size"], ours["size"])
    assert isinstance(ours["duration"], (int, float)) and ours["duration"] >= 0, what

    rc, ro = caddy["request"], ours["request"]
    assert list(ro) == list(rc), (what, list(rc), list(ro))
    for k in ("remote_ip", "proto", "method", "uri", "headers"):
        assert ro[k] == rc[k], (what, k, rc[k], ro[k])
    assert ro["host"].replace(str(port_ours), "PORT") == rc["host"].replace(str(port_caddy),
                                                                           "PORT"), what
    assert ro["remote_port"].isdigit(), what
    if "tls" in rc:
        tc, to = rc["tls"], ro["tls"]
        assert list(to) == list(tc), (what, tc, to)
        for k in ("resumed", "version", "proto", "server_name"):
            assert to[k] == tc[k], (what, k, tc, to)
        assert tc["cipher_suite"] in TLS13_SUITES and to["cipher_suite"] in TLS13_SUITES, what

    def resp(h):
        return {k: v for k, v in h.items() if k not in RESP_IGNORED and
                not (body_varies and k == "Content-Length")}
    assert resp(ours["resp_headers"]) == resp(caddy["resp_headers"]), \
        (what, caddy["resp_headers"], ours["resp_headers"])


def run_site(servers, tmp_path, site, log, requests):
    caddy, ours, pki = servers
    send(caddy, pki, site, requests, tmp_path)
    send(ours, pki, site, requests, tmp_path)
    lc = caddy.entries(log, len(requests))
    lo = ours.entries(log, len(requests))
    assert len(lc) == len(requests), lc
    assert len(lo) == len(requests), lo
    return lc, lo


def test_json_entries_say_what_caddys_say(servers, tmp_path):
    caddy, ours, _ = servers
    lc, lo = run_site(servers, tmp_path, "json", "json.log", JSON_REQUESTS)
    for (path, args, varies), c, o in zip(JSON_REQUESTS, lc, lo):
        compare(json.loads(c), json.loads(o), caddy.json_port, ours.json_port, varies,
                (path, args))
    first = json.loads(lo[0])
    assert abs(first["ts"] - time.time()) < 60, first
    assert first["request"]["headers"]["User-Agent"] == ["TestAgent/1.0"], first
    assert first["request"]["headers"]["Referer"] == ["http://ref.example/x"], first


def test_https_and_h2_entries_say_what_caddys_say(servers, tmp_path):
    caddy, ours, _ = servers
    lc, lo = run_site(servers, tmp_path, "https", "https.log", HTTPS_REQUESTS)
    for (path, args, varies), c, o in zip(HTTPS_REQUESTS, lc, lo):
        compare(json.loads(c), json.loads(o), caddy.https_port, ours.https_port, varies,
                (path, args))
    assert [json.loads(l)["request"]["tls"]["proto"] for l in lo] == ["h2", "h2", "h2",
                                                                       "http/1.1"], lo


def shape(line):
    """A console line's time, level, logger and message columns as a
    regex (digits of the time generalised), and its fields."""
    when, level, logger, msg, fields = line.split("\t", 4)
    head = "\t".join([re.sub(r"\d", r"\\d", re.escape(when)), re.escape(level),
                      re.escape(logger), re.escape(msg)])
    return head, fields


def test_console_entries_have_caddys_layout(servers, tmp_path):
    caddy, ours, _ = servers
    lc, lo = run_site(servers, tmp_path, "console", "console.log", CONSOLE_REQUESTS)
    for (path, args, varies), c, o in zip(CONSOLE_REQUESTS, lc, lo):
        head, fields_c = shape(c)
        assert re.match(head + "\t", o), (path, c, o)
        fields_o = o.split("\t", 4)[4]
        fc, fo = json.loads(fields_c), json.loads(fields_o)
        # zap's console encoder spaces its JSON: ", " and ": " everywhere
        for text, obj in ((fields_c, fc), (fields_o, fo)):
            assert json.dumps(obj, separators=(", ", ": "), ensure_ascii=False) == text, text
        # the columns carry what the JSON's level, logger and msg do
        for line, obj in ((c, fc), (o, fo)):
            _, level, logger, msg, _ = line.split("\t", 4)
            obj.update(level=level, logger=logger, msg=msg)
        compare(fc, fo, caddy.console_port, ours.console_port, varies, (path, args))
    # Caddy 2.6 writes the time in UTC
    when = time.strptime(lo[0].split("\t")[0].split(".")[0], "%Y/%m/%d %H:%M:%S")
    assert abs(time.mktime(when) - time.mktime(time.gmtime())) < 60, lo[0]
