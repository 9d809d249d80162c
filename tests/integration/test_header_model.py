"""The `header` directive beside reverse_proxy means what it means in Caddy
(issue #19), checked against Caddy itself: the same Caddyfile under `caddy
run` and under psproxy, the same request, the response fields compared
value by value, in order.

Caddy's model: a `header` that is not deferred sets (or adds) its field
before the handler runs, and reverse_proxy then adds the upstream's values
after it, so both go out, Caddy's first; a deferred one (`defer`, a
deletion, a `?` default) works on the fields as they are written, so its
set replaces the upstream's value; header_down works on the upstream's
fields before they join."""

import os
import shutil
import signal
import subprocess
import time

import pytest

import peers
from conftest import Reader, connect, free_port, make_config, wait_port

CADDY = shutil.which("caddy")

# fields the test upstream answers with (its /respheaders?N=V echoes them)
UPSTREAM_FIELDS = ["X-Set", "X-Add", "X-Del", "X-Deferred", "X-Default", "X-Down",
                   "X-Down-Del"]

SITE = """\theader X-Set site
\theader +X-Add site
\theader -X-Del
\theader {
\t\tX-Deferred site
\t\tdefer
\t}
\theader ?X-Default site
\theader ?X-Absent site
\theader X-Only site
\treverse_proxy %s {
\t\theader_down X-Down down
\t\theader_down -X-Down-Del
\t}"""


def fields(port, names):
    s = connect(port)
    try:
        query = "&".join("%s=up" % n for n in UPSTREAM_FIELDS)
        s.sendall(b"GET /respheaders?%s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                  b"\r\n" % query.encode())
        r = Reader(s).response()
        assert r.status == 200, r
        return {n: r.header_all(n) for n in names}
    finally:
        s.close()


@pytest.fixture
def caddy(tmp_path):
    """start(caddyfile_text) -> port Caddy listens on (plain HTTP)."""
    peers.need("caddy")
    procs = []

    def start(text, port):
        home = tmp_path / "caddy-home"
        home.mkdir(exist_ok=True)
        conf = tmp_path / ("Caddyfile-%d" % port)
        conf.write_text(text)
        env = dict(os.environ, HOME=str(home), XDG_DATA_HOME=str(home / "data"),
                   XDG_CONFIG_HOME=str(home / "config"))
        log = open(tmp_path / ("caddy-%d.log" % port), "w")
        p = subprocess.Popen([CADDY, "run", "--config", str(conf), "--adapter", "caddyfile"],
                             stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                             env=env, cwd=str(tmp_path))
        procs.append((p, log))
        wait_port(port, p, 10.0, "caddy", tmp_path / ("caddy-%d.log" % port))
        return port

    yield start
    for p, log in procs:
        p.send_signal(signal.SIGTERM)
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
        log.close()


def test_header_ops_around_reverse_proxy_match_caddy(caddy, proxy_factory, upstream):
    body = SITE % upstream.addr
    cport = free_port()
    caddy("{\n\tadmin off\n\tauto_https off\n}\n\nhttp://127.0.0.1:%d {\n%s\n}\n" % (cport, body),
          cport)
    p = proxy_factory(body)
    names = UPSTREAM_FIELDS + ["X-Absent", "X-Only"]
    want = fields(cport, names)
    got = fields(p.port, names)
    assert got == want, "psproxy %r\nCaddy   %r" % (got, want)
    # what that means, spelled out (so a change in Caddy shows here too)
    assert want["X-Set"] == ["site", "up"]
    assert want["X-Deferred"] == ["site"]
    assert want["X-Del"] == []
    assert want["X-Default"] == ["up"] and want["X-Absent"] == ["site"]
    assert want["X-Down"] == ["down"] and want["X-Down-Del"] == []


def test_header_ops_on_an_answer_made_here_match_caddy(caddy, proxy_factory):
    body = ("\theader X-Set site\n\theader +X-Add a\n\theader +X-Add b\n"
            "\theader {\n\t\tX-Set late\n\t\tdefer\n\t}\n\theader ?X-Set never\n"
            "\theader ?X-Absent site\n\trespond \"ok\" 200")
    cport = free_port()
    caddy("{\n\tadmin off\n\tauto_https off\n}\n\nhttp://127.0.0.1:%d {\n%s\n}\n" % (cport, body),
          cport)
    p = proxy_factory(body)
    names = ["X-Set", "X-Add", "X-Absent"]
    want = fields(cport, names)
    got = fields(p.port, names)
    assert got == want, "psproxy %r\nCaddy   %r" % (got, want)
