"""Upstream target tables across reloads (issue #21): each config
generation's table lives while connections accepted under it do, then is
freed; an upstream named again keeps its health (and its pools); a
keep-alive connection accepted before a reload routes by live health.

psproxy's /metrics says how many tables and targets are alive
(psproxy_upstream_tables, psproxy_upstream_targets); under ASan the run also
ends LeakSanitizer-clean (conftest checks the log)."""

import re
import signal
import time

import pytest

from conftest import (START_TIMEOUT, Proxy, Reader, connect, curl, free_port, stop_and_check,
                      wait_port)

RELOADS = 50
WAIT = 10.0  # seconds: an upper bound for what takes milliseconds


CHECKS = """
		health_uri /health
		health_interval 100ms
		health_timeout 3s
		health_fails 1
		health_passes 1"""


def config(port, admin_port, ups, checks=True):
    return """{
	admin 127.0.0.1:%d
	workers 2
}

http://127.0.0.1:%d {
	reverse_proxy %s {
		lb_policy first%s
	}
}
""" % (admin_port, port, " ".join(u.addr for u in ups), CHECKS if checks else "")


def metrics(admin_port):
    r = curl("http://127.0.0.1:%d/metrics" % admin_port)
    assert r.status == 200, r
    return r.body.decode()


def gauge(text, name):
    m = re.search(r"^%s (\d+)$" % re.escape(name), text, re.M)
    assert m, "no %s in /metrics:\n%s" % (name, text)
    return int(m.group(1))


def healthy(admin_port, up):
    m = re.search(r'^psproxy_upstream_healthy\{upstream="%s"\} (\d)$' % re.escape(up.addr),
                  metrics(admin_port), re.M)
    return m is not None and m.group(1) == "1"


def wait_until(cond, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return cond()


def set_health(up, status, slow_ms=0):
    assert curl("http://%s/control/health?status=%d" % (up.addr, status)).status == 200
    assert curl("http://%s/control/slow?ms=%d" % (up.addr, slow_ms)).status == 200


def whoami(sock):
    """One request on the kept-alive connection SOCK: the upstream's port."""
    sock.sendall(b"GET /whoami HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    resp = Reader(sock).response()
    assert resp.status == 200, resp
    return int(resp.body)


def open_conns(up):
    """Connections psproxy holds open to UP."""
    return sum(1 for _, is_open, _ in up.raw_conns() if is_open)


def new_whoami(port):
    r = curl("http://127.0.0.1:%d/whoami" % port)
    assert r.status == 200, r
    return int(r.body)


@pytest.fixture
def started(tmp_path):
    procs = []
    yield procs
    stop_and_check(procs)


def reload_to(p, ups, admin_port, n, checks=True):
    """Writes a config naming UPS, sends SIGHUP, waits for the Nth reload."""
    p.conf.write_text(config(p.port, admin_port, ups, checks))
    p.proc.send_signal(signal.SIGHUP)
    assert wait_until(lambda: p.log_text().count("is serving") >= n), \
        "reload %d not serving:\n%s" % (n, p.log_text()[-3000:])


def test_old_tables_are_freed_and_health_carries_over(tmp_path, upstream_factory, started):
    a, b, c = upstream_factory(), upstream_factory(), upstream_factory()
    port, admin_port = free_port(), free_port()
    p = Proxy(tmp_path, config(port, admin_port, [a, b]), port)
    started.append(p)
    p.wait_ready()
    # the admin listener opens after the workers' (seconds later under TSan)
    wait_port(admin_port, p.proc, START_TIMEOUT, "psproxy's admin listener", p.log)
    assert wait_until(lambda: healthy(admin_port, a) and healthy(admin_port, b))

    # A keep-alive client connection accepted under the first config keeps
    # sending while the config changes 50 times (C named in every other one).
    old = connect(port)
    assert whoami(old) == a.port
    for n in range(1, RELOADS + 1):
        reload_to(p, [a, b, c] if n % 2 else [a, b], admin_port, n)
        assert whoami(old) == a.port, "request %d on the old connection" % n
        if n % 10 == 0:
            assert new_whoami(port) == a.port
    # the old connection's table and the current one, nothing in between
    assert wait_until(lambda: gauge(metrics(admin_port), "psproxy_upstream_tables") == 2), \
        metrics(admin_port)
    # A and B, shared by both tables; C (never dialed) went with its tables
    assert gauge(metrics(admin_port), "psproxy_upstream_targets") == 2, metrics(admin_port)

    # A fails its check: the old connection routes by the live verdict.
    set_health(a, 503)
    assert wait_until(lambda: not healthy(admin_port, a)), metrics(admin_port)
    assert whoami(old) == b.port, "the old connection routed by frozen health"

    # A reload keeps A's verdict: with /health answering only after 2 s, no
    # check of the new generation has finished when these requests come.
    set_health(a, 503, slow_ms=2000)
    reload_to(p, [a, b, c], admin_port, RELOADS + 1)
    for _ in range(3):
        assert new_whoami(port) == b.port, "A's health did not carry over the reload"
    assert whoami(old) == b.port

    # The old connection ends: its table goes with it.
    old.close()
    assert wait_until(lambda: gauge(metrics(admin_port), "psproxy_upstream_tables") == 1), \
        metrics(admin_port)
    assert gauge(metrics(admin_port), "psproxy_upstream_targets") == 3
    # C named no more, and never dialed: its target goes with the table
    set_health(a, 200)
    reload_to(p, [a, b], admin_port, RELOADS + 2)
    assert wait_until(lambda: gauge(metrics(admin_port), "psproxy_upstream_targets") == 2), \
        metrics(admin_port)
    assert gauge(metrics(admin_port), "psproxy_upstream_tables") == 1
    assert wait_until(lambda: healthy(admin_port, a))
    assert new_whoami(port) == a.port


def test_pool_of_a_removed_upstream_is_closed_and_freed(tmp_path, upstream_factory, started):
    """An upstream the new config drops: its idle pooled connections close
    and its target is freed once no connection of the old config uses it."""
    a, b = upstream_factory(), upstream_factory()
    port, admin_port = free_port(), free_port()
    p = Proxy(tmp_path, config(port, admin_port, [a], checks=False), port)
    started.append(p)
    p.wait_ready()
    wait_port(admin_port, p.proc, START_TIMEOUT, "psproxy's admin listener", p.log)
    for _ in range(4):  # a pooled connection to A on whichever worker
        assert new_whoami(port) == a.port
    assert wait_until(lambda: open_conns(a) >= 1), a.raw_conns()
    reload_to(p, [b], admin_port, 1, checks=False)
    assert new_whoami(port) == b.port
    # A's idle connections are closed by the reload, its target freed
    assert wait_until(lambda: open_conns(a) == 0), a.raw_conns()
    assert wait_until(lambda: gauge(metrics(admin_port), "psproxy_upstream_targets") == 1), \
        metrics(admin_port)
    assert gauge(metrics(admin_port), "psproxy_upstream_tables") == 1
