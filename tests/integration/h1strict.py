"""A strict HTTP/1.1 request-stream parser (RFC 9112), pure Python, for the
bytes an upstream connection received (conftest's upstream.raw_conns()).

parse(data) reads request after request off DATA, the way a careful
server would, and returns a Parsed: the requests read (the last one may be
incomplete: the connection ended inside its head or its body), the bytes
left that are no complete request, and the parse error, if any.

Strict means what a proxy must send, not what a server may tolerate:

- request line: METHOD SP request-target SP "HTTP/1.1" CRLF (a token, then
  visible ASCII, single spaces)
- field lines end in CRLF; a bare LF, a bare CR, obs-fold (a line starting
  with SP or HTAB), whitespace before the colon, an empty or non-token name
  and control characters in a value are errors
- exactly one Host field (RFC 9112 3.2)
- body length by RFC 9112 6.3: Transfer-Encoding whose last coding is
  chunked -> chunked (chunk-size lines 1*HEXDIG [chunk-ext] CRLF, data,
  CRLF, last-chunk, trailer fields, CRLF); Transfer-Encoding without chunked
  last, chunked twice, or Transfer-Encoding with Content-Length -> error;
  else one Content-Length field with one 1*DIGIT value -> that many bytes
  (repeats, lists and anything else: error); else no body

A connection that ends inside a request is not an error: that request is
reported with complete=False and its bytes are the leftover. Bytes that do
not parse are an error: Parsed.error says why and where, and the leftover
starts at the request they belong to.
"""

import re

TCHAR = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
TARGET = re.compile(rb"[\x21-\x7e]+")
# field-value: VCHAR, obs-text, SP and HTAB inside (OWS is trimmed)
VALUE = re.compile(rb"[\x21-\x7e\x80-\xff]([\x20\x21-\x7e\x80-\xff\t]*[\x21-\x7e\x80-\xff])?")
HEX = re.compile(rb"[0-9A-Fa-f]{1,16}")
# chunk-ext = *( BWS ";" BWS ext-name [ BWS "=" BWS ext-val ] )
CHUNK_EXT = re.compile(
    rb'([ \t]*;[ \t]*[!#$%&\'*+\-.^_`|~0-9A-Za-z]+'
    rb'([ \t]*=[ \t]*([!#$%&\'*+\-.^_`|~0-9A-Za-z]+|"([\t \x21\x23-\x5b\x5d-\x7e\x80-\xff]'
    rb'|\\[\t \x21-\x7e\x80-\xff])*"))?)*')
DIGITS = re.compile(rb"[0-9]{1,18}")
MAX_LINE = 1 << 16


class ParseError(Exception):
    pass


class Request:
    """One request as read. HEADERS and TRAILERS are [(name, value)] as
    str (latin-1), names as sent. FRAMING is 'none', 'length' or
    'chunked'; LENGTH the Content-Length value when 'length'. COMPLETE is
    False when the bytes ended inside it (HEAD_COMPLETE tells whether its
    head was whole; METHOD and TARGET are None until the request line is)."""

    def __init__(self, offset):
        self.offset = offset
        self.method = None
        self.target = None
        self.version = None
        self.headers = []
        self.trailers = []
        self.framing = None
        self.length = None
        self.body = b""
        self.chunks = []           # chunk sizes as sent, when chunked
        self.head_complete = False
        self.head_end = None       # offset of the body in the stream
        self.complete = False

    def header_all(self, name):
        return [v for k, v in self.headers if k.lower() == name.lower()]

    def header(self, name, default=None):
        vals = self.header_all(name)
        return vals[0] if vals else default

    def __repr__(self):
        return "<%s %s %s framing=%s length=%s body=%r%s%s>" % (
            self.method, self.target, self.version, self.framing, self.length,
            self.body[:80], "" if self.complete else " INCOMPLETE",
            " trailers=%r" % self.trailers if self.trailers else "")


class Parsed:
    def __init__(self):
        self.requests = []
        self.leftover = b""
        self.error = None

    @property
    def complete(self):
        return [r for r in self.requests if r.complete]

    @property
    def clean(self):
        """Every byte belongs to a complete, valid request."""
        return self.error is None and not self.leftover

    def __repr__(self):
        return "<Parsed %d requests %r leftover=%r error=%s>" % (
            len(self.requests), self.requests[-6:], self.leftover[:200], self.error)


class _Incomplete(Exception):
    """The bytes ended inside the request being read."""


class _Cursor:
    def __init__(self, data):
        self.data = data
        self.pos = 0

    def line(self):
        """The next line without its CRLF; a bare CR or LF is an error."""
        end = self.data.find(b"\n", self.pos)
        if end < 0:
            rest = self.data[self.pos:]
            # what there is must still be able to become a valid line
            cr = rest.find(b"\r")
            if cr >= 0 and cr != len(rest) - 1:
                raise ParseError("bare CR at offset %d" % (self.pos + cr))
            if len(rest) > MAX_LINE:
                raise ParseError("line over %d bytes at offset %d" % (MAX_LINE, self.pos))
            raise _Incomplete()
        if end == self.pos or self.data[end - 1:end] != b"\r":
            raise ParseError("bare LF at offset %d" % end)
        out = self.data[self.pos:end - 1]
        if b"\r" in out:
            raise ParseError("bare CR at offset %d" % (self.pos + out.find(b"\r")))
        self.pos = end + 1
        return out

    def take(self, n):
        if len(self.data) - self.pos < n:
            self.pos = len(self.data)
            raise _Incomplete()
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def at_end(self):
        return self.pos >= len(self.data)


def _field(line, where):
    if line[:1] in (b" ", b"\t"):
        raise ParseError("obs-fold (a line starting with whitespace) in %s: %r" % (where, line))
    name, colon, value = line.partition(b":")
    if not colon:
        raise ParseError("field line without a colon in %s: %r" % (where, line))
    if not name:
        raise ParseError("empty field name in %s: %r" % (where, line))
    if name[-1:] in (b" ", b"\t"):
        raise ParseError("whitespace before the colon in %s: %r" % (where, line))
    if not TCHAR.fullmatch(name):
        raise ParseError("field name not a token in %s: %r" % (where, line))
    value = value.strip(b" \t")
    if value and not VALUE.fullmatch(value):
        raise ParseError("invalid field value in %s: %r" % (where, line))
    return name.decode("latin-1"), value.decode("latin-1")


def _framing(req):
    te = req.header_all("transfer-encoding")
    cl = req.header_all("content-length")
    if te:
        if cl:
            raise ParseError("Transfer-Encoding and Content-Length in one request: %r" % req)
        codings = [c.strip().lower() for v in te for c in v.split(",")]
        if any(not c or not TCHAR.fullmatch(c.encode("latin-1")) for c in codings):
            raise ParseError("bad Transfer-Encoding %r" % te)
        if codings[-1] != "chunked":
            raise ParseError("request Transfer-Encoding %r: chunked is not the last" % te)
        if codings.count("chunked") > 1:
            raise ParseError("chunked applied twice: %r" % te)
        return "chunked", None
    if cl:
        if len(cl) != 1:
            raise ParseError("%d Content-Length fields: %r" % (len(cl), cl))
        if not DIGITS.fullmatch(cl[0].encode("latin-1")):
            raise ParseError("Content-Length %r is not one number" % cl[0])
        return "length", int(cl[0])
    return "none", None


def _request(cur, req):
    line = cur.line()
    parts = line.split(b" ")
    if len(parts) != 3:
        raise ParseError("request line not METHOD SP TARGET SP VERSION: %r" % line)
    method, target, version = parts
    if not TCHAR.fullmatch(method):
        raise ParseError("method not a token: %r" % line)
    if not TARGET.fullmatch(target):
        raise ParseError("bad request-target: %r" % line)
    if version != b"HTTP/1.1":
        raise ParseError("version not HTTP/1.1: %r" % line)
    req.method = method.decode("latin-1")
    req.target = target.decode("latin-1")
    req.version = version.decode("latin-1")
    while True:
        line = cur.line()
        if not line:
            break
        req.headers.append(_field(line, "the head of %s %s" % (req.method, req.target)))
    req.head_complete = True
    req.head_end = cur.pos
    hosts = req.header_all("host")
    if len(hosts) != 1:
        raise ParseError("%d Host fields in %s %s" % (len(hosts), req.method, req.target))
    req.framing, req.length = _framing(req)
    if req.framing == "length":
        req.body = cur.take(req.length)
    elif req.framing == "chunked":
        while True:
            line = cur.line()
            m = re.fullmatch(rb"([0-9A-Fa-f]+)(.*)", line, re.S)
            if not m or not HEX.fullmatch(m.group(1)) or not CHUNK_EXT.fullmatch(m.group(2)):
                raise ParseError("bad chunk-size line %r in %s %s" % (line, req.method, req.target))
            size = int(m.group(1), 16)
            req.chunks.append(size)
            if size == 0:
                break
            data = cur.take(size)
            if not b"\r\n".startswith(cur.data[cur.pos:cur.pos + 2]):
                raise ParseError("chunk data not followed by CRLF in %s %s" % (
                    req.method, req.target))
            if cur.take(2) != b"\r\n":
                raise ParseError("chunk data not followed by CRLF in %s %s" % (
                    req.method, req.target))
            req.body += data
        while True:
            line = cur.line()
            if not line:
                break
            req.trailers.append(_field(line, "the trailers of %s %s" % (req.method, req.target)))
    req.complete = True


def parse(data):
    """Parsed of the request stream DATA (bytes)."""
    data = bytes(data)
    out = Parsed()
    cur = _Cursor(data)
    while not cur.at_end():
        start = cur.pos
        req = Request(start)
        try:
            _request(cur, req)
        except _Incomplete:
            if req.framing == "length":
                req.body = data[req.head_end:]  # what came of it
            out.requests.append(req)
            out.leftover = data[start:]
            return out
        except ParseError as e:
            out.error = "at offset %d: %s" % (start, e)
            out.leftover = data[start:]
            if req.method is not None:
                out.requests.append(req)
            return out
        out.requests.append(req)
    return out

