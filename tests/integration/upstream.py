#!/usr/bin/env python3
"""A test upstream for psproxy's integration tests: an HTTP/1.1 server on raw
sockets (one thread per connection, Python stdlib only) that controls its own
framing and records what arrived, so tests can check it.

Run: upstream.py [--host IP] [--port N] [--mode normal|malformed|hangup]; it
listens on IP (127.0.0.1 by default) and prints its port on stdout once
listening. Endpoints (any method unless noted):

  /echo...           JSON of the request as received: method, target, path,
                     query, version, headers (ordered [name, value] pairs),
                     body length and sha256, trailers, conn_id, conn_req
                     (1-based index on its connection), peer port, server port,
                     server host (the address it listens on)
  /bytes/N           N bytes of pattern(N), with Content-Length
  /chunked/N         N bytes of pattern(N), chunked, in chunks of mixed sizes
  /close/N           N bytes of pattern(N), close-delimited (no length)
  /status/CODE       that status; 204 and 304 without a body
  /slow/MS           waits MS milliseconds, then answers as /echo
  /sse/MS/N          server-sent events, chunked: N events "data: i", each
                     after a pause of MS milliseconds (the first at once)
  /respheaders?N=V   answers as /echo with each query pair added as a
                     response header (repeats kept, order kept)
  /ws                WebSocket (RFC 6455) echo after the 101 handshake
  /stats             JSON: connections accepted, requests read, targets seen
  /raw               JSON: every connection but the control ones (those that
                     asked /stats or /raw): id, whether it is still open, and
                     the bytes it received so far (latin-1, first 1 MiB)
  /bad/VARIANT       a misbehaving response: cl-te (Content-Length and
                     Transfer-Encoding), status-line (not a valid one),
                     extra (5 bytes more than Content-Length, same write),
                     extra-late (the same 5 bytes 200 ms later), mid-body
                     (close after 10 of 100 declared bytes), mid-chunk (close
                     inside the chunked body); the connection stays open after
                     extra and extra-late, else it closes
  /malformed/1       a response that is not HTTP
  /malformed/2       a response with an invalid Content-Length
  /hangup            reads the request, then closes without answering
  /hangup-after-body reads the whole request, body included, records it (see
                     /control/received), then closes without answering
  /whoami            text/plain: the upstream's own port, nothing else
  /interim           103 Early Hints and a 200 ("final ok") in one write
  /health            the health endpoint: answers with the status and body set
                     by /control/health (default 200 "UP"), after the delay set
                     by /control/slow (default none)
  /control/health?status=S&body=B
                     sets what /health answers; an omitted status means 200,
                     an omitted body "UP"; answers JSON of the health state
  /control/slow?ms=N makes /health wait N ms before answering (0: no wait)
  /control/received  JSON: [method, target, body length, body sha256] of each
                     request /hangup-after-body read

HEAD gets the GET headers without a body. Requests may be pipelined, have
chunked bodies (with extensions and trailers) and Expect: 100-continue, which
gets "100 Continue" before the body is read.

--mode malformed answers every request with /malformed/1; --mode hangup
closes every connection as soon as it is accepted.
"""

import argparse
import base64
import hashlib
import json
import socket
import struct
import sys
import threading
import time
from urllib.parse import parse_qsl, unquote, urlsplit

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
MAX_HEAD = 1 << 20
RAW_KEEP = 1 << 20
_BLOCK = bytes((i * 31 + 7) & 0xFF for i in range(4096))

REASONS = {
    100: "Continue", 101: "Switching Protocols", 200: "OK", 201: "Created",
    204: "No Content", 206: "Partial Content", 301: "Moved Permanently",
    302: "Found", 304: "Not Modified", 400: "Bad Request", 404: "Not Found",
    426: "Upgrade Required", 500: "Internal Server Error", 502: "Bad Gateway",
    503: "Service Unavailable",
}


def pattern(n):
    """The deterministic N bytes that /bytes, /chunked and /close send."""
    reps = n // len(_BLOCK) + 1
    return (_BLOCK * reps)[:n]


class Closed(Exception):
    """The peer closed the connection."""


class BadRequest(Exception):
    pass


class Stats:
    def __init__(self):
        self.lock = threading.Lock()
        self.connections = 0
        self.requests = 0
        self.targets = []
        self.raw = {}  # cid -> [bytearray received, open, control]

    def new_conn(self):
        with self.lock:
            self.connections += 1
            self.raw[self.connections] = [bytearray(), True, False]
            return self.connections

    def received(self, cid, data):
        with self.lock:
            rec = self.raw[cid][0]
            if len(rec) < RAW_KEEP:
                rec += data[:RAW_KEEP - len(rec)]

    def conn_closed(self, cid):
        with self.lock:
            self.raw[cid][1] = False

    def mark_control(self, cid):
        with self.lock:
            self.raw[cid][2] = True

    def raw_snapshot(self):
        with self.lock:
            return [{"id": cid, "open": op, "raw": bytes(rec).decode("latin-1")}
                    for cid, (rec, op, control) in sorted(self.raw.items()) if not control]

    def new_request(self, target):
        with self.lock:
            self.requests += 1
            self.targets.append(target)
            del self.targets[:-2000]

    def snapshot(self):
        with self.lock:
            return {
                "connections": self.connections,
                "requests": self.requests,
                "targets": list(self.targets),
            }


class Conn:
    def __init__(self, server, sock, peer, cid):
        self.server = server
        self.sock = sock
        self.peer = peer
        self.cid = cid
        self.buf = bytearray()
        self.nreq = 0

    # -- reading -------------------------------------------------------------

    def fill(self):
        data = self.sock.recv(65536)
        if not data:
            raise Closed()
        self.server.stats.received(self.cid, data)
        self.buf += data

    def read_until(self, delim, limit):
        start = 0
        while True:
            i = self.buf.find(delim, start)
            if i >= 0:
                out = bytes(self.buf[:i])
                del self.buf[: i + len(delim)]
                return out
            if len(self.buf) > limit:
                raise BadRequest("line or head too long")
            start = max(0, len(self.buf) - len(delim) + 1)
            self.fill()

    def read_exact(self, n):
        while len(self.buf) < n:
            self.fill()
        out = bytes(self.buf[:n])
        del self.buf[:n]
        return out

    def read_head(self):
        # RFC 9112 2.2: ignore at least one empty line before a request.
        while True:
            while len(self.buf) < 2:
                self.fill()
            if self.buf[:2] == b"\r\n":
                del self.buf[:2]
            else:
                break
        head = self.read_until(b"\r\n\r\n", MAX_HEAD)
        lines = head.split(b"\r\n")
        parts = lines[0].split(b" ")
        if len(parts) != 3:
            raise BadRequest("bad request line %r" % lines[0][:100])
        method, target, version = (p.decode("latin-1") for p in parts)
        headers = []
        for line in lines[1:]:
            name, sep, value = line.partition(b":")
            if not sep or not name or name != name.strip():
                raise BadRequest("bad header line %r" % line[:100])
            headers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        return method, target, version, headers

    def read_chunked(self):
        body = bytearray()
        while True:
            line = self.read_until(b"\r\n", 4096)
            size = int(line.split(b";", 1)[0].strip(), 16)
            if size == 0:
                break
            body += self.read_exact(size)
            if self.read_exact(2) != b"\r\n":
                raise BadRequest("chunk not followed by CRLF")
        trailers = []
        while True:
            line = self.read_until(b"\r\n", 65536)
            if not line:
                break
            name, _, value = line.partition(b":")
            trailers.append((name.decode("latin-1"), value.strip().decode("latin-1")))
        return bytes(body), trailers

    # -- writing -------------------------------------------------------------

    def send(self, data):
        self.sock.sendall(data)

    def head_bytes(self, status, headers):
        out = ["HTTP/1.1 %d %s\r\n" % (status, REASONS.get(status, "Status"))]
        out += ["%s: %s\r\n" % (k, v) for k, v in headers]
        out.append("\r\n")
        return "".join(out).encode("latin-1")

    def respond(self, req, status, headers, body=b""):
        headers = list(headers)
        if status not in (204, 304) and not any(
            k.lower() in ("content-length", "transfer-encoding") for k, _ in headers
        ):
            headers.append(("Content-Length", str(len(body))))
        if req["close"]:
            headers.append(("Connection", "close"))
        data = self.head_bytes(status, headers)
        if req["method"] != "HEAD" and status not in (204, 304):
            data += body
        self.send(data)

    # -- the connection ------------------------------------------------------

    def run(self):
        try:
            if self.server.mode == "hangup":
                return
            while True:
                try:
                    req = self.read_request()
                except Closed:
                    return
                except (BadRequest, ValueError) as e:
                    msg = str(e).encode()
                    self.send(self.head_bytes(400, [("Content-Length", str(len(msg))),
                                                     ("Connection", "close")]) + msg)
                    return
                if not self.handle(req) or req["close"]:
                    return
        except (OSError, Closed):
            return
        finally:
            try:
                self.sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            self.sock.close()
            self.server.stats.conn_closed(self.cid)

    def read_request(self):
        method, target, version, headers = self.read_head()
        self.nreq += 1
        self.server.stats.new_request(target)
        hmap = {}
        for k, v in headers:
            hmap.setdefault(k.lower(), []).append(v)
        conn_tokens = {t.strip().lower() for v in hmap.get("connection", [])
                       for t in v.split(",")}
        if version == "HTTP/1.0":
            close = "keep-alive" not in conn_tokens
        else:
            close = "close" in conn_tokens
        te = ",".join(hmap.get("transfer-encoding", [])).lower()
        chunked = te.split(",")[-1].strip() == "chunked" if te else False
        length = 0
        if not chunked and "content-length" in hmap:
            length = int(hmap["content-length"][0])
        has_body = chunked or length > 0
        expect = ",".join(hmap.get("expect", [])).lower()
        sent_continue = False
        if has_body and expect == "100-continue":
            self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            sent_continue = True
        trailers = []
        if chunked:
            body, trailers = self.read_chunked()
        else:
            body = self.read_exact(length)
        url = urlsplit(target)
        return {
            "method": method,
            "target": target,
            "path": unquote(url.path),
            "query": url.query,
            "query_pairs": parse_qsl(url.query, keep_blank_values=True),
            "version": version,
            "headers": headers,
            "hmap": hmap,
            "body": body,
            "trailers": trailers,
            "close": close,
            "sent_continue": sent_continue,
        }

    def echo_doc(self, req):
        return {
            "method": req["method"],
            "target": req["target"],
            "path": req["path"],
            "query": req["query"],
            "version": req["version"],
            "headers": [[k, v] for k, v in req["headers"]],
            "body_len": len(req["body"]),
            "body_sha256": hashlib.sha256(req["body"]).hexdigest(),
            "trailers": [[k, v] for k, v in req["trailers"]],
            "sent_continue": req["sent_continue"],
            "conn_id": self.cid,
            "conn_req": self.nreq,
            "peer_port": self.peer[1],
            "server_port": self.server.port,
            "server_host": self.server.host,
        }

    def send_json(self, req, doc, status=200, extra=()):
        body = (json.dumps(doc) + "\n").encode()
        self.respond(req, status, [("Content-Type", "application/json")] + list(extra), body)

    def handle(self, req):
        """Answers REQ; returns False when the connection must end."""
        path = req["path"]
        seg = path.strip("/").split("/")
        if self.server.mode == "malformed":
            self.send(b"this is not http\r\n\r\n")
            return False
        if seg[0] == "echo":
            self.send_json(req, self.echo_doc(req))
        elif seg[0] == "bytes" and len(seg) == 2:
            self.respond(req, 200, [("Content-Type", "application/octet-stream")],
                         pattern(int(seg[1])))
        elif seg[0] == "chunked" and len(seg) == 2:
            self.send_chunked(req, pattern(int(seg[1])))
        elif seg[0] == "close" and len(seg) == 2:
            head = self.head_bytes(200, [("Content-Type", "application/octet-stream"),
                                         ("Connection", "close")])
            self.send(head)
            if req["method"] != "HEAD":
                data = pattern(int(seg[1]))
                for i in range(0, len(data), 16384):
                    self.send(data[i:i + 16384])
            return False
        elif seg[0] == "status" and len(seg) == 2:
            code = int(seg[1])
            if code in (204, 304):
                hdrs = [("ETag", '"v1"')] if code == 304 else [("X-Status", str(code))]
                self.respond(req, code, hdrs)
            else:
                self.respond(req, code, [("Content-Type", "text/plain")],
                             b"status %d\n" % code)
        elif seg[0] == "interim":
            # a 103 and the final response in one write: they reach the
            # proxy in one read
            self.send(b"HTTP/1.1 103 Early Hints\r\nLink: </style.css>; rel=preload\r\n\r\n"
                      b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                      b"Content-Length: 8\r\n\r\nfinal ok")
        elif seg[0] == "slow" and len(seg) == 2:
            time.sleep(int(seg[1]) / 1000.0)
            self.send_json(req, self.echo_doc(req))
        elif seg[0] == "sse" and len(seg) == 3:
            gap, n = int(seg[1]), int(seg[2])
            self.send(self.head_bytes(200, [("Content-Type", "text/event-stream"),
                                            ("Transfer-Encoding", "chunked")]))
            for i in range(n):
                if i > 0:
                    time.sleep(gap / 1000.0)
                ev = b"data: %d\n\n" % i
                self.send(b"%x\r\n%s\r\n" % (len(ev), ev))
            self.send(b"0\r\n\r\n")
        elif seg[0] == "respheaders":
            self.send_json(req, self.echo_doc(req), extra=req["query_pairs"])
        elif seg[0] == "ws":
            return self.websocket(req)
        elif seg[0] == "stats":
            self.server.stats.mark_control(self.cid)
            self.send_json(req, self.server.stats.snapshot())
        elif seg[0] == "raw":
            self.server.stats.mark_control(self.cid)
            self.send_json(req, self.server.stats.raw_snapshot())
        elif seg[0] == "bad" and len(seg) == 2:
            return self.misbehave(seg[1])
        elif seg[0] == "malformed":
            variant = seg[1] if len(seg) > 1 else "1"
            if variant == "2":
                self.send(b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\nhello")
            else:
                self.send(b"this is not http\r\n\r\n")
            return False
        elif seg[0] == "hangup":
            return False
        elif path == "/hangup-after-body":
            self.server.health.record(req)
            return False
        elif path == "/whoami":
            self.respond(req, 200, [("Content-Type", "text/plain")],
                         str(self.server.port).encode())
        elif path == "/health":
            status, body, delay_ms = self.server.health.get()
            if delay_ms:
                time.sleep(delay_ms / 1000.0)
            self.respond(req, status, [("Content-Type", "text/plain")], body)
        elif path == "/control/health":
            q = dict(req["query_pairs"])
            self.server.health.set(int(q.get("status", "200")), q.get("body", "UP").encode())
            self.send_json(req, self.server.health.doc())
        elif path == "/control/slow":
            self.server.health.set_delay(int(dict(req["query_pairs"]).get("ms", "0")))
            self.send_json(req, self.server.health.doc())
        elif path == "/control/received":
            self.send_json(req, self.server.health.received())
        else:
            self.respond(req, 404, [("Content-Type", "text/plain")], b"not found\n")
        return True

    def misbehave(self, variant):
        """The /bad/VARIANT responses; returns False when the connection ends."""
        if variant == "cl-te":
            self.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n"
                      b"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n")
        elif variant == "status-line":
            self.send(b"HTTP/1.1 2x0 OK\r\nContent-Length: 5\r\n\r\nhello")
        elif variant == "extra":
            self.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhelloEXTRA")
            return True
        elif variant == "extra-late":
            self.send(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            time.sleep(0.2)
            self.send(b"EXTRA")
            return True
        elif variant == "mid-body":
            self.send(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
            time.sleep(0.1)
        elif variant == "mid-chunk":
            self.send(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                      b"a\r\n0123456789\r\n64\r\n0123")
            time.sleep(0.1)
        return False

    def send_chunked(self, req, data):
        head = self.head_bytes(200, [("Content-Type", "application/octet-stream"),
                                     ("Transfer-Encoding", "chunked")]
                               + ([("Connection", "close")] if req["close"] else []))
        if req["method"] == "HEAD":
            self.send(head)
            return
        self.send(head)
        sizes = [1, 7, 100, 1000, 4096, 16384, 65536]
        i = k = 0
        while i < len(data):
            n = sizes[k % len(sizes)]
            piece = data[i:i + n]
            ext = b";ext=1" if k == 1 else b""
            self.send(b"%x%s\r\n" % (len(piece), ext) + piece + b"\r\n")
            i += n
            k += 1
        self.send(b"0\r\n\r\n")

    # -- WebSocket (RFC 6455) --------------------------------------------------

    def websocket(self, req):
        hmap = req["hmap"]
        key = (hmap.get("sec-websocket-key") or [""])[0]
        upgrade = ",".join(hmap.get("upgrade", [])).lower()
        conn_tokens = {t.strip().lower() for v in hmap.get("connection", [])
                       for t in v.split(",")}
        if "websocket" not in upgrade or "upgrade" not in conn_tokens or not key:
            self.send_json(req, self.echo_doc(req), status=426)
            return True
        accept = base64.b64encode(hashlib.sha1(key.encode() + WS_GUID).digest()).decode()
        self.send(self.head_bytes(101, [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                                        ("Sec-WebSocket-Accept", accept)]))
        while True:
            b0, b1 = self.read_exact(2)
            opcode = b0 & 0x0F
            masked = b1 & 0x80
            n = b1 & 0x7F
            if n == 126:
                n = struct.unpack("!H", self.read_exact(2))[0]
            elif n == 127:
                n = struct.unpack("!Q", self.read_exact(8))[0]
            mask = self.read_exact(4) if masked else b"\0\0\0\0"
            payload = bytearray(self.read_exact(n))
            for i in range(n):
                payload[i] ^= mask[i % 4]
            if opcode == 0x8:
                self.send(ws_frame(0x8, bytes(payload[:2])))
                return False
            if opcode == 0x9:
                self.send(ws_frame(0xA, bytes(payload)))
            elif opcode in (0x0, 0x1, 0x2):
                self.send(ws_frame(opcode, bytes(payload), fin=bool(b0 & 0x80)))


def ws_frame(opcode, payload, fin=True, mask=None):
    """One WebSocket frame; MASK (4 bytes) masks it, as clients must."""
    n = len(payload)
    b0 = (0x80 if fin else 0) | opcode
    mbit = 0x80 if mask else 0
    if n < 126:
        head = struct.pack("!BB", b0, mbit | n)
    elif n < 65536:
        head = struct.pack("!BBH", b0, mbit | 126, n)
    else:
        head = struct.pack("!BBQ", b0, mbit | 127, n)
    if mask:
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        head += mask
    return head + payload


class Health:
    """What /health answers (switchable through /control/...) and what
    /hangup-after-body read; shared by the connection threads."""

    def __init__(self):
        self.lock = threading.Lock()
        self.status = 200
        self.body = b"UP"
        self.delay_ms = 0
        self.hangups = []

    def get(self):
        with self.lock:
            return self.status, self.body, self.delay_ms

    def set(self, status, body):
        with self.lock:
            self.status, self.body = status, body

    def set_delay(self, ms):
        with self.lock:
            self.delay_ms = max(0, ms)

    def doc(self):
        with self.lock:
            return {"status": self.status, "body": self.body.decode("latin-1"),
                    "delay_ms": self.delay_ms}

    def record(self, req):
        with self.lock:
            self.hangups.append([req["method"], req["target"], len(req["body"]),
                                 hashlib.sha256(req["body"]).hexdigest()])

    def received(self):
        with self.lock:
            return [list(h) for h in self.hangups]


class Server:
    def __init__(self, port, mode, host="127.0.0.1"):
        self.mode = mode
        self.host = host
        self.stats = Stats()
        self.health = Health()
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind((host, port))
        self.sock.listen(128)
        self.port = self.sock.getsockname()[1]

    def serve(self):
        while True:
            sock, peer = self.sock.accept()
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            cid = self.stats.new_conn()
            conn = Conn(self, sock, peer, cid)
            threading.Thread(target=conn.run, daemon=True).start()


def main():
    ap = argparse.ArgumentParser(description="psproxy test upstream")
    ap.add_argument("--host", default="127.0.0.1",
                    help="the IPv4 address to listen on (127.0.0.2 ... for tests that move a name)")
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--mode", choices=("normal", "malformed", "hangup"), default="normal")
    args = ap.parse_args()
    server = Server(args.port, args.mode, args.host)
    print(server.port, flush=True)
    try:
        server.serve()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
