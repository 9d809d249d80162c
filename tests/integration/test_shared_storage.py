"""Several psproxy instances share certificates and coordinate ACME through
PostgreSQL (issue #11): `storage postgres { dsn; key_file; cache }`.

Against a real PostgreSQL (pg_util.py: initdb in a temp dir, its own port)
and Pebble (pebble.py). Each instance has its own ports and its own cache
directory; Pebble validates HTTP-01 on the ports of one of them, so a
validation reaching an instance that did not place the order shows the
challenge went through the database. Every wait is bounded.
"""

import os
import secrets
import time

import pytest

from conftest import Proxy, free_port, proxy_block, stop_and_check, wait_log
from pebble import https_ca, pebble_factory  # noqa: F401 - fixtures
from pg_util import pg_factory, pg_server  # noqa: F401 - fixtures
from tls_util import served_cert, wait_for

pytestmark = pytest.mark.peer("pebble", "postgresql")

NAME = "api.photospots.live"
# generous: an order through Pebble and PostgreSQL takes a few seconds, much
# longer on a loaded machine under a sanitizer
CERT_TIMEOUT = 60.0


class Cluster:
    """psproxy instances sharing one database, each with its own ports and
    cache, the test upstream, a Pebble validating on instance VALIDATOR's
    ports."""

    def __init__(self, tmp_path, pg, upstream, pebble_factory, https_ca, n):
        self.tmp = tmp_path
        self.pg = pg
        self.upstream = upstream
        self.https_ca = https_ca
        self.ports = [(free_port(), free_port()) for _ in range(n)]
        self.key_file = tmp_path / "storage.key"
        self.key_file.write_text(secrets.token_hex(32) + "\n")
        os.chmod(self.key_file, 0o600)
        self.pebble_factory = pebble_factory
        self.pebble = None
        self.procs = {}

    def start_pebble(self, validator, **kw):
        http, https = self.ports[validator]
        self.pebble = self.pebble_factory(http_port=http, tls_port=https, **kw)
        return self.pebble

    def config(self, i, name=NAME, dsn=None):
        http, https = self.ports[i]
        g = ["\tadmin off", "\tworkers 1", "\thttp_port %d" % http, "\thttps_port %d" % https,
             "\temail admin@photospots.live",
             "\tacme_ca %s" % self.pebble.directory_url,
             "\tacme_ca_root %s" % self.https_ca.ca,
             "\tstorage postgres {",
             '\t\tdsn "%s"' % (dsn or self.pg.dsn()),
             "\t\tkey_file %s" % self.key_file,
             "\t\tcache %s" % (self.tmp / ("cache-%d" % i)),
             "\t}"]
        return "{\n%s\n}\n\n%s {\n%s\n}\n" % ("\n".join(g), name, proxy_block(self.upstream))

    def start(self, i, **kw):
        d = self.tmp / ("run-%d-%d" % (i, len(self.procs)))
        d.mkdir()
        p = Proxy(d, self.config(i, **kw), self.ports[i][1])
        p.https_port = self.ports[i][1]
        self.procs.setdefault(i, []).append(p)
        p.wait_ready()
        return p

    def all(self):
        return [p for ps in self.procs.values() for p in ps]


@pytest.fixture
def cluster(tmp_path, pg_server, upstream, pebble_factory, https_ca):  # noqa: F811
    made = []

    def make(n):
        c = Cluster(tmp_path, pg_server, upstream, pebble_factory, https_ca, n)
        made.append(c)
        return c

    yield make
    for c in made:
        stop_and_check(c.all())


def pg_dump(pg):
    """pg_dump of the psproxy database, as the superuser: what a stolen
    backup would hold."""
    p = pg._cmd([os.path.join(pg.bin, "pg_dump"), "-h", pg.sock, "-p", pg.port, "-U",
                 "postgres", "psproxy"])
    return p.stdout.decode()


def serial_served(p):
    try:
        return served_cert(p.https_port, NAME, timeout=2.0)["serial"]
    except (OSError, ValueError):
        return None


def wait_all_serve(procs, timeout=CERT_TIMEOUT):
    return wait_for(lambda: (lambda s: s if all(s) else None)([serial_served(p) for p in procs]),
                    timeout, what="every instance serving a certificate for " + NAME)


def test_three_instances_one_order_all_serve_it(cluster):
    c = cluster(3)
    # the instance Pebble validates on listens first: any of them may order
    c.start_pebble(validator=2)
    procs = [c.start(i) for i in (2, 0, 1)]
    serials = wait_all_serve(procs)
    assert len(set(serials)) == 1, serials
    time.sleep(1.0)  # a grace: a second order would be under way by now
    assert c.pebble.orders_seen() == 1, c.pebble.log_text()[-3000:]
    assert c.pebble.issued_seen() == 1
    orderers = [p for p in procs if "ordering a certificate" in p.log_text()]
    assert len(orderers) == 1, [p.log_text()[-1500:] for p in procs]
    # the password never reaches a log
    for p in procs:
        assert c.pg.password not in p.log_text()


def test_http01_answered_by_an_instance_that_did_not_order(cluster):
    c = cluster(2)
    # instance 0 manages another name (its own order: it runs the shared
    # storage and answers on the ports Pebble validates); instance 1 orders
    # NAME, and its validation reaches instance 0
    c.start_pebble(validator=0)
    other = c.start(0, name="other.photospots.live")
    orderer = c.start(1)
    try:
        wait_for(lambda: serial_served(orderer), CERT_TIMEOUT, what="instance 1 serving " + NAME)
    except AssertionError as e:
        raise AssertionError("%s\ninstance 0:\n%s\ninstance 1:\n%s" % (
            e, other.log_text()[-2500:], orderer.log_text()[-2500:]))
    answered = "answered the http-01 challenge for %s" % NAME
    assert answered in other.log_text(), other.log_text()[-3000:]
    assert answered not in orderer.log_text()
    assert "ordering a certificate" in orderer.log_text()


def test_database_dump_holds_no_readable_key(cluster, tmp_path):
    c = cluster(1)
    c.start_pebble(validator=0)
    p = c.start(0)
    wait_for(lambda: serial_served(p), CERT_TIMEOUT, what="a certificate")
    dump = pg_dump(c.pg)
    assert "BEGIN CERTIFICATE" in dump  # the chain is there (public)
    # bytea dumps as hex: look for the key both ways
    for clear in ("PRIVATE KEY", "BEGIN EC"):
        assert clear not in dump and clear.encode().hex() not in dump, "a key in the clear"
    # the local cache holds the key; the database holds it sealed
    key_files = list((tmp_path / "cache-0").rglob("*.key"))
    assert key_files, "no key in the cache"
    body = key_files[0].read_text()
    inner = "".join(l for l in body.splitlines() if not l.startswith("-----"))[:40]
    assert inner not in dump and inner.encode().hex() not in dump
    assert "\\x01" in dump  # sealed values start with the version byte


def test_renewal_by_one_instance_reaches_the_others_without_a_restart(cluster, record_property):
    c = cluster(2)
    c.start_pebble(validator=0, validity=30)  # due with half the lifetime left: ~15 s in
    procs = [c.start(i) for i in (0, 1)]
    first = wait_all_serve(procs)
    assert len(set(first)) == 1, first
    old = first[0]

    def renewed():
        s = [serial_served(p) for p in procs]
        return s if any(x not in (None, old) for x in s) else None

    seen = wait_for(renewed, 40.0, interval=0.05, what="a renewed certificate")
    t_first = time.monotonic()
    new = next(x for x in seen if x not in (None, old))
    wait_for(lambda: all(serial_served(p) == new for p in procs), 20.0, interval=0.05,
             what="every instance serving the renewed certificate")
    took = time.monotonic() - t_first
    record_property("renewal_propagation_seconds", round(took, 3))
    print("renewed certificate served by the other instance %.3f s after the first" % took)
    # NOTIFY: well under a second when idle; the bound is for a loaded machine
    # and stays below the 30 s poll (PGSTORE_POLL_MS) that would also bring it
    assert took < 15.0, took
    time.sleep(1.0)  # a grace: the other instance's needless renewal would show
    assert c.pebble.orders_seen() == 2, c.pebble.log_text()[-3000:]  # first + one renewal


def test_database_outage_keeps_serving_restart_serves_the_cache_and_they_reconnect(
        cluster, monkeypatch):
    # debug: pg.c logs each reconnect attempt ("next attempt in N ms")
    monkeypatch.setenv("PSPROXY_LOG_LEVEL", "debug")
    c = cluster(2)
    c.start_pebble(validator=0)
    procs = [c.start(i) for i in (0, 1)]
    serial = wait_all_serve(procs)[0]
    before = [p.log_text().count("next attempt in") for p in procs]
    c.pg.stop()
    for p, n in zip(procs, before):  # several reconnect attempts (1 s, 2 s, ...)
        wait_log(p, "next attempt in", timeout=30.0, count=n + 3)  # the loss and two more
    for p in procs:
        assert serial_served(p) == serial
        log = "\n".join(l for l in p.log_text().splitlines() if " debug: " not in l)
        assert log.count("unreachable") == 1, log[-3000:]  # the outage, logged once
    # a restart during the outage serves from the local cache at once
    restarted = procs[1]
    restarted.stop()
    again = c.start(1)
    # the database is down: whatever it serves comes from the cache
    wait_for(lambda: serial_served(again) == serial, 10.0, what="the cached certificate")
    # the database comes back: everyone reconnects and syncs again
    c.pg.start()
    wait_for(lambda: procs[0].log_text().count("in sync") == 2, 20.0, what="instance 0 back")
    wait_for(lambda: "in sync" in again.log_text(), 20.0, what="the restarted instance back")
    assert c.pebble.orders_seen() == 1


def test_no_order_without_the_database_then_exactly_one(cluster):
    c = cluster(1)
    c.start_pebble(validator=0)
    c.pg.stop()
    p = c.start(0)  # empty cache, database away: serve nothing, order nothing
    wait_log(p, "waiting for the shared storage before ordering")
    time.sleep(1.0)  # a grace: a wrong order would be under way by now
    assert c.pebble.orders_seen() == 0, c.pebble.log_text()[-2000:]
    assert serial_served(p) is None
    assert "waiting for the shared storage before ordering" in p.log_text()
    c.pg.start()
    wait_for(lambda: serial_served(p), CERT_TIMEOUT, what="a certificate once it is back")
    assert c.pebble.orders_seen() == 1


def test_tables_of_another_schema_version_are_refused(cluster):
    c = cluster(1)
    c.start_pebble(validator=0)
    p = c.start(0)
    wait_for(lambda: serial_served(p), CERT_TIMEOUT, what="a certificate")
    p.stop()
    c.pg.psql("UPDATE psproxy_schema SET version = 2")
    again = c.start(0)
    wait_for(lambda: "schema version 2" in again.log_text(), 10.0, what="the refusal")
    assert "upgrades are explicit" in again.log_text()
    assert serial_served(again) is not None  # the cache still serves
    assert c.pg.psql("SELECT version FROM psproxy_schema").strip() == "2"  # untouched


def test_an_instance_with_another_key_file_takes_and_orders_nothing(cluster, tmp_path):
    c = cluster(2)
    c.start_pebble(validator=0)
    first = c.start(0)
    serial = wait_for(lambda: serial_served(first), CERT_TIMEOUT, what="a certificate")
    c.key_file = tmp_path / "other.key"  # instance 1 gets another key
    c.key_file.write_text(secrets.token_hex(32) + "\n")
    os.chmod(c.key_file, 0o600)
    other = c.start(1)
    wait_for(lambda: "key_file is not the key" in other.log_text(), 10.0,
             what="the key mismatch refused")
    time.sleep(1.0)  # a grace: a wrong take or order would show by now
    assert serial_served(other) is None  # nothing taken it cannot open
    assert c.pebble.orders_seen() == 1  # and nothing ordered over the others' rows
    assert serial_served(first) == serial
