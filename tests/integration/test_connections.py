"""Connection handling: client keep-alive, upstream connection reuse,
pipelining, and the idle and read_header timeouts."""

import json
import os
import socket
import subprocess
import threading
import time

from conftest import CLOSE_WITHIN, CURL_ENV, Reader, connect, curl, proxy_block


def curl_many(url, n, timeout=30):
    """One curl invocation fetching URL N times over keep-alive; returns
    (echo docs, number of client connections curl opened)."""
    args = ["curl", "-sS", "--noproxy", "*", "--max-time", str(timeout - 2),
            "-w", "\\n@@connects=%{num_connects} status=%{http_code}\\n"]
    for i in range(n):
        args.append("%s?i=%d" % (url, i))
    p = subprocess.run(args, capture_output=True, timeout=timeout, env=CURL_ENV,
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
    return docs, connects


def test_20_keepalive_requests_reuse_upstream_connections(proxy):
    docs, client_conns = curl_many(proxy.url + "/echo", 20)
    assert client_conns == 1, "psproxy did not keep the client connection alive"
    upstream_conns = {d["conn_id"] for d in docs}
    assert len(upstream_conns) <= 2, "20 requests used %d upstream connections" % len(
        upstream_conns)
    assert proxy.upstream.proxied_connections() <= 2


def test_upstream_connection_is_reused_across_client_connections(proxy, tmp_path):
    ids = []
    for i in range(5):
        r = curl(proxy.url + "/echo?client=%d" % i, tmp=tmp_path)
        assert r.status == 200, r
        ids.append(r.json()["conn_id"])
    assert len(set(ids)) <= 2, "5 client connections used upstream connections %r" % ids


def test_pipelined_requests_are_answered_in_order(proxy):
    host = b"Host: 127.0.0.1:%d\r\n" % proxy.port
    reqs = [b"GET /echo?i=0 HTTP/1.1\r\n" + host + b"\r\n",
            b"POST /echo?i=1 HTTP/1.1\r\n" + host + b"Content-Length: 5\r\n\r\nhello",
            b"GET /bytes/3000?i=2 HTTP/1.1\r\n" + host + b"\r\n",
            b"HEAD /echo?i=3 HTTP/1.1\r\n" + host + b"\r\n",
            b"GET /chunked/20000?i=4 HTTP/1.1\r\n" + host + b"\r\n",
            b"GET /echo?i=5 HTTP/1.1\r\n" + host + b"\r\n"]
    s = connect(proxy.port)
    s.sendall(b"".join(reqs))
    rd = Reader(s)
    r0 = rd.response()
    assert r0.status == 200 and r0.json()["query"] == "i=0", r0
    r1 = rd.response()
    assert r1.status == 200 and r1.json()["query"] == "i=1", r1
    assert r1.json()["body_len"] == 5
    r2 = rd.response()
    assert r2.status == 200 and len(r2.body) == 3000, r2
    r3 = rd.response("HEAD")
    assert r3.status == 200 and r3.header("Content-Type") == "application/json", r3
    r4 = rd.response()
    assert r4.status == 200 and len(r4.body) == 20000, r4
    r5 = rd.response()
    assert r5.status == 200 and r5.json()["query"] == "i=5", r5
    s.close()


def test_idle_keepalive_client_is_closed_after_idle_timeout(proxy_factory, upstream):
    p = proxy_factory(proxy_block(upstream), idle="1s")
    s = connect(p.port)
    rd = Reader(s)
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % p.port)
    assert rd.response().status == 200
    t0 = time.monotonic()
    assert not rd.closed_within(0.5), "closed well before the 1 s idle timeout"
    # the upper bound only for a loaded machine (ASan, tests in parallel)
    assert rd.closed_within(10.0), "still open 10.5 s into a 1 s idle timeout"
    elapsed = time.monotonic() - t0
    assert 0.5 <= elapsed <= 10.5
    s.close()


def test_slowloris_head_is_cut_after_read_header_timeout(proxy_factory, upstream):
    p = proxy_factory(proxy_block(upstream), read_header="1s", idle="10s")
    s = connect(p.port)
    s.sendall(b"GET /echo?slowloris HTTP/1.1\r\nHost: 127.0.0.1\r\n")
    t0 = time.monotonic()
    closed = False
    answer = b""
    # A header line every 100 ms keeps the connection busy but never done.
    n = 0
    while time.monotonic() - t0 < 10:
        n += 1
        try:
            s.sendall(b"X-Slow-%d: 1\r\n" % n)
        except OSError:
            closed = True
            break
        s.settimeout(0.1)
        try:
            data = s.recv(4096)
        except TimeoutError:
            continue
        except OSError:
            closed = True
            break
        answer += data
        if not data or b"\r\n\r\n" in answer:
            closed = True
            break
    elapsed = time.monotonic() - t0
    s.close()
    assert closed, "head still being read after 10 s (read_header 1s)"
    # the upper bound only for a loaded machine: idle (10s) never ends a busy head
    assert elapsed < 8, "cut only after %.1f s (read_header 1s)" % elapsed
    if answer:
        assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert not upstream.saw("slowloris")


def test_request_body_is_not_bounded_by_read_header_timeout(proxy_factory, upstream):
    p = proxy_factory(proxy_block(upstream), read_header="1s")
    s = connect(p.port)
    s.sendall(b"POST /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: 20\r\n\r\n")
    for _ in range(4):  # 2 s of body, sent slowly but steadily
        time.sleep(0.5)  # a real wait: the body outlasts read_header
        s.sendall(b"12345")
    r = Reader(s).response()
    assert r.status == 200 and r.json()["body_len"] == 20, r
    s.close()


def test_concurrent_clients_each_get_their_own_answers(proxy):
    errors = []

    def client(n):
        try:
            s = connect(proxy.port, timeout=10)
            rd = Reader(s)
            for i in range(10):
                body = b"client %d request %d" % (n, i)
                s.sendall(b"POST /echo?c=%d&i=%d HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          b"Content-Length: %d\r\n\r\n%s" % (n, i, len(body), body))
                r = rd.response()
                doc = r.json()
                if r.status != 200 or doc["query"] != "c=%d&i=%d" % (n, i) \
                        or doc["body_len"] != len(body):
                    errors.append((n, i, r))
            s.close()
        except Exception as e:  # reported below, with the others
            errors.append((n, repr(e)))

    threads = [threading.Thread(target=client, args=(n,)) for n in range(10)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not any(t.is_alive() for t in threads), "clients still running after 30 s"
    assert not errors, errors[:3]
    assert proxy.upstream.proxied_connections() <= 10


def test_http10_client_without_keepalive_gets_answer_and_close(proxy):
    s = connect(proxy.port)
    s.sendall(b"GET /echo HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
    rd = Reader(s)
    r = rd.response()
    assert r.status == 200 and r.json()["path"] == "/echo", r
    assert rd.closed_within(CLOSE_WITHIN), "HTTP/1.0 connection without keep-alive left open"
    s.close()


def test_connection_close_from_client_is_honoured(proxy):
    s = connect(proxy.port)
    s.sendall(b"GET /echo HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    rd = Reader(s)
    r = rd.response()
    assert r.status == 200, r
    assert rd.closed_within(CLOSE_WITHIN), "Connection: close not honoured"
    s.close()


def _cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _get(sock, port, path):
    sock.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1:%d\r\n\r\n" % (path.encode(), port))


def test_max_connections_pauses_accepting_and_resumes(proxy_factory, upstream):
    """At max_connections the worker stops accepting (the next client waits
    in the backlog, psproxy does not spin); a close lets it in."""
    p = proxy_factory(proxy_block(upstream), idle="30s", read_header="30s",
                      global_extra="\tmax_connections 3\n")
    held = []
    try:
        for i in range(3):
            s = connect(p.port)
            _get(s, p.port, "/echo?held=%d" % i)
            assert Reader(s).response().status == 200
            held.append(s)
        waiting = connect(p.port)            # the kernel completes the handshake
        _get(waiting, p.port, "/echo?waiting=1")
        waiting.settimeout(1.0)
        cpu0 = _cpu_seconds(p.proc.pid)
        try:
            got = waiting.recv(1)
        except socket.timeout:
            got = None
        assert got is None, "a connection past max_connections was served"
        assert _cpu_seconds(p.proc.pid) - cpu0 < 0.3, "psproxy spins while paused"
        held.pop(0).close()
        waiting.settimeout(5.0)
        r = Reader(waiting).response()
        assert r.status == 200 and r.json()["query"] == "waiting=1", r
        held.append(waiting)
    finally:
        for s in held:
            s.close()
    assert "accepting paused" in p.log_text()
    r = curl(p.url + "/echo?after=1")
    assert r.status == 200, r


def test_max_connections_must_be_a_positive_number(tmp_path):
    conf = tmp_path / "bad.conf"
    conf.write_text("{\n\tmax_connections lots\n}\n:8080 {\n\trespond ok\n}\n")
    from conftest import PSPROXY
    r = subprocess.run([PSPROXY, "validate", "-c", str(conf)], capture_output=True,
                       text=True, timeout=10)
    assert r.returncode != 0
    assert "bad.conf:2: max_connections: expected a number" in r.stderr, r.stderr
