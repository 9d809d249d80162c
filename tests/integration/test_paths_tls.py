"""Paths of the TLS transport the other suites do not take: a WebSocket
tunnel over HTTPS and how its client's close_notify ends it; a client that
chose h2 in ALPN and then speaks something else."""

import base64
import hashlib
import os
import select
import socket
import ssl

import pytest

from conftest import Proxy, Reader, free_port, proxy_block, stop_and_check
from tls_util import Pki, client_context, tls_config, tls_connect
from upstream import WS_GUID, ws_frame


def read_frame(rd):
    b0, b1 = rd.read_exact(2)
    n = b1 & 0x7F
    if n == 126:
        n = int.from_bytes(rd.read_exact(2), "big")
    elif n == 127:
        n = int.from_bytes(rd.read_exact(8), "big")
    return b0 & 0x0F, rd.read_exact(n)


def ws_handshake(sock, rd, host):
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(("GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\n"
                  "Connection: Upgrade\r\nSec-WebSocket-Key: %s\r\n"
                  "Sec-WebSocket-Version: 13\r\n\r\n" % (host, key)).encode())
    r = rd.response()
    assert r.status == 101, r
    want = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
    assert r.header("Sec-WebSocket-Accept") == want, r


@pytest.fixture
def https_factory(tmp_path):
    """start(body) -> Proxy serving a.test over HTTPS with BODY, .ca set."""
    pki = Pki(tmp_path / "pki")
    leaf = pki.leaf("a.test")
    started = []

    def start(body):
        port = free_port()
        p = Proxy(tmp_path, tls_config([("a.test", leaf, body)], http_port=None,
                                       https_port=port), port)
        p.ca = pki.ca
        started.append(p)
        p.wait_ready()
        return p

    yield start
    stop_and_check(started)


def test_websocket_over_https_tunnels_and_the_clients_close_notify_ends_it(https_factory,
                                                                         upstream):
    p = https_factory(proxy_block(upstream))
    s = tls_connect(p.port, "a.test", client_context(p.ca, alpn=["http/1.1"]))
    rd = Reader(s)
    ws_handshake(s, rd, "a.test")
    # more than a TLS record each way: the tunnel's reads and writes go
    # through the record pump in pieces
    big = os.urandom(70000)
    s.sendall(ws_frame(0x2, big, mask=os.urandom(4)))
    assert read_frame(rd) == (0x2, big)
    s.sendall(ws_frame(0x1, b"after", mask=os.urandom(4)))
    assert read_frame(rd) == (0x1, b"after")
    # close_notify: psproxy passes the end to the upstream, which closes,
    # and answers with its own close_notify (unwrap waits for it)
    raw = s.unwrap()
    raw.settimeout(5)
    assert raw.recv(1) == b"", "TCP still open after both close_notify"
    raw.close()


def test_http11_bytes_on_a_connection_that_chose_h2_are_never_forwarded(https_factory):
    # a bare listening socket as the upstream: any connection to it is a leak
    up = socket.socket()
    up.bind(("127.0.0.1", 0))
    up.listen(8)
    try:
        p = https_factory(proxy_block("127.0.0.1:%d" % up.getsockname()[1]))
        s = tls_connect(p.port, "a.test", client_context(p.ca, alpn=["h2"]))
        assert s.selected_alpn_protocol() == "h2"
        s.sendall(b"GET /leak HTTP/1.1\r\nHost: a.test\r\n\r\n")
        got = b""
        s.settimeout(3)
        try:
            while True:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
        except (ConnectionResetError, ssl.SSLEOFError):
            pass
        except socket.timeout:
            pytest.fail("psproxy kept the connection open; got %r" % got[:200])
        s.close()
        # no HTTP/1.1 answer: the bytes were not taken for a request
        assert b"HTTP/1.1" not in got, got[:200]
        ready, _, _ = select.select([up], [], [], 0.2)
        assert not ready, "psproxy dialled the upstream"
        assert p.proc.poll() is None
    finally:
        up.close()


def handshake_error(port, alpn):
    """The ssl.SSLError a handshake offering ALPN (with SNI a.test) ends
    in, upper case with "_" for " "."""
    with pytest.raises(ssl.SSLError) as e:
        s = tls_connect(port, "a.test", client_context(alpn=alpn))
        s.close()
    return str(e.value).upper().replace(" ", "_")


def test_alpn_with_no_protocol_in_common_is_refused_with_its_alert(https_factory, upstream):
    # RFC 7301 3.2: no_application_protocol, rather than a connection
    # on a protocol the client did not offer
    p = https_factory(proxy_block(upstream))
    err = handshake_error(p.port, ["spdy/3", "h3"])
    assert "NO_APPLICATION_PROTOCOL" in err, err
    s = tls_connect(p.port, "a.test", client_context(alpn=["h3", "http/1.1"]))
    assert s.selected_alpn_protocol() == "http/1.1"
    s.close()


def test_acme_tls_alpn_for_a_name_with_no_validation_pending_gets_unrecognized_name(
        https_factory, upstream):
    # RFC 8737: only a pending TLS-ALPN-01 validation is answered on
    # acme-tls/1; anyone else offering it learns nothing about the name
    p = https_factory(proxy_block(upstream))
    err = handshake_error(p.port, ["acme-tls/1"])
    assert "UNRECOGNIZED_NAME" in err, err
    assert p.proc.poll() is None
