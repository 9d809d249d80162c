"""Access logs (`log`): one line per request, Caddy 2.6's http.log.access
entry (test_access_log_caddy.py compares it with Caddy's own), JSON or
console, to stderr or a file; nothing without `log`."""

import json
import re
import time

from conftest import WAIT_TIMEOUT, curl, proxy_block, wait_log


def read_lines(path, want, timeout=WAIT_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_text().splitlines()
            if len(lines) >= want:
                return lines
        time.sleep(0.05)
    return path.read_text().splitlines() if path.exists() else []


def test_json_access_log_to_a_file(proxy_factory, upstream, tmp_path):
    log = tmp_path / "access.log"
    body = "\tlog {\n\t\toutput file %s\n\t\tformat json\n\t}\n%s" % (log, proxy_block(upstream))
    p = proxy_factory(body)
    r = curl(p.url + "/echo?q=%22x", "-d", "hello", "-A", "agent/1", "-e", "http://r.test/",
             "-H", "Cookie: secret=1", "-H", "x-twice: a", "-H", "X-Twice: b", tmp=tmp_path)
    assert r.status == 200, r
    lines = read_lines(log, 1)
    assert len(lines) == 1, lines
    e = json.loads(lines[0])
    assert list(e) == ["level", "ts", "logger", "msg", "request", "bytes_read", "user_id",
                       "duration", "size", "status", "resp_headers", "upstream"], e
    assert e["level"] == "info" and e["user_id"] == ""
    assert e["logger"] == "http.log.access.log0" and e["msg"] == "handled request"
    assert e["status"] == 200
    assert e["bytes_read"] == 5
    assert e["size"] == len(r.body)
    assert e["duration"] >= 0
    req = e["request"]
    assert list(req) == ["remote_ip", "remote_port", "proto", "method", "host", "uri", "headers"]
    # canonical names, values as arrays, one key per name, credentials
    # without their values (Caddy 2.6), no Host or framing fields
    assert req["headers"] == {"User-Agent": ["agent/1"], "Accept": ["*/*"],
                              "Referer": ["http://r.test/"], "Cookie": [],
                              "X-Twice": ["a", "b"], "Content-Length": ["5"],
                              "Content-Type": ["application/x-www-form-urlencoded"]}, req
    assert e["resp_headers"]["Content-Type"] == ["application/json"], e
    assert e["resp_headers"]["Content-Length"] == [str(len(r.body))], e
    assert "Connection" not in e["resp_headers"], e
    assert req["method"] == "POST"
    assert req["uri"] == "/echo?q=%22x"
    assert req["host"] == "127.0.0.1:%d" % p.port
    assert req["remote_ip"] == "127.0.0.1"
    assert req["proto"] == "HTTP/1.1"


def test_local_answers_are_logged_too(proxy_factory, tmp_path):
    log = tmp_path / "access.log"
    p = proxy_factory("\tlog {\n\t\toutput file %s\n\t}\n\trespond /gone 410\n" % log)
    r = curl(p.url + "/gone", tmp=tmp_path)
    assert r.status == 410, r
    e = json.loads(read_lines(log, 1)[0])  # not a terminal: JSON, as Caddy
    assert e["status"] == 410 and e["request"]["uri"] == "/gone"
    assert e["level"] == "error"  # Caddy logs a status from 400 up at error level
    # Go sets Content-Length as it writes an answer made here: not in the map
    assert "Content-Length" not in e["resp_headers"] and "upstream" not in e, e


def test_bare_log_goes_to_caddys_default_access_logger(proxy_factory, tmp_path):
    p = proxy_factory("\tlog\n\trespond /x 200\n")
    assert curl(p.url + "/x", tmp=tmp_path).status == 200
    wait_log(p, "handled request")
    line = [l for l in p.log_text().splitlines() if "handled request" in l]
    assert len(line) == 1, p.log_text()
    assert json.loads(line[0])["logger"] == "http.log.access", line


def test_console_format_to_stderr(proxy_factory, upstream, tmp_path):
    body = "\tlog {\n\t\tformat console\n\t}\n" + proxy_block(upstream)
    p = proxy_factory(body)
    assert curl(p.url + "/echo?console", tmp=tmp_path).status == 200
    wait_log(p, "handled request")
    line = [l for l in p.log_text().splitlines() if "http.log.access" in l]
    assert len(line) == 1, p.log_text()
    # zap's console layout as Caddy 2.6 sets it up: UTC wall clock with
    # milliseconds, the level in colour, logger, message, spaced JSON
    assert re.fullmatch(r'\d{4}/\d\d/\d\d \d\d:\d\d:\d\d\.\d{3}\t\x1b\[34mINFO\x1b\[0m\t'
                        r'http\.log\.access\.log0\thandled request\t\{"request": \{.*\}',
                        line[0]), line[0]
    assert '"uri": "/echo?console"' in line[0]
    assert json.loads(line[0].split("\t", 4)[4])["request"]["uri"] == "/echo?console"


def test_no_access_log_without_log_directive(proxy, tmp_path):
    assert curl(proxy.url + "/echo?quiet", tmp=tmp_path).status == 200
    time.sleep(0.2)  # a grace: a line written wrongly would be there by now
    assert "handled request" not in proxy.log_text()


def test_unwritable_log_file_fails_the_start_naming_the_line(tmp_path):
    import subprocess
    from conftest import PSPROXY
    conf = tmp_path / "bad.conf"
    conf.write_text("{\n\tadmin off\n}\nhttp://127.0.0.1:1 {\n\tlog {\n"
                    "\t\toutput file /nonexistent-dir/access.log\n\t}\n}\n")
    r = subprocess.run([PSPROXY, "-c", str(conf)], capture_output=True, text=True, timeout=10)
    assert r.returncode != 0
    assert "bad.conf:4: log: cannot open /nonexistent-dir/access.log" in r.stderr, r.stderr
