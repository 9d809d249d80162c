"""The real peers the integration tests talk to, and what a missing one means.

A test that needs a peer says so with `@pytest.mark.peer("pebble")` (or
`pytestmark`), or calls `need("pebble")` in a fixture. With the peer there
nothing happens. Without it the test is skipped on a developer's machine, but
fails where a green run must mean every test ran (CI=true, or
PSPROXY_REQUIRE_PEERS=1, which scripts/test sets): a machine without Pebble
must not pass the ACME tests by omission. The failure names the Debian package
that brings the peer.
"""

import importlib.util
import os
import shutil

import pytest

import pebble as pebble_mod
import pg_util


def _pebble():
    return None if pebble_mod.available() else pebble_mod.MISSING_REASON


def _postgresql():
    return pg_util.missing_reason()


def _program(name, package):
    def check():
        if shutil.which(name) is None:
            return "%s not installed (apt-get install %s)" % (name, package)
        return None
    return check


def _module(name, package):
    def check():
        if importlib.util.find_spec(name) is None:
            return "python module %s not installed (apt-get install %s)" % (name, package)
        return None
    return check


def nginx_path():
    """nginx's path: in /usr/sbin, which a user's PATH may not have."""
    return shutil.which("nginx") or shutil.which("nginx", path="/usr/sbin")


# name -> a check returning None when the peer is there, else why not
PEERS = {
    "pebble": _pebble,
    "postgresql": _postgresql,
    "caddy": _program("caddy", "caddy"),
    "nghttp": _program("nghttp", "nghttp2-client"),
    "h2load": _program("h2load", "nghttp2-client"),
    "cryptography": _module("cryptography", "python3-cryptography"),
    "testssl": _program("testssl", "testssl.sh"),
    "nginx": lambda: None if nginx_path() else "nginx not installed (apt-get install nginx)",
}


def required():
    """True where a missing peer is a failure, not a skip."""
    return (os.environ.get("PSPROXY_REQUIRE_PEERS") == "1"
            or os.environ.get("CI", "").lower() in ("1", "true", "yes"))


def missing(name):
    """Why peer NAME is missing, or None."""
    return PEERS[name]()


def need(name):
    """Returns when peer NAME is there; else skips, or fails under required()."""
    why = missing(name)
    if why is None:
        return
    if required():
        pytest.fail("missing peer %s: %s" % (name, why), pytrace=False)
    pytest.skip(why)
