"""Upstream names are looked up when psproxy dials, as Caddy does (#19): a
name that does not resolve at start is served as soon as it does, and a
name that moves is followed, without a reload.

psproxy runs in a private mount namespace (unshare -m, as root) where
/etc/hosts is a temp file bind-mounted over it, and nsswitch.conf says
`hosts: files`, so the test decides what a name resolves to and no lookup
leaves the machine. The hosts file is changed in place with one write that
changes one byte, so a lookup never reads a torn or empty file.
"""

import http.client
import json
import os
import select
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import (PSPROXY, SANITIZER_MARKS, START_TIMEOUT, UPSTREAM, WAIT_TIMEOUT, Proxy,
                      curl, free_port, make_config, proxy_block, reap, stop_and_check, tail)

NAME = "app.psproxy-test"
# seconds: the answer is reused about 1 s, then looked up again; the rest is
# room for a loaded machine (ASan, tests in parallel)
FOLLOW_WITHIN = 3.5


def _namespace_works(tmp_path):
    """None when this process may run a command in a private mount
    namespace with a file bind-mounted over /etc/hosts, else why not."""
    if os.geteuid() != 0:
        return "needs root for unshare -m and mount --bind"
    probe = tmp_path / "hosts-probe"
    probe.write_text("127.0.0.9 probe.psproxy-test\n")
    try:
        r = subprocess.run(
            ["unshare", "-m", "--propagation", "private", "sh", "-c",
             'mount --bind "$1" /etc/hosts && getent hosts probe.psproxy-test', "sh",
             str(probe)], capture_output=True, timeout=10, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as e:
        return "unshare not usable: %s" % e
    if r.returncode != 0 or b"127.0.0.9" not in r.stdout:
        return "unshare -m / mount --bind not permitted here: %s" % (
            r.stderr.decode(errors="replace").strip() or "rc %d" % r.returncode)
    return None


class Hosts:
    """The /etc/hosts psproxy sees. Each state is the same length, so a
    change is one pwrite at offset 0 that alters a single byte."""

    def __init__(self, tmp_path):
        self.path = tmp_path / "hosts"

    @staticmethod
    def text(ip):
        # "#" comments the name out (it does not resolve); a leading blank
        # is allowed in hosts(5)
        entry = (" %s %s" % (ip, NAME)) if ip else ("#127.0.0.2 %s" % NAME)
        return ("127.0.0.1 localhost\n%s\n" % entry).encode()

    def write_initial(self, ip):
        self.path.write_bytes(self.text(ip))

    def set(self, ip):
        data = self.text(ip)
        old = self.path.read_bytes()
        assert len(old) == len(data)
        assert sum(a != b for a, b in zip(old, data)) == 1, "one byte changes"
        fd = os.open(self.path, os.O_WRONLY)
        try:
            assert os.pwrite(fd, data, 0) == len(data)
        finally:
            os.close(fd)


class NsProxy(Proxy):
    """psproxy in its own mount namespace, with HOSTS as its /etc/hosts and
    an nsswitch.conf that reads only files for host names."""

    def __init__(self, tmp_path, config, port, hosts, nameserver=None):
        self.port = port
        self.dir = tmp_path
        self.conf = tmp_path / ("psproxy-%d.conf" % port)
        self.conf.write_text(config)
        self.log = tmp_path / ("psproxy-%d.log" % port)
        self._logf = open(self.log, "w")
        self.stopped = None
        nss = tmp_path / "nsswitch.conf"
        resolv = tmp_path / "resolv.conf"
        # with NAMESERVER, names not in the hosts file go to it (and only it)
        nss.write_text("passwd: files\ngroup: files\nhosts: files%s\n"
                       % (" dns" if nameserver else ""))
        resolv.write_text("nameserver %s\noptions timeout:3 attempts:1\n"
                          % (nameserver or "127.0.0.1"))
        script = ('mount --bind "$1" /etc/hosts && mount --bind "$2" /etc/nsswitch.conf '
                  '&& mount --bind "$3" /etc/resolv.conf && exec "$4" -c "$5"')
        # unshare execs sh, which execs psproxy: the child's pid is psproxy's
        self.proc = subprocess.Popen(
            ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh",
             str(hosts.path), str(nss), str(resolv), PSPROXY, str(self.conf)],
            cwd=str(tmp_path), stdin=subprocess.DEVNULL, stdout=self._logf,
            stderr=subprocess.STDOUT)


class HostUpstream:
    """upstream.py listening on HOST (127.0.0.x) and PORT."""

    def __init__(self, tmp_path, host, port=0):
        self.host = host
        self.log = tmp_path / ("upstream-%s.log" % host)
        self._logf = open(self.log, "w")
        self.proc = subprocess.Popen(
            [sys.executable, str(UPSTREAM), "--host", host, "--port", str(port)],
            stdout=subprocess.PIPE, stderr=self._logf, stdin=subprocess.DEVNULL)
        ready, _, _ = select.select([self.proc.stdout], [], [], START_TIMEOUT)
        line = self.proc.stdout.readline() if ready else b""
        if not line.strip().isdigit():
            self.stop()
            raise OSError("test upstream on %s:%d did not start: %s"
                          % (host, port, tail(self.log)))
        self.port = int(line)

    def targets(self):
        """The request targets it has read (asked directly)."""
        with socket.create_connection((self.host, self.port), timeout=5) as s:
            s.sendall(b"GET /stats HTTP/1.1\r\nHost: up\r\nConnection: close\r\n\r\n")
            data = b""
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                data += chunk
        return json.loads(data.split(b"\r\n\r\n", 1)[1])["targets"]

    def stop(self):
        reap(self.proc)
        self.proc.stdout.close()
        self._logf.close()


@pytest.fixture
def ns(tmp_path):
    why = _namespace_works(tmp_path)
    if why is not None:
        pytest.skip(why)
    started = {"proxies": [], "upstreams": []}

    def upstream(host, port=0):
        up = HostUpstream(tmp_path, host, port)
        started["upstreams"].append(up)
        return up

    def upstream_pair(hosts_):
        """Upstreams on each of HOSTS_ sharing one port."""
        for _ in range(20):
            first = upstream(hosts_[0])
            try:
                return [first] + [upstream(h, first.port) for h in hosts_[1:]]
            except OSError:  # that port is taken on another address: again
                continue
        pytest.fail("no port free on every one of %s" % (hosts_,))

    def proxy(body, hosts, nameserver=None, **opts):
        port = free_port()
        p = NsProxy(tmp_path, make_config(port, body, **opts), port, hosts, nameserver)
        started["proxies"].append(p)
        p.wait_ready()
        return p

    yield type("Ns", (), {"upstream": staticmethod(upstream),
                          "upstream_pair": staticmethod(upstream_pair),
                          "proxy": staticmethod(proxy), "hosts": Hosts(tmp_path)})
    try:
        stop_and_check(started["proxies"])
    finally:
        for up in started["upstreams"]:
            up.stop()


def get(port, path="/echo", conn=None, timeout=5):
    """(status, server_host or None); CONN is a keep-alive HTTPConnection or None."""
    own = conn is None
    c = conn or http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        c.request("GET", path)
        r = c.getresponse()
        body = r.read()
        host = None
        if r.status == 200:
            host = json.loads(body)["server_host"]
        return r.status, host
    finally:
        if own:
            c.close()


def test_unresolvable_name_is_accepted_and_served_once_it_resolves(ns, tmp_path):
    up = ns.upstream("127.0.0.2")
    ns.hosts.write_initial(None)
    body = proxy_block("%s:%d" % (NAME, up.port), dial_timeout="1s")
    # Caddy accepts a name that does not resolve at load; so does validate
    conf = tmp_path / "validate.conf"
    conf.write_text(make_config(free_port(), body))
    v = subprocess.run([PSPROXY, "validate", "-c", str(conf)], capture_output=True, timeout=20)
    assert v.returncode == 0, v.stdout + v.stderr

    p = ns.proxy(body, ns.hosts)
    for _ in range(3):
        assert get(p.port) == (502, None)
    assert "cannot resolve %s" % NAME in p.log_text()

    ns.hosts.set("127.0.0.2")
    t0 = time.monotonic()
    status = None
    while time.monotonic() - t0 < FOLLOW_WITHIN + 3:
        status, host = get(p.port)
        if status == 200:
            break
        assert status == 502
        time.sleep(0.05)
    took = time.monotonic() - t0
    print("served %.2f s after the name resolved" % took)
    assert status == 200 and host == "127.0.0.2"
    assert took < FOLLOW_WITHIN, "took %.2f s" % took
    # and it stays served (the failure's passive health mark does not keep it out)
    for _ in range(5):
        assert get(p.port) == (200, "127.0.0.2")


def test_moved_name_is_followed_without_a_failed_request(ns):
    old, new = ns.upstream_pair(["127.0.0.2", "127.0.0.3"])
    ns.hosts.write_initial("127.0.0.2")
    p = ns.proxy(proxy_block("%s:%d" % (NAME, old.port)), ns.hosts)

    results = []  # (time, client kind, status, server host)
    stop = threading.Event()
    errors = []

    def client(kind):
        conn = None
        try:
            while not stop.is_set():
                if kind == "keepalive" and conn is None:
                    conn = http.client.HTTPConnection("127.0.0.1", p.port, timeout=5)
                status, host = get(p.port, conn=conn)
                results.append((time.monotonic(), kind, status, host))
                time.sleep(0.01)
        except Exception as e:  # a failed request is a finding, not a crash
            errors.append("%s: %r" % (kind, e))
        finally:
            if conn is not None:
                conn.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True)
               for k in ("keepalive", "fresh")]
    for t in threads:
        t.start()
    try:
        time.sleep(1.5)  # a real wait: half-way through an answer's second, not at its end
        t_move = time.monotonic()
        ns.hosts.set("127.0.0.3")
        time.sleep(FOLLOW_WITHIN + 1.5)  # a real wait: the clients run across the move
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=10)
    assert not any(t.is_alive() for t in threads), "a client hangs"
    assert not errors, errors
    failed = [r for r in results if r[2] != 200]
    assert not failed, "failed requests: %r" % failed[:10]
    before = [r for r in results if r[0] < t_move]
    assert before and all(r[3] == "127.0.0.2" for r in before)
    for kind in ("keepalive", "fresh"):
        mine = [r for r in results if r[1] == kind and r[0] >= t_move]
        last_old = max((r[0] for r in mine if r[3] == "127.0.0.2"), default=t_move)
        print("%s: %d requests after the move, the last to the old address %.2f s after it"
              % (kind, len(mine), last_old - t_move))
        assert last_old - t_move < FOLLOW_WITHIN, "%s: old address %.2f s after the move" % (
            kind, last_old - t_move)
        assert any(r[3] == "127.0.0.3" for r in mine)
        late = [r for r in mine if r[0] > t_move + FOLLOW_WITHIN]
        assert late and all(r[3] == "127.0.0.3" for r in late)


def test_active_health_checks_follow_a_moved_name(ns):
    old, new = ns.upstream_pair(["127.0.0.2", "127.0.0.3"])
    ns.hosts.write_initial("127.0.0.2")
    extra = "\t\thealth_uri /health\n\t\thealth_interval 200ms\n\t\thealth_timeout 1s"
    p = ns.proxy(proxy_block("%s:%d" % (NAME, old.port), extra=extra), ns.hosts)
    deadline = time.monotonic() + WAIT_TIMEOUT
    while "/health" not in old.targets():
        assert time.monotonic() < deadline, "no health check reached the first address"
        time.sleep(0.1)
    assert "/health" not in new.targets()
    ns.hosts.set("127.0.0.3")
    t0 = time.monotonic()
    while "/health" not in new.targets():
        assert time.monotonic() - t0 < FOLLOW_WITHIN + 1, "checks still go to the old address"
        time.sleep(0.05)
    print("health checks reached the new address %.2f s after the move" % (time.monotonic() - t0))
    # and only it, from then on
    n_old = old.targets().count("/health")
    time.sleep(1.0)  # a real wait: five check intervals, none to the old address
    assert old.targets().count("/health") == n_old
    assert get(p.port)[0] == 200


class SilentDns:
    """A DNS server on 127.0.0.77:53 that reads queries and never answers:
    every lookup that reaches it hangs for the resolver's timeout (3 s)."""

    def __init__(self):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.77", 53))
        self.sock.settimeout(0.2)
        self.queries = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self):
        while not self.stop.is_set():
            try:
                self.sock.recvfrom(4096)
                self.queries += 1
            except socket.timeout:
                pass

    def close(self):
        self.stop.set()
        self.thread.join(timeout=5)
        self.sock.close()


def test_a_hanging_lookup_blocks_no_loop_and_outlives_its_requests(ns):
    """The lookup runs in libuv's thread pool: while it hangs, the worker
    serves other requests, a request waiting for it gets 504 at its dial
    timeout, a client that leaves mid-lookup frees nothing the lookup's
    callback touches (ASan builds check), and a stop mid-lookup is clean."""
    try:
        dns = SilentDns()
    except OSError as e:
        pytest.skip("cannot bind 127.0.0.77:53: %s" % e)
    try:
        up = ns.upstream("127.0.0.2")
        ns.hosts.write_initial(None)
        body = ('\trespond /ping "pong" 200\n'
                + proxy_block("slow.psproxy-test:%d" % up.port, dial_timeout="500ms"))
        p = ns.proxy(body, ns.hosts, nameserver="127.0.0.77")
        t0 = time.monotonic()
        assert get(p.port)[0] == 504
        took = time.monotonic() - t0
        # at dial_timeout (500ms), below the resolver's 3 s timeout
        assert 0.4 < took < 2.8, "504 after %.2f s" % took
        assert dns.queries >= 1
        # the lookup still hangs: the loop answers what needs no upstream
        t0 = time.monotonic()
        c = http.client.HTTPConnection("127.0.0.1", p.port, timeout=5)
        c.request("GET", "/ping")
        r = c.getresponse()
        assert (r.status, r.read()) == (200, b"pong")
        c.close()
        assert time.monotonic() - t0 < 2.0  # not held by the lookup (3 s)
        # clients that leave while their dial waits for a lookup
        for _ in range(5):
            s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
            s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
            time.sleep(0.05)  # a real wait: the client leaves mid-lookup
            s.close()
        # and a stop while a lookup is still in flight
        s = socket.create_connection(("127.0.0.1", p.port), timeout=5)
        s.sendall(b"GET /echo HTTP/1.1\r\nHost: x\r\n\r\n")
        time.sleep(0.1)  # a grace for the request to be read; too short only tests less
        t0 = time.monotonic()
        rc, killed = p.stop()
        s.close()
        assert not killed and rc == 0, "psproxy exit %s (killed %s)" % (rc, killed)
        print("stopped %.2f s after SIGTERM with a lookup in flight" % (time.monotonic() - t0))
    finally:
        dns.close()
