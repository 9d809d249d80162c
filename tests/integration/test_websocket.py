"""WebSocket through psproxy: the Upgrade handshake reaches the upstream and
frames are tunnelled both ways."""

import base64
import hashlib
import os

from conftest import CLOSE_WITHIN, Reader, connect
from upstream import WS_GUID, ws_frame


def read_frame(rd):
    b0, b1 = rd.read_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(rd.read_exact(2), "big")
    elif n == 127:
        n = int.from_bytes(rd.read_exact(8), "big")
    assert not b1 & 0x80, "server frames must not be masked"
    return b0 & 0x0F, rd.read_exact(n)


def handshake(port):
    key = base64.b64encode(os.urandom(16)).decode()
    s = connect(port)
    s.sendall(("GET /ws HTTP/1.1\r\nHost: 127.0.0.1:%d\r\nUpgrade: websocket\r\n"
               "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
               "Sec-WebSocket-Version: 13\r\n\r\n" % (port, key)).encode())
    rd = Reader(s)
    r = rd.response()
    assert r.status == 101, r
    want = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
    assert r.header("Sec-WebSocket-Accept") == want, r
    assert r.header("Upgrade", "").lower() == "websocket", r
    assert "upgrade" in r.header("Connection", "").lower(), r
    return s, rd


def test_websocket_echo_through_proxy(proxy):
    s, rd = handshake(proxy.port)
    s.sendall(ws_frame(0x1, b"hello psproxy", mask=os.urandom(4)))
    assert read_frame(rd) == (0x1, b"hello psproxy")
    big = os.urandom(70000)  # 64-bit length form
    s.sendall(ws_frame(0x2, big, mask=os.urandom(4)))
    assert read_frame(rd) == (0x2, big)
    s.sendall(ws_frame(0x9, b"ping!", mask=os.urandom(4)))
    assert read_frame(rd) == (0xA, b"ping!")
    s.sendall(ws_frame(0x8, b"\x03\xe8", mask=os.urandom(4)))
    assert read_frame(rd) == (0x8, b"\x03\xe8")
    assert rd.closed_within(CLOSE_WITHIN), "tunnel not closed after the upstream closed"
    s.close()


def test_two_websockets_at_once(proxy):
    s1, rd1 = handshake(proxy.port)
    s2, rd2 = handshake(proxy.port)
    s2.sendall(ws_frame(0x1, b"two", mask=os.urandom(4)))
    s1.sendall(ws_frame(0x1, b"one", mask=os.urandom(4)))
    assert read_frame(rd1) == (0x1, b"one")
    assert read_frame(rd2) == (0x1, b"two")
    s1.close()
    s2.close()


def test_upstream_sees_upgrade_headers(proxy):
    s, rd = handshake(proxy.port)
    s.close()
    # the request reached the upstream as a WebSocket upgrade
    assert proxy.upstream.saw("/ws")
