"""config/psproxy.service: systemd parses it cleanly, its sandbox scores 2.0
or less in `systemd-analyze security`, it declares what psproxy relies on
(notify, reload by SIGHUP, StateDirectory, one capability), and psproxy
serves, reloads and stops under the unit's system call filter.

The systemd checks need systemd-analyze with --offline (systemd 250 or
later); the filter check needs libseccomp (loaded with ctypes)."""

import ctypes
import ctypes.util
import errno
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import time

import pytest

from conftest import (PSPROXY, ROOT, START_TIMEOUT, STOP_TIMEOUT, curl, free_port, make_config,
                      proxy_block, reap, tail, wait_port)

UNIT = ROOT / "config" / "psproxy.service"
UNIT_EXEC = "/usr/local/bin/psproxy"
MAX_EXPOSURE = 2.0
ANALYZE_TIMEOUT = 30


def analyze(*args):
    return subprocess.run(["systemd-analyze", *args], capture_output=True, text=True,
                          timeout=ANALYZE_TIMEOUT, stdin=subprocess.DEVNULL)


def offline_analyze_available():
    if shutil.which("systemd-analyze") is None:
        return False
    return "--offline" in analyze("--help").stdout


needs_analyze = pytest.mark.skipif(not offline_analyze_available(),
                                   reason="systemd-analyze without --offline (systemd < 250)")


def unit_settings():
    """[(section, key, value)] in file order; keys may repeat."""
    out, section = [], None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if not line or line[0] in "#;":
            continue
        m = re.fullmatch(r"\[(\w+)\]", line)
        if m:
            section = m.group(1)
            continue
        key, sep, value = line.partition("=")
        assert sep, "%s: not key=value: %r" % (UNIT.name, raw)
        out.append((section, key.strip(), value.strip()))
    return out


def values(key, section="Service"):
    return [v for s, k, v in unit_settings() if s == section and k == key]


def one(key, section="Service"):
    v = values(key, section)
    assert len(v) == 1, "%s=: expected once in [%s], found %r" % (key, section, v)
    return v[0]


# -- what systemd makes of the unit ------------------------------------------------


@needs_analyze
def test_unit_exposure_is_at_most_two():
    p = analyze("security", "--offline=true", str(UNIT))
    m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", p.stdout)
    assert m, "no exposure level in:\n%s\n%s" % (p.stdout[-2000:], p.stderr)
    level = float(m.group(1))
    failed = [line for line in p.stdout.splitlines() if line.startswith("\u2717")]
    assert level <= MAX_EXPOSURE, "exposure %.1f > %.1f; open:\n%s" % (
        level, MAX_EXPOSURE, "\n".join(failed))
    # systemd warns on stderr about keys it does not know or cannot parse
    assert p.stderr.strip() == "", p.stderr


@needs_analyze
def test_unit_passes_systemd_analyze_verify(tmp_path):
    """verify wants ExecStart to exist: point it at the binary under test."""
    unit = tmp_path / "psproxy.service"
    unit.write_text(UNIT.read_text().replace(UNIT_EXEC, os.path.abspath(PSPROXY)))
    p = analyze("verify", str(unit))
    assert p.returncode == 0 and p.stderr.strip() == "", p.stderr


# -- what psproxy relies on ----------------------------------------------------


def test_unit_is_type_notify_with_reload_by_sighup():
    assert one("Type") == "notify"
    reload = one("ExecReload").split()
    assert reload[0].endswith("/kill") and "-HUP" in reload and "$MAINPID" in reload, reload
    start = one("ExecStart").split()
    assert start[0] == UNIT_EXEC and start[1:] == ["-c", "/etc/psproxy/photospots.conf"], start


def test_unit_keeps_state_in_its_state_directory():
    # psproxy's default storage is $STATE_DIRECTORY, which this sets
    assert one("StateDirectory") == "psproxy"
    assert one("StateDirectoryMode") == "0700"
    assert one("UMask") == "0077"


def test_unit_grants_only_net_bind_service():
    assert one("AmbientCapabilities").split() == ["CAP_NET_BIND_SERVICE"]
    assert one("CapabilityBoundingSet").split() == ["CAP_NET_BIND_SERVICE"]
    # a capability inside a user namespace does not open ports < 1024 on the host
    assert values("PrivateUsers") in ([], ["no"], ["false"])


# -- psproxy under the unit's system call filter -----------------------------------


def syscall_groups():
    """{"@group": [member, ...]} as this systemd defines them."""
    groups, cur = {}, None
    for line in analyze("syscall-filter").stdout.splitlines():
        if line.startswith("@"):
            cur = groups.setdefault(line.strip(), [])
        elif line.startswith("#"):
            cur = None  # the "unlisted system calls" trailer
        elif cur is not None and line.strip() and not line.strip().startswith("#"):
            cur.append(line.strip())
    return groups


def expand(names, groups):
    out = set()
    for n in names:
        out |= expand(groups[n], groups) if n.startswith("@") else {n}
    return out


class ScmpArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_CMP_EQ = 4
SCMP_CMP_MASKED_EQ = 7
PROT_WRITE, PROT_EXEC = 0x2, 0x4


def scmp_errno(e):
    return 0x00050000 | (e & 0xFFFF)


class UnitFilter:
    """A seccomp filter built with libseccomp from the unit's SystemCallFilter=,
    RestrictAddressFamilies= and MemoryDenyWriteExecute=, the way systemd
    builds them, except that a call outside the list kills the process
    (SIGSYS) instead of failing with SystemCallErrorNumber=: the test wants
    to see every such call, not psproxy coping with EPERM."""

    def __init__(self):
        name = ctypes.util.find_library("seccomp")
        if name is None:
            pytest.skip("libseccomp not installed")
        lib = self.lib = ctypes.CDLL(name, use_errno=True)
        lib.seccomp_init.restype = ctypes.c_void_p
        lib.seccomp_init.argtypes = [ctypes.c_uint32]
        lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        lib.seccomp_rule_add_array.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                               ctypes.c_uint, ctypes.POINTER(ScmpArgCmp)]
        lib.seccomp_load.argtypes = [ctypes.c_void_p]
        lib.seccomp_release.argtypes = [ctypes.c_void_p]

        groups = syscall_groups()
        allow, deny = set(), set()
        for v in values("SystemCallFilter"):
            if v.startswith("~"):
                deny |= expand(v[1:].split(), groups)
            else:
                allow |= expand(v.split(), groups)
        assert allow, "no SystemCallFilter= allow list in the unit"
        self.allowed = allow - deny
        families = [getattr(socket, f) for v in values("RestrictAddressFamilies")
                    for f in v.split()]
        assert families, "no RestrictAddressFamilies= in the unit"
        mdwe = values("MemoryDenyWriteExecute") == ["yes"]

        self.ctx = lib.seccomp_init(SCMP_ACT_KILL_PROCESS)
        assert self.ctx, "seccomp_init failed"
        special = {"socket"} | ({"mmap", "mprotect", "pkey_mprotect"} if mdwe else set())
        for n in sorted(self.allowed - special):
            self.rule(SCMP_ACT_ALLOW, n)
        for f in families:
            self.rule(SCMP_ACT_ALLOW, "socket", (0, SCMP_CMP_EQ, f))
        # as systemd: other families fail (glibc's getaddrinfo then assumes
        # both IPv4 and IPv6 are configured instead of asking netlink)
        for f in (socket.AF_NETLINK, socket.AF_PACKET):
            if f not in families:
                self.rule(scmp_errno(errno.EAFNOSUPPORT), "socket", (0, SCMP_CMP_EQ, f))
        if mdwe:
            self.rule(SCMP_ACT_ALLOW, "mmap", (2, SCMP_CMP_MASKED_EQ, PROT_WRITE))
            self.rule(SCMP_ACT_ALLOW, "mmap", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC))
            self.rule(SCMP_ACT_ALLOW, "mprotect", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC))
            self.rule(SCMP_ACT_ALLOW, "pkey_mprotect", (2, SCMP_CMP_MASKED_EQ, PROT_EXEC))

    def rule(self, action, name, *cmps):
        nr = self.lib.seccomp_syscall_resolve_name(name.encode())
        if nr < 0:
            return  # not a system call on this architecture
        arr = (ScmpArgCmp * len(cmps))(*[ScmpArgCmp(a, op, mask, 0) for a, op, mask in cmps])
        rc = self.lib.seccomp_rule_add_array(self.ctx, action, nr, len(cmps),
                                             arr if cmps else None)
        assert rc == 0, "seccomp_rule_add(%s): %s" % (name, os.strerror(-rc))

    def load(self):
        """In the child, between fork and exec (subprocess's preexec_fn)."""
        if self.lib.seccomp_load(self.ctx) != 0:
            raise OSError("seccomp_load failed")

    def release(self):
        self.lib.seccomp_release(self.ctx)


def sanitized(binary):
    """ASan/LSan/TSan need calls (ptrace, personality) outside the filter."""
    with open(binary, "rb") as f:
        data = f.read()
    return any(m in data for m in (b"__asan_init", b"__tsan_init", b"__lsan_"))


def died_of_sigsys(rc):
    return rc == -signal.SIGSYS


SIGSYS_HINT = ("psproxy made a system call outside the unit's SystemCallFilter= or a "
               "socket outside its RestrictAddressFamilies= (find it with strace -f -c)")


def recv_notify(sock, proc, log, timeout=START_TIMEOUT):
    """The next sd_notify datagram, as a set of its lines."""
    deadline = time.monotonic() + timeout
    while not select.select([sock], [], [], 0.05)[0]:
        rc = proc.poll()
        if rc is not None or time.monotonic() > deadline:
            why = ("no sd_notify message within %.0f s" % timeout if rc is None
                   else SIGSYS_HINT if died_of_sigsys(rc) else "psproxy exited %d" % rc)
            pytest.fail("%s; log:\n%s" % (why, tail(log)))
    return set(sock.recv(4096).decode().split("\n"))


def test_psproxy_serves_reloads_and_stops_under_the_units_syscall_filter(tmp_path,
                                                                          upstream):
    """Any call outside @system-service ~@privileged @resources (setrlimit,
    sched_setaffinity, setuid...) or a socket other than inet/inet6/unix
    kills psproxy here, as it would fail with EPERM under systemd."""
    if shutil.which("systemd-analyze") is None:
        pytest.skip("systemd-analyze missing: no syscall group definitions")
    if sanitized(PSPROXY):
        pytest.skip("sanitizer build: its runtime needs calls outside the filter")
    filt = UnitFilter()
    try:
        probe = subprocess.run([PSPROXY, "--version"], capture_output=True, timeout=10,
                               preexec_fn=filt.load, stdin=subprocess.DEVNULL)
    except subprocess.SubprocessError as e:
        filt.release()
        pytest.skip("cannot load a seccomp filter here: %s" % e)
    assert probe.returncode == 0, "psproxy --version under the filter: rc %d %s" % (
        probe.returncode, probe.stderr.decode(errors="replace"))

    notify = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    notify.bind(str(tmp_path / "notify"))
    port = free_port()
    conf = tmp_path / "psproxy.conf"
    conf.write_text(make_config(port, proxy_block(upstream)).replace(
        "\tworkers 1\n", "\tworkers 2\n"))
    log = tmp_path / "psproxy.log"
    env = dict(os.environ, NOTIFY_SOCKET=str(tmp_path / "notify"),
               STATE_DIRECTORY=str(tmp_path / "state"))
    os.mkdir(tmp_path / "state", 0o700)
    with open(log, "w") as logf:
        proc = subprocess.Popen([PSPROXY, "-c", str(conf)], cwd=str(tmp_path), env=env,
                                preexec_fn=filt.load, stdin=subprocess.DEVNULL,
                                stdout=logf, stderr=subprocess.STDOUT)
    rc = None
    try:
        assert "READY=1" in recv_notify(notify, proc, log)
        wait_port(port, proc, START_TIMEOUT, "psproxy", log)
        r = curl("http://127.0.0.1:%d/whoami" % port, tmp=tmp_path)
        assert r.status == 200, (r, tail(log))

        proc.send_signal(signal.SIGHUP)
        assert "RELOADING=1" in recv_notify(notify, proc, log)
        assert "READY=1" in recv_notify(notify, proc, log)
        r = curl("http://127.0.0.1:%d/whoami" % port, tmp=tmp_path)
        assert r.status == 200, (r, tail(log))

        proc.send_signal(signal.SIGTERM)
        assert "STOPPING=1" in recv_notify(notify, proc, log)
        rc = proc.wait(timeout=STOP_TIMEOUT)  # no second SIGTERM, as systemd
    finally:
        if rc is None:
            rc, _ = reap(proc, signal.SIGKILL)
        notify.close()
        filt.release()
    assert not died_of_sigsys(rc), SIGSYS_HINT + "; log:\n" + tail(log)
    assert rc == 0, "psproxy exited %d; log:\n%s" % (rc, tail(log))
    assert "Operation not permitted" not in log.read_text(errors="replace"), tail(log)
