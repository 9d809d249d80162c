"""Waits that are not attacks last as long as they like (issue #19), as in
Caddy, whose reverse_proxy sets no response-head, read or write timeout
towards the upstream by default and no idle limit on a WebSocket: a long
poll answered after more than 60 s, a server-sent-event stream with a gap
longer than 60 s, and a WebSocket idle past the server's `idle` timeout all
go through with psproxy's defaults (the config names no transport
timeouts). The two long waits run at once: the test takes about 65 s."""

import os
import socket
import threading
import time

from conftest import Reader, connect
from test_websocket import handshake, read_frame
from upstream import ws_frame

LONG_MS = 62000  # past the 60 s that psproxy's old defaults allowed


def get(port, path, timeout):
    """GET PATH over one HTTP/1.1 connection; (status, body, seconds)."""
    t0 = time.monotonic()
    s = connect(port, timeout=timeout)
    try:
        s.sendall(b"GET %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n" %
                  path.encode())
        r = Reader(s).response()
        return r.status, r.body, time.monotonic() - t0
    finally:
        s.close()


def test_long_poll_sse_gap_and_idle_websocket_outlast_60s(proxy_factory, upstream):
    # only the server-side protections are set (read_header, idle): no transport timeouts
    p = proxy_factory("\treverse_proxy %s" % upstream.addr, idle="3s")
    results = {}

    def run(name, path):
        try:
            results[name] = get(p.port, path, timeout=LONG_MS / 1000 + 30)
        except (OSError, socket.timeout) as e:
            results[name] = repr(e)

    threads = [threading.Thread(target=run, args=("poll", "/slow/%d" % LONG_MS)),
               threading.Thread(target=run, args=("sse", "/sse/%d/2" % LONG_MS))]
    for t in threads:
        t.start()

    # meanwhile: a WebSocket stays open, idle, past the server's idle timeout
    s, rd = handshake(p.port)
    time.sleep(5)  # a real wait: idle past the 3 s idle timeout
    s.sendall(ws_frame(0x1, b"still here", mask=os.urandom(4)))
    assert read_frame(rd) == (0x1, b"still here")
    s.close()

    for t in threads:
        t.join(LONG_MS / 1000 + 40)
    status, body, took = results["poll"] if isinstance(results["poll"], tuple) else (
        None, results["poll"], 0)
    assert status == 200, results["poll"]
    assert took >= LONG_MS / 1000, took
    status, body, took = results["sse"] if isinstance(results["sse"], tuple) else (
        None, results["sse"], 0)
    assert status == 200, results["sse"]
    assert body == b"data: 0\n\ndata: 1\n\n", body
    assert took >= LONG_MS / 1000, took
