"""A tiny HTTP/2 client written by hand for the frame-level tests
(test_h2_frames.py): Python's ssl (ALPN h2) and struct, nothing else.

It frames what a test asks for (frame()), encodes header blocks with HPACK
literals it builds itself (no Huffman; lit_inc() and indexed() for the
dynamic table), and decodes the server's header blocks with a small but
complete HPACK decoder (static and dynamic table, Huffman), so a test sees
every response field. H2Client keeps per-stream state (status, fields, body,
RST_STREAM code, WINDOW_UPDATEs) and the connection's (SETTINGS, GOAWAY,
PING ACKs, EOF). Every read runs against a deadline; every socket has a
timeout.
"""

import socket
import ssl
import struct
import time

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"

# frame types (RFC 9113 6)
DATA, HEADERS, PRIORITY, RST_STREAM, SETTINGS, PUSH_PROMISE, PING, GOAWAY, \
    WINDOW_UPDATE, CONTINUATION = range(10)
TYPE_NAMES = ["DATA", "HEADERS", "PRIORITY", "RST_STREAM", "SETTINGS", "PUSH_PROMISE",
              "PING", "GOAWAY", "WINDOW_UPDATE", "CONTINUATION"]

# flags
END_STREAM = 0x1
ACK = 0x1
END_HEADERS = 0x4
PADDED = 0x8
PRIORITY_FLAG = 0x20

# settings (RFC 9113 6.5.2)
HEADER_TABLE_SIZE = 1
ENABLE_PUSH = 2
MAX_CONCURRENT_STREAMS = 3
INITIAL_WINDOW_SIZE = 4
MAX_FRAME_SIZE = 5
MAX_HEADER_LIST_SIZE = 6

# error codes (RFC 9113 7)
NO_ERROR = 0x0
PROTOCOL_ERROR = 0x1
INTERNAL_ERROR = 0x2
FLOW_CONTROL_ERROR = 0x3
SETTINGS_TIMEOUT = 0x4
STREAM_CLOSED = 0x5
FRAME_SIZE_ERROR = 0x6
REFUSED_STREAM = 0x7
CANCEL = 0x8
COMPRESSION_ERROR = 0x9
CONNECT_ERROR = 0xA
ENHANCE_YOUR_CALM = 0xB
INADEQUATE_SECURITY = 0xC
HTTP_1_1_REQUIRED = 0xD
ERROR_NAMES = {
    0x0: "NO_ERROR", 0x1: "PROTOCOL_ERROR", 0x2: "INTERNAL_ERROR",
    0x3: "FLOW_CONTROL_ERROR", 0x4: "SETTINGS_TIMEOUT", 0x5: "STREAM_CLOSED",
    0x6: "FRAME_SIZE_ERROR", 0x7: "REFUSED_STREAM", 0x8: "CANCEL",
    0x9: "COMPRESSION_ERROR", 0xA: "CONNECT_ERROR", 0xB: "ENHANCE_YOUR_CALM",
    0xC: "INADEQUATE_SECURITY", 0xD: "HTTP_1_1_REQUIRED",
}


def err_name(code):
    if code is None:
        return "None"
    return ERROR_NAMES.get(code, "0x%x" % code)


# -- frames -----------------------------------------------------------------------


def frame(ftype, flags, sid, payload=b""):
    """One frame: 9-byte header (RFC 9113 4.1) and PAYLOAD."""
    n = len(payload)
    return struct.pack("!BHBBI", n >> 16, n & 0xFFFF, ftype, flags, sid & 0x7FFFFFFF) + payload


def settings_frame(pairs=(), ack=False):
    payload = b"".join(struct.pack("!HI", k, v) for k, v in pairs)
    return frame(SETTINGS, ACK if ack else 0, 0, payload)


def ping_frame(opaque=b"\0" * 8, ack=False):
    return frame(PING, ACK if ack else 0, 0, opaque)


def rst_frame(sid, code):
    return frame(RST_STREAM, 0, sid, struct.pack("!I", code))


def window_update_frame(sid, increment):
    return frame(WINDOW_UPDATE, 0, sid, struct.pack("!I", increment))


def goaway_frame(last_sid, code, debug=b""):
    return frame(GOAWAY, 0, 0, struct.pack("!II", last_sid, code) + debug)


def data_frame(sid, data, end=False):
    return frame(DATA, END_STREAM if end else 0, sid, data)


def headers_frame(sid, block, end_stream=True, end_headers=True):
    flags = (END_STREAM if end_stream else 0) | (END_HEADERS if end_headers else 0)
    return frame(HEADERS, flags, sid, block)


def continuation_frame(sid, block, end_headers=False):
    return frame(CONTINUATION, END_HEADERS if end_headers else 0, sid, block)


# -- HPACK encoding (RFC 7541), literals only, no Huffman -----------------------------


def hp_int(value, prefix_bits, first=0):
    """VALUE as an HPACK integer with an N-bit prefix; FIRST holds the bits
    above the prefix in the first byte."""
    limit = (1 << prefix_bits) - 1
    if value < limit:
        return bytes([first | value])
    out = bytearray([first | limit])
    value -= limit
    while value >= 128:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def hp_str(s):
    """A string literal, not Huffman-coded."""
    if isinstance(s, str):
        s = s.encode("latin-1")
    return hp_int(len(s), 7, 0) + s


def lit(name, value):
    """Literal header field without indexing, new name (RFC 7541 6.2.2)."""
    return b"\x00" + hp_str(name) + hp_str(value)


def lit_inc(name, value):
    """Literal header field with incremental indexing, new name (6.2.1):
    the field goes into the decoder's dynamic table."""
    return b"\x40" + hp_str(name) + hp_str(value)


def indexed(index):
    """Indexed header field (6.1): 62 is the newest dynamic table entry."""
    return hp_int(index, 7, 0x80)


def table_size_update(size):
    return hp_int(size, 5, 0x20)


def request_block(method="GET", path="/", authority="a.test", scheme="https", headers=()):
    """A request header block: the four pseudo-header fields, then HEADERS
    (name, value) pairs, every one a literal without indexing."""
    out = [lit(":method", method), lit(":scheme", scheme), lit(":path", path)]
    if authority is not None:
        out.append(lit(":authority", authority))
    out += [lit(k, v) for k, v in headers]
    return b"".join(out)


# -- HPACK decoding -----------------------------------------------------------------

STATIC_TABLE = [
    (b":authority", b""), (b":method", b"GET"), (b":method", b"POST"), (b":path", b"/"),
    (b":path", b"/index.html"), (b":scheme", b"http"), (b":scheme", b"https"),
    (b":status", b"200"), (b":status", b"204"), (b":status", b"206"), (b":status", b"304"),
    (b":status", b"400"), (b":status", b"404"), (b":status", b"500"),
    (b"accept-charset", b""), (b"accept-encoding", b"gzip, deflate"),
    (b"accept-language", b""), (b"accept-ranges", b""), (b"accept", b""),
    (b"access-control-allow-origin", b""), (b"age", b""), (b"allow", b""),
    (b"authorization", b""), (b"cache-control", b""), (b"content-disposition", b""),
    (b"content-encoding", b""), (b"content-language", b""), (b"content-length", b""),
    (b"content-location", b""), (b"content-range", b""), (b"content-type", b""),
    (b"cookie", b""), (b"date", b""), (b"etag", b""), (b"expect", b""), (b"expires", b""),
    (b"from", b""), (b"host", b""), (b"if-match", b""), (b"if-modified-since", b""),
    (b"if-none-match", b""), (b"if-range", b""), (b"if-unmodified-since", b""),
    (b"last-modified", b""), (b"link", b""), (b"location", b""), (b"max-forwards", b""),
    (b"proxy-authenticate", b""), (b"proxy-authorization", b""), (b"range", b""),
    (b"referer", b""), (b"refresh", b""), (b"retry-after", b""), (b"server", b""),
    (b"set-cookie", b""), (b"strict-transport-security", b""),
    (b"transfer-encoding", b""), (b"user-agent", b""), (b"vary", b""), (b"via", b""),
    (b"www-authenticate", b""),
]
assert len(STATIC_TABLE) == 61

# RFC 7541 Appendix B: the code (and its bit length) of each symbol 0..256
_HUFF_CODES = [
    0x1ff8, 0x7fffd8, 0xfffffe2, 0xfffffe3, 0xfffffe4, 0xfffffe5, 0xfffffe6, 0xfffffe7,
    0xfffffe8, 0xffffea, 0x3ffffffc, 0xfffffe9, 0xfffffea, 0x3ffffffd, 0xfffffeb, 0xfffffec,
    0xfffffed, 0xfffffee, 0xfffffef, 0xffffff0, 0xffffff1, 0xffffff2, 0x3ffffffe, 0xffffff3,
    0xffffff4, 0xffffff5, 0xffffff6, 0xffffff7, 0xffffff8, 0xffffff9, 0xffffffa, 0xffffffb,
    0x14, 0x3f8, 0x3f9, 0xffa, 0x1ff9, 0x15, 0xf8, 0x7fa,
    0x3fa, 0x3fb, 0xf9, 0x7fb, 0xfa, 0x16, 0x17, 0x18,
    0x0, 0x1, 0x2, 0x19, 0x1a, 0x1b, 0x1c, 0x1d,
    0x1e, 0x1f, 0x5c, 0xfb, 0x7ffc, 0x20, 0xffb, 0x3fc,
    0x1ffa, 0x21, 0x5d, 0x5e, 0x5f, 0x60, 0x61, 0x62,
    0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69, 0x6a,
    0x6b, 0x6c, 0x6d, 0x6e, 0x6f, 0x70, 0x71, 0x72,
    0xfc, 0x73, 0xfd, 0x1ffb, 0x7fff0, 0x1ffc, 0x3ffc, 0x22,
    0x7ffd, 0x3, 0x23, 0x4, 0x24, 0x5, 0x25, 0x26,
    0x27, 0x6, 0x74, 0x75, 0x28, 0x29, 0x2a, 0x7,
    0x2b, 0x76, 0x2c, 0x8, 0x9, 0x2d, 0x77, 0x78,
    0x79, 0x7a, 0x7b, 0x7ffe, 0x7fc, 0x3ffd, 0x1ffd, 0xffffffc,
    0xfffe6, 0x3fffd2, 0xfffe7, 0xfffe8, 0x3fffd3, 0x3fffd4, 0x3fffd5, 0x7fffd9,
    0x3fffd6, 0x7fffda, 0x7fffdb, 0x7fffdc, 0x7fffdd, 0x7fffde, 0xffffeb, 0x7fffdf,
    0xffffec, 0xffffed, 0x3fffd7, 0x7fffe0, 0xffffee, 0x7fffe1, 0x7fffe2, 0x7fffe3,
    0x7fffe4, 0x1fffdc, 0x3fffd8, 0x7fffe5, 0x3fffd9, 0x7fffe6, 0x7fffe7, 0xffffef,
    0x3fffda, 0x1fffdd, 0xfffe9, 0x3fffdb, 0x3fffdc, 0x7fffe8, 0x7fffe9, 0x1fffde,
    0x7fffea, 0x3fffdd, 0x3fffde, 0xfffff0, 0x1fffdf, 0x3fffdf, 0x7fffeb, 0x7fffec,
    0x1fffe0, 0x1fffe1, 0x3fffe0, 0x1fffe2, 0x7fffed, 0x3fffe1, 0x7fffee, 0x7fffef,
    0xfffea, 0x3fffe2, 0x3fffe3, 0x3fffe4, 0x7ffff0, 0x3fffe5, 0x3fffe6, 0x7ffff1,
    0x3ffffe0, 0x3ffffe1, 0xfffeb, 0x7fff1, 0x3fffe7, 0x7ffff2, 0x3fffe8, 0x1ffffec,
    0x3ffffe2, 0x3ffffe3, 0x3ffffe4, 0x7ffffde, 0x7ffffdf, 0x3ffffe5, 0xfffff1, 0x1ffffed,
    0x7fff2, 0x1fffe3, 0x3ffffe6, 0x7ffffe0, 0x7ffffe1, 0x3ffffe7, 0x7ffffe2, 0xfffff2,
    0x1fffe4, 0x1fffe5, 0x3ffffe8, 0x3ffffe9, 0xffffffd, 0x7ffffe3, 0x7ffffe4, 0x7ffffe5,
    0xfffec, 0xfffff3, 0xfffed, 0x1fffe6, 0x3fffe9, 0x1fffe7, 0x1fffe8, 0x7ffff3,
    0x3fffea, 0x3fffeb, 0x1ffffee, 0x1ffffef, 0xfffff4, 0xfffff5, 0x3ffffea, 0x7ffff4,
    0x3ffffeb, 0x7ffffe6, 0x3ffffec, 0x3ffffed, 0x7ffffe7, 0x7ffffe8, 0x7ffffe9, 0x7ffffea,
    0x7ffffeb, 0xffffffe, 0x7ffffec, 0x7ffffed, 0x7ffffee, 0x7ffffef, 0x7fffff0, 0x3ffffee,
    0x3fffffff,
]
_HUFF_LENGTHS = [
    13, 23, 28, 28, 28, 28, 28, 28, 28, 24, 30, 28, 28, 30, 28, 28,
    28, 28, 28, 28, 28, 28, 30, 28, 28, 28, 28, 28, 28, 28, 28, 28,
    6, 10, 10, 12, 13, 6, 8, 11, 10, 10, 8, 11, 8, 6, 6, 6,
    5, 5, 5, 6, 6, 6, 6, 6, 6, 6, 7, 8, 15, 6, 12, 10,
    13, 6, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7, 7,
    7, 7, 7, 7, 7, 7, 7, 7, 8, 7, 8, 13, 19, 13, 14, 6,
    15, 5, 6, 5, 6, 5, 6, 6, 6, 5, 7, 7, 6, 6, 6, 5,
    6, 7, 6, 5, 5, 6, 7, 7, 7, 7, 7, 15, 11, 14, 13, 28,
    20, 22, 20, 20, 22, 22, 22, 23, 22, 23, 23, 23, 23, 23, 24, 23,
    24, 24, 22, 23, 24, 23, 23, 23, 23, 21, 22, 23, 22, 23, 23, 24,
    22, 21, 20, 22, 22, 23, 23, 21, 23, 22, 22, 24, 21, 22, 23, 23,
    21, 21, 22, 21, 23, 22, 23, 23, 20, 22, 22, 22, 23, 22, 22, 23,
    26, 26, 20, 19, 22, 23, 22, 25, 26, 26, 26, 27, 27, 26, 24, 25,
    19, 21, 26, 27, 27, 26, 27, 24, 21, 21, 26, 26, 28, 27, 27, 27,
    20, 24, 20, 21, 22, 21, 21, 23, 22, 22, 25, 25, 24, 24, 26, 23,
    26, 27, 26, 26, 27, 27, 27, 27, 27, 28, 27, 27, 27, 27, 27, 26,
    30,
]


def _check_huffman_table():
    """The table is a canonical Huffman code (RFC 7541 B): codes, taken in
    (length, symbol) order, count up; a typo in it would break that."""
    assert len(_HUFF_CODES) == len(_HUFF_LENGTHS) == 257
    order = sorted(range(257), key=lambda s: (_HUFF_LENGTHS[s], s))
    code, prev_len = 0, _HUFF_LENGTHS[order[0]]
    for s in order:
        code <<= _HUFF_LENGTHS[s] - prev_len
        prev_len = _HUFF_LENGTHS[s]
        assert _HUFF_CODES[s] == code, "Huffman table entry %d" % s
        code += 1


_check_huffman_table()
_HUFF_DECODE = {(_HUFF_LENGTHS[s], c): s for s, c in enumerate(_HUFF_CODES)}


def huffman_decode(data):
    out = bytearray()
    code = nbits = 0
    for byte in data:
        for i in range(7, -1, -1):
            code = (code << 1) | ((byte >> i) & 1)
            nbits += 1
            sym = _HUFF_DECODE.get((nbits, code))
            if sym is not None:
                if sym == 256:
                    raise ValueError("EOS in a Huffman string")
                out.append(sym)
                code = nbits = 0
            elif nbits > 30:
                raise ValueError("bad Huffman code")
    # padding: fewer than 8 bits, all ones (the EOS prefix)
    if nbits > 7 or code != (1 << nbits) - 1:
        raise ValueError("bad Huffman padding")
    return bytes(out)


class HpackError(Exception):
    pass


class Decoder:
    """An HPACK decoder (RFC 7541): static and dynamic table, Huffman."""

    def __init__(self, max_size=4096):
        self.max_size = max_size  # SETTINGS_HEADER_TABLE_SIZE we announce
        self.size_limit = max_size
        self.dynamic = []  # newest first
        self.size = 0

    def _evict(self):
        while self.size > self.size_limit and self.dynamic:
            n, v = self.dynamic.pop()
            self.size -= 32 + len(n) + len(v)

    def _add(self, name, value):
        self.dynamic.insert(0, (name, value))
        self.size += 32 + len(name) + len(value)
        self._evict()

    def _get(self, index):
        if index == 0:
            raise HpackError("index 0")
        if index <= 61:
            return STATIC_TABLE[index - 1]
        i = index - 62
        if i >= len(self.dynamic):
            raise HpackError("index %d past the dynamic table (%d)" % (index, len(self.dynamic)))
        return self.dynamic[i]

    @staticmethod
    def _int(data, pos, prefix_bits):
        limit = (1 << prefix_bits) - 1
        value = data[pos] & limit
        pos += 1
        if value < limit:
            return value, pos
        shift = 0
        while True:
            if pos >= len(data):
                raise HpackError("truncated integer")
            b = data[pos]
            pos += 1
            value += (b & 0x7F) << shift
            shift += 7
            if not b & 0x80:
                return value, pos

    def _str(self, data, pos):
        if pos >= len(data):
            raise HpackError("truncated string")
        huff = data[pos] & 0x80
        n, pos = self._int(data, pos, 7)
        if pos + n > len(data):
            raise HpackError("truncated string")
        raw = bytes(data[pos:pos + n])
        try:
            return (huffman_decode(raw) if huff else raw), pos + n
        except ValueError as e:
            raise HpackError(str(e))

    def decode(self, data):
        """[(name, value)] (bytes) of one header block."""
        out = []
        pos = 0
        while pos < len(data):
            b = data[pos]
            if b & 0x80:  # indexed
                index, pos = self._int(data, pos, 7)
                out.append(self._get(index))
            elif b & 0xC0 == 0x40:  # literal, incremental indexing
                index, pos = self._int(data, pos, 6)
                if index:
                    name = self._get(index)[0]
                else:
                    name, pos = self._str(data, pos)
                value, pos = self._str(data, pos)
                self._add(name, value)
                out.append((name, value))
            elif b & 0xE0 == 0x20:  # dynamic table size update
                size, pos = self._int(data, pos, 5)
                if size > self.max_size:
                    raise HpackError("table size update %d over %d" % (size, self.max_size))
                self.size_limit = size
                self._evict()
            else:  # literal without indexing (0000) or never indexed (0001)
                index, pos = self._int(data, pos, 4)
                if index:
                    name = self._get(index)[0]
                else:
                    name, pos = self._str(data, pos)
                value, pos = self._str(data, pos)
                out.append((name, value))
        return out


# -- the client -------------------------------------------------------------------


class Stream:
    def __init__(self, sid):
        self.sid = sid
        self.status = None       # the final :status
        self.headers = []        # its fields [(name str, value str)]
        self.interim = []        # 1xx statuses
        self.trailers = []
        self.data = bytearray()
        self.data_frames = 0
        self.ended = False       # END_STREAM from the server
        self.rst = None          # RST_STREAM code from the server
        self.send_window = 0     # what we may still send on it
        self.window_updates = 0  # WINDOW_UPDATEs the server sent for it
        self.window_credit = 0   # ... adding up to this

    @property
    def done(self):
        return self.ended or self.rst is not None

    def header(self, name):
        for k, v in self.headers:
            if k == name:
                return v
        return None

    def __repr__(self):
        return "<stream %d status=%s ended=%s rst=%s data=%d %r>" % (
            self.sid, self.status, self.ended, err_name(self.rst), len(self.data),
            bytes(self.data[:200]))


class H2Client:
    """An HTTP/2 connection over TLS to 127.0.0.1:PORT (SNI and :authority
    HOST), trusting CA. SETTINGS: extra (id, value) pairs for our SETTINGS
    frame (ENABLE_PUSH 0 always). CONN_WINDOW: WINDOW_UPDATE on stream 0
    sent with the preface. AUTO_UPDATE: give back every DATA byte received
    (connection and stream) except on streams in .no_update. ACK_SETTINGS:
    acknowledge the server's SETTINGS (RFC 9113 6.5.3), as a client must."""

    def __init__(self, port, host, ca, *, timeout=5.0, settings=(), conn_window=0,
                 auto_update=True, preface=True, ack_settings=True):
        self.port = port
        self.host = host
        self.authority = "%s:%d" % (host, port)
        self.timeout = timeout
        ctx = ssl.create_default_context(cafile=str(ca))
        ctx.set_alpn_protocols(["h2"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        raw.settimeout(timeout)
        raw.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            self.sock = ctx.wrap_socket(raw, server_hostname=host)
        except BaseException:
            raw.close()
            raise
        self.alpn = self.sock.selected_alpn_protocol()
        self.buf = bytearray()
        self.decoder = Decoder()
        self.streams = {}
        self.next_sid = 1
        self.server_settings = {}
        self.settings_seen = 0      # non-ACK SETTINGS from the server
        self.settings_acks = 0      # ACKs of ours
        self.ping_acks = 0
        self.goaway = None          # (last stream id, code, debug data)
        self.goaways = []
        self.closed = False         # EOF (or reset) from the server
        self.reset_by_peer = False
        self.send_failed = None     # why a send failed, once one did
        self.frames_in = 0
        self.frame_counts = {}
        self.conn_send_window = 65535
        self.initial_send_window = 65535
        self.max_frame = 16384
        self.auto_update = auto_update
        self.ack_settings = ack_settings  # False: the server's SETTINGS stay unacknowledged
        self.no_update = set()
        self.conn_window_updates = 0
        self._block = None          # (sid, flags, bytearray) of a header block being read
        if preface:
            out = PREFACE + settings_frame([(ENABLE_PUSH, 0)] + list(settings))
            if conn_window:
                out += window_update_frame(0, conn_window)
            self.send(out)

    # -- sending ----------------------------------------------------------------

    def send(self, data):
        """Sends DATA; returns False (and records why) when the connection
        would not take it: closed, reset, or no progress for the timeout."""
        if self.send_failed is not None:
            return False
        try:
            self.sock.settimeout(self.timeout)
            self.sock.sendall(data)
            return True
        except (socket.timeout, OSError, ssl.SSLError) as e:
            self.send_failed = repr(e)
            return False

    def new_sid(self):
        sid = self.next_sid
        self.next_sid += 2
        return sid

    def stream(self, sid):
        s = self.streams.get(sid)
        if s is None:
            s = self.streams[sid] = Stream(sid)
            s.send_window = self.initial_send_window
        return s

    def request(self, path, method="GET", headers=(), body=None, end_stream=None,
                authority=None, sid=None, send=True):
        """Opens a stream with a request (literal fields). BODY: bytes sent
        as one DATA frame with END_STREAM (use send_body for large ones).
        Returns the stream id (or the frames when SEND is False)."""
        sid = sid or self.new_sid()
        self.stream(sid)
        block = request_block(method, path, authority or self.authority, headers=headers)
        if end_stream is None:
            end_stream = body is None
        out = headers_frame(sid, block, end_stream=end_stream)
        if body is not None:
            out += data_frame(sid, body, end=True)
        if not send:
            return out
        self.send(out)
        return sid

    def send_body(self, sid, body, deadline, end=True):
        """Sends BODY on SID as DATA frames within the flow-control windows,
        reading frames (and WINDOW_UPDATEs) while they are closed. Returns
        the number of bytes sent (short on a reset, a close or the deadline)."""
        s = self.stream(sid)
        off = 0
        while off < len(body):
            if s.rst is not None or self.closed or self.send_failed:
                return off
            n = min(len(body) - off, s.send_window, self.conn_send_window, self.max_frame)
            if n <= 0:
                if not self.read_one(deadline):
                    return off
                continue
            last = off + n == len(body)
            if not self.send(data_frame(sid, body[off:off + n], end=end and last)):
                return off
            s.send_window -= n
            self.conn_send_window -= n
            off += n
        if not body and end:
            self.send(data_frame(sid, b"", end=True))
        return off

    # -- reading ----------------------------------------------------------------

    def _fill(self, deadline):
        """Reads more bytes; False on EOF; raises socket.timeout at DEADLINE."""
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise socket.timeout("deadline")
        self.sock.settimeout(remaining)
        try:
            data = self.sock.recv(262144)
        except ConnectionResetError:
            self.reset_by_peer = True
            data = b""
        except ssl.SSLEOFError:
            data = b""
        except ssl.SSLError as e:
            if "timed out" in str(e):
                raise socket.timeout(str(e))
            data = b""
        except OSError as e:
            if isinstance(e, socket.timeout):
                raise
            self.reset_by_peer = True
            data = b""
        if not data:
            self.closed = True
            return False
        self.buf += data
        return True

    def read_frame(self, deadline):
        """(type, flags, sid, payload) of the next frame, None on EOF; raises
        socket.timeout at DEADLINE."""
        while True:
            if len(self.buf) >= 9:
                n = (self.buf[0] << 16) | (self.buf[1] << 8) | self.buf[2]
                if len(self.buf) >= 9 + n:
                    ftype, flags = self.buf[3], self.buf[4]
                    sid = struct.unpack("!I", self.buf[5:9])[0] & 0x7FFFFFFF
                    payload = bytes(self.buf[9:9 + n])
                    del self.buf[:9 + n]
                    return ftype, flags, sid, payload
            if self.closed or not self._fill(deadline):
                return None

    def read_one(self, deadline):
        """Reads and handles one frame; False on EOF or at DEADLINE."""
        try:
            f = self.read_frame(deadline)
        except socket.timeout:
            return False
        if f is None:
            return False
        self.handle(*f)
        return True

    def pump(self, until=None, timeout=5.0):
        """Handles frames until UNTIL(self) is true (returns True), EOF or
        TIMEOUT seconds (returns False; bool(UNTIL) still checked)."""
        deadline = time.monotonic() + timeout
        while True:
            if until is not None and until(self):
                return True
            if not self.read_one(deadline):
                return bool(until is not None and until(self))

    def wait_closed(self, timeout=5.0):
        """Reads until EOF; True when the server closed within TIMEOUT."""
        self.pump(None, timeout)
        return self.closed

    def wait_streams(self, sids, timeout=5.0):
        return self.pump(lambda c: all(c.stream(s).done for s in sids), timeout)

    def handle(self, ftype, flags, sid, payload):
        self.frames_in += 1
        self.frame_counts[ftype] = self.frame_counts.get(ftype, 0) + 1
        if self._block is not None and ftype != CONTINUATION:
            raise AssertionError("frame type %d inside a header block" % ftype)
        if ftype == SETTINGS:
            if flags & ACK:
                self.settings_acks += 1
                return
            self.settings_seen += 1
            for i in range(0, len(payload) - 5, 6):
                k, v = struct.unpack("!HI", payload[i:i + 6])
                self.server_settings[k] = v
                if k == INITIAL_WINDOW_SIZE:
                    delta = v - self.initial_send_window
                    self.initial_send_window = v
                    for s in self.streams.values():
                        s.send_window += delta
                elif k == MAX_FRAME_SIZE:
                    self.max_frame = v
            if self.ack_settings:
                self.send(settings_frame(ack=True))
        elif ftype == PING:
            if flags & ACK:
                self.ping_acks += 1
            else:
                self.send(ping_frame(payload, ack=True))
        elif ftype == GOAWAY:
            last, code = struct.unpack("!II", payload[:8])
            self.goaway = (last & 0x7FFFFFFF, code, payload[8:])
            self.goaways.append(self.goaway)
        elif ftype == WINDOW_UPDATE:
            inc = struct.unpack("!I", payload)[0] & 0x7FFFFFFF
            if sid == 0:
                self.conn_send_window += inc
                self.conn_window_updates += 1
            else:
                s = self.stream(sid)
                s.send_window += inc
                s.window_updates += 1
                s.window_credit += inc
        elif ftype == RST_STREAM:
            self.stream(sid).rst = struct.unpack("!I", payload)[0]
        elif ftype == HEADERS:
            pos, end = 0, len(payload)
            if flags & PADDED:
                pad = payload[0]
                pos, end = 1, len(payload) - pad
            if flags & PRIORITY_FLAG:
                pos += 5
            self._block = (sid, flags, bytearray(payload[pos:end]))
            if flags & END_HEADERS:
                self._end_block()
        elif ftype == CONTINUATION:
            if self._block is None or self._block[0] != sid:
                raise AssertionError("CONTINUATION out of a header block")
            self._block[2].extend(payload)
            if flags & END_HEADERS:
                self._end_block()
        elif ftype == DATA:
            s = self.stream(sid)
            data = payload
            if flags & PADDED:
                data = payload[1:len(payload) - payload[0]]
            s.data += data
            s.data_frames += 1
            if flags & END_STREAM:
                s.ended = True
            if self.auto_update and payload:
                out = window_update_frame(0, len(payload))
                if sid not in self.no_update and not s.done:
                    out += window_update_frame(sid, len(payload))
                self.send(out)
        elif ftype == PUSH_PROMISE:
            raise AssertionError("PUSH_PROMISE although ENABLE_PUSH is 0")

    def _end_block(self):
        sid, flags, block = self._block
        self._block = None
        try:
            fields = self.decoder.decode(bytes(block))
        except HpackError as e:
            raise AssertionError("HPACK decoding failed on stream %d: %s" % (sid, e))
        fields = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in fields]
        s = self.stream(sid)
        status = dict(fields).get(":status")
        if s.status is None and status is not None and int(status) < 200:
            s.interim.append(int(status))
        elif s.status is None:
            if status is None:
                raise AssertionError("response HEADERS without :status: %r" % fields)
            s.status = int(status)
            s.headers = fields
        else:
            s.trailers = fields
        if flags & END_STREAM:
            s.ended = True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass

    def describe(self):
        return ("<h2 goaway=%s closed=%s reset=%s send_failed=%s frames=%s>" % (
            None if self.goaway is None else (self.goaway[0], err_name(self.goaway[1]),
                                              self.goaway[2][:100]),
            self.closed, self.reset_by_peer, self.send_failed,
            {TYPE_NAMES[k] if k < len(TYPE_NAMES) else k: v
             for k, v in sorted(self.frame_counts.items())}))

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def rss_kib(pid):
    """VmRSS of PID in KiB."""
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS for %d" % pid)
