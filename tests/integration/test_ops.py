"""Operations: sd_notify, graceful stop, access log reopening and fields."""

import json
import os
import signal
import socket
import subprocess
import threading
import time

from conftest import (PSPROXY, WAIT_TIMEOUT, curl, free_port, make_config, proxy_block,
                      wait_log, wait_port, wait_until)


def refuses(port):
    """Whether nothing listens on PORT any more."""
    try:
        socket.create_connection(("127.0.0.1", port), 1).close()
    except OSError:
        return True
    return False


def start(tmp_path, body, env=None, **opts):
    port = free_port()
    conf = tmp_path / "ops.conf"
    conf.write_text(make_config(port, body, **opts))
    log = open(tmp_path / "ops.log", "w")
    p = subprocess.Popen([PSPROXY, "-c", str(conf)], stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL, env=dict(os.environ, **(env or {})))
    p.port, p.conf, p.logpath = port, conf, tmp_path / "ops.log"
    return p


def stop(p, timeout=10):
    if p.poll() is None:
        p.send_signal(signal.SIGTERM)
    try:
        return p.wait(timeout)
    except subprocess.TimeoutExpired:
        p.kill()
        p.wait(5)
        return None


def test_sd_notify_ready_reloading_stopping(tmp_path, upstream):
    path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.settimeout(5)
    p = start(tmp_path, proxy_block(upstream), env={"NOTIFY_SOCKET": path})
    try:
        assert sock.recv(256) == b"READY=1"
        # READY comes once it listens: a request works at once
        assert curl("http://127.0.0.1:%d/echo" % p.port, tmp=tmp_path).status == 200
        p.send_signal(signal.SIGHUP)
        msg = sock.recv(256).decode()
        assert msg.startswith("RELOADING=1\nMONOTONIC_USEC="), msg
        assert sock.recv(256) == b"READY=1"
        p.send_signal(signal.SIGTERM)
        assert sock.recv(256) == b"STOPPING=1"
        assert p.wait(10) == 0
    finally:
        stop(p)
        sock.close()


def test_sigterm_lets_a_request_in_flight_finish(tmp_path, upstream):
    p = start(tmp_path, proxy_block(upstream, response_header_timeout="5s"))
    try:
        wait_port(p.port, p, 10, "psproxy", p.logpath)
        res = {}
        t = threading.Thread(target=lambda: res.update(
            r=curl("http://127.0.0.1:%d/slow/2000" % p.port, tmp=tmp_path)))
        t.start()
        wait_until(lambda: upstream.saw("/slow/2000"), what="the request at the upstream")
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        # no new connections while it drains (the request is still in flight)
        try:
            wait_until(lambda: refuses(p.port), 10, what="the listener closed")
        except AssertionError:
            raise AssertionError("psproxy still accepts connections after SIGTERM") from None
        assert t.is_alive(), "the listener closed only after the request in flight ended"
        t.join(10)
        assert res["r"].status == 200, res["r"]
        assert p.wait(10) == 0
        assert time.monotonic() - t0 < 8.0  # a hang guard: the answer comes within 2 s
    finally:
        stop(p)


def test_sigterm_closes_idle_keepalives_at_once(tmp_path, upstream):
    p = start(tmp_path, proxy_block(upstream))
    try:
        wait_port(p.port, p, 10, "psproxy", p.logpath)
        s = socket.create_connection(("127.0.0.1", p.port), 5)
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        s.settimeout(5)
        assert s.recv(65536).startswith(b"HTTP/1.1 200")
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        # below the 5 s idle timeout, with room for a loaded machine
        assert time.monotonic() - t0 < 3.0, "an idle keep-alive held the stop"
        s.close()
    finally:
        stop(p)


def test_grace_period_bounds_the_stop(tmp_path, upstream):
    p = start(tmp_path, proxy_block(upstream, response_header_timeout="10s"),
              global_extra="\tgrace_period 1s\n")
    try:
        wait_port(p.port, p, 10, "psproxy", p.logpath)
        t = threading.Thread(target=lambda: curl("http://127.0.0.1:%d/slow/6000" % p.port,
                                                 tmp=tmp_path), daemon=True)
        t.start()
        wait_until(lambda: upstream.saw("/slow/6000"), what="the request at the upstream")
        t0 = time.monotonic()
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 0
        took = time.monotonic() - t0
        # not before the grace period; the upper bound stays below the 6 s
        # answer that would end it without one
        assert 0.8 <= took < 5.0, "stopped after %.2f s (grace_period 1s)" % took
        assert "grace period over" in p.logpath.read_text()
    finally:
        stop(p)


def test_access_log_names_the_upstream_and_reopens_on_sigusr1(tmp_path, upstream):
    log = tmp_path / "access.log"
    body = "\tlog {\n\t\toutput file %s\n\t\tformat json\n\t}\n%s" % (log, proxy_block(upstream))
    p = start(tmp_path, body)
    try:
        wait_port(p.port, p, 10, "psproxy", p.logpath)
        assert curl("http://127.0.0.1:%d/echo?one" % p.port, tmp=tmp_path).status == 200
        wait_until(lambda: log.exists() and log.read_text(), what="the first access log line")
        e = json.loads(log.read_text().splitlines()[0])
        assert e["upstream"] == upstream.addr, e
        os.rename(log, tmp_path / "access.log.1")  # what logrotate does
        p.send_signal(signal.SIGUSR1)
        wait_log(p.logpath, "reopening access log files")  # logged as it reopens
        assert curl("http://127.0.0.1:%d/echo?two" % p.port, tmp=tmp_path).status == 200
        deadline = time.monotonic() + WAIT_TIMEOUT
        while not log.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert log.exists(), "no new access log after SIGUSR1"
        wait_until(lambda: "?two" in log.read_text(), what="?two in the new access log")
        assert "?two" in log.read_text() and "?two" not in (tmp_path / "access.log.1").read_text()
    finally:
        stop(p)


def test_sighup_reload_switches_upstream_and_a_bad_config_keeps_serving(tmp_path,
                                                                       upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    p = start(tmp_path, proxy_block(a))
    try:
        wait_port(p.port, p, 10, "psproxy", p.logpath)
        url = "http://127.0.0.1:%d/echo" % p.port
        assert curl(url, tmp=tmp_path).json()["server_port"] == a.port
        good = p.conf.read_text().replace(a.addr, b.addr)
        p.conf.write_text(good)
        p.send_signal(signal.SIGHUP)
        wait_log(p.logpath, "is serving")
        r = curl(url, tmp=tmp_path)
        assert r.status == 200, (r, p.logpath.read_text())
        assert r.json()["server_port"] == b.port
        # a bad config: logged with file:line, the running one stays
        p.conf.write_text(good.replace("reverse_proxy", "reverse_prxy", 1))
        p.send_signal(signal.SIGHUP)
        wait_log(p.logpath, "stays")
        log = p.logpath.read_text()
        assert "%s:" % p.conf in log and "reverse_prxy" in log, log
        assert curl(url, tmp=tmp_path).json()["server_port"] == b.port
        assert p.poll() is None
    finally:
        stop(p)


def test_reload_opens_new_listeners_and_closes_removed_ones(tmp_path, upstream):
    p = start(tmp_path, proxy_block(upstream))
    try:
        wait_port(p.port, p, 10, "psproxy", p.logpath)
        port2 = free_port()
        text = p.conf.read_text()
        site = "http://127.0.0.1:%d {" % p.port
        p.conf.write_text(text.replace(site, "http://127.0.0.1:%d {" % port2))
        p.send_signal(signal.SIGHUP)
        wait_port(port2, p, WAIT_TIMEOUT, "psproxy", p.logpath)
        assert curl("http://127.0.0.1:%d/echo" % port2, tmp=tmp_path).status == 200
        try:
            wait_until(lambda: refuses(p.port), what="the old port closed")
        except AssertionError:
            raise AssertionError("the old port still listens after the reload") from None
    finally:
        stop(p)


def admin_get(port, path, method="GET"):
    s = socket.create_connection(("127.0.0.1", port), 5)
    s.sendall(("%s %s HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n" % (method, path))
              .encode())
    s.settimeout(5)
    data = b""
    while True:
        chunk = s.recv(65536)
        if not chunk:
            break
        data += chunk
    s.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body.decode()


def parse_exposition(text):
    """A small check of the Prometheus text format: every sample line is
    `name{labels} value`, every name has a TYPE, values are numbers."""
    types, samples = {}, {}
    for line in text.splitlines():
        if line.startswith("# TYPE "):
            _, _, name, kind = line.split(" ", 3)
            types[name] = kind
        elif line.startswith("#") or not line:
            continue
        else:
            key, _, value = line.rpartition(" ")
            float(value)
            name = key.split("{", 1)[0]
            base = name
            for suffix in ("_bucket", "_sum", "_count"):
                if name.endswith(suffix) and name[:-len(suffix)] in types:
                    base = name[:-len(suffix)]
            assert base in types, "no TYPE for %s" % name
            samples[key] = float(value)
    return samples


def test_admin_metrics_healthz_and_reload(tmp_path, upstream_factory):
    a, b = upstream_factory(), upstream_factory()
    admin_port = free_port()
    p = start(tmp_path, proxy_block(a),
              global_extra="")
    stop(p)
    # the same, with an admin listener instead of admin off
    conf_text = p.conf.read_text().replace("\tadmin off", "\tadmin 127.0.0.1:%d" % admin_port)
    p.conf.write_text(conf_text)
    log = open(tmp_path / "ops2.log", "w")
    q = subprocess.Popen([PSPROXY, "-c", str(p.conf)], stdout=log, stderr=subprocess.STDOUT,
                         stdin=subprocess.DEVNULL)
    try:
        wait_port(admin_port, q, 10, "admin", tmp_path / "ops2.log")
        wait_port(p.port, q, 10, "psproxy", tmp_path / "ops2.log")
        assert admin_get(admin_port, "/healthz") == (200, "ok\n")
        before = parse_exposition(admin_get(admin_port, "/metrics")[1])
        for _ in range(3):
            assert curl("http://127.0.0.1:%d/echo" % p.port, tmp=tmp_path).status == 200
        status, text = admin_get(admin_port, "/metrics")
        assert status == 200
        after = parse_exposition(text)
        key = 'psproxy_requests_total{site="127.0.0.1",code="2xx",upstream="%s"}' % a.addr
        assert after.get(key, 0) - before.get(key, 0) == 3, text
        assert after['psproxy_request_duration_seconds_count'] >= 3
        assert 'psproxy_upstream_healthy{upstream="%s"}' % a.addr in after
        assert "psproxy_open_connections" in after
        # psproxy reload through the admin listener
        p.conf.write_text(conf_text.replace(a.addr, b.addr))
        r = subprocess.run([PSPROXY, "reload", "-c", str(p.conf)], capture_output=True,
                           text=True, timeout=10)
        assert r.returncode == 0 and "reloaded" in r.stdout, r
        assert curl("http://127.0.0.1:%d/echo" % p.port,
                    tmp=tmp_path).json()["server_port"] == b.port
        # a bad file never reaches it: validated first
        p.conf.write_text(conf_text.replace("reverse_proxy", "reverse_prxy", 1))
        r = subprocess.run([PSPROXY, "reload", "-c", str(p.conf)], capture_output=True,
                           text=True, timeout=10)
        assert r.returncode != 0 and "reverse_prxy" in r.stderr, r
        assert admin_get(admin_port, "/nothing")[0] == 404
    finally:
        stop(q)
