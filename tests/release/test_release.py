"""The release archive (scripts/release, issue #20), checked as a user's host
would meet it.

- What it asks of the host: no symbol version of the C library newer than
  GLIBC_2.34 (Amazon Linux 2023) in anything it loads, and nothing from
  outside the archive but the C library; hardened, stripped, with its debug
  file beside it.
- A minimal Debian root made with `debootstrap --variant=minbase` (no libuv,
  OpenSSL, libcurl, cJSON, nghttp2, libpq or Kerberos in it), where the
  unpacked archive runs under chroot: `psproxy validate`, then psproxy
  serving HTTPS with a certificate it obtained from Pebble (on the host's
  loopback) and proxying to an upstream on loopback.
- install.sh in that root, under dash and bash, with a stand-in for
  systemctl: what it lays down, that a second run changes nothing, an edited
  Caddyfile kept, an upgrade, a Caddyfile the new version refuses, and
  --uninstall.

Needs root (debootstrap, chroot, a private mount namespace for /proc). The
minimal root is made once and kept in build-release/minbase (or
$PSPROXY_MINBASE); each test works on its own copy.
"""

import glob
import hashlib
import os
import re
import shutil
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests" / "integration"))

from conftest import Upstream, curl, free_port, reap, tail  # noqa: E402
from pebble import https_ca, pebble_factory  # noqa: E402,F401 - fixtures

GLIBC_MAX = (2, 34)
# The C library's own shared objects: the host provides these.
GLIBC_LIBS = {"linux-vdso.so.1", "ld-linux-x86-64.so.2", "libc.so.6", "libm.so.6",
              "libpthread.so.0", "libdl.so.2", "librt.so.1", "libresolv.so.2"}
# What the binary would load from the host if it were not in the archive.
DEBIAN_PACKAGES_ABSENT = ["libuv1", "libssl3", "libcurl4", "libcjson1", "libnghttp2-14",
                          "libpq5", "libgssapi-krb5-2", "libsasl2-2"]
MINBASE = Path(os.environ.get("PSPROXY_MINBASE") or REPO / "build-release" / "minbase")
MIRROR = os.environ.get("DEBOOTSTRAP_MIRROR", "http://deb.debian.org/debian")
DEBOOTSTRAP_TIMEOUT = 900
CMD_TIMEOUT = 60
NAME = "api.photospots.live"
ROOT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FIRST_CERT_TIMEOUT = 30.0


# -- the archive ----------------------------------------------------------------


def find_archive():
    named = os.environ.get("PSPROXY_RELEASE")
    if named:
        return Path(named)
    found = sorted(glob.glob(str(REPO / "dist" / "psproxy-*-linux-x86_64.tar.gz")),
                   key=os.path.getmtime)
    if not found:
        pytest.fail("no release archive in dist/: run scripts/release first")
    return Path(found[-1])


@pytest.fixture(scope="session")
def archive():
    return find_archive()


@pytest.fixture(scope="session")
def unpacked(archive, tmp_path_factory):
    """The archive unpacked on the host: its top directory."""
    d = tmp_path_factory.mktemp("unpacked")
    run(["tar", "-C", str(d), "-xzf", str(archive)])
    (top,) = list(d.iterdir())
    return top


def run(argv, timeout=CMD_TIMEOUT, check=True, env=None):
    p = subprocess.run([str(a) for a in argv], capture_output=True, text=True, errors="replace",
                       timeout=timeout, stdin=subprocess.DEVNULL, env=env)
    if check and p.returncode != 0:
        raise AssertionError("%s failed (%d):\n%s%s" % (" ".join(map(str, argv)),
                                                        p.returncode, p.stdout[-3000:],
                                                        p.stderr[-3000:]))
    return p


def elf_files(top):
    return [top / "psproxy"] + sorted((top / "lib").iterdir())


def dynamic(path):
    return run(["readelf", "-d", "--wide", path]).stdout


def test_archive_holds_what_a_user_installs(archive, unpacked):
    assert re.fullmatch(r"psproxy-\d+\.\d+\.\d+-linux-x86_64\.tar\.gz", archive.name)
    assert unpacked.name == archive.name[:-len(".tar.gz")]
    names = {p.name for p in unpacked.iterdir()}
    assert names == {"psproxy", "lib", "install.sh", "psproxy.service", "Caddyfile",
                     "README.md", "LICENSES"}, names
    assert os.stat(unpacked / "install.sh").st_mode & 0o777 == 0o755
    assert os.stat(unpacked / "psproxy").st_mode & 0o777 == 0o755
    # every member is root's, whoever unpacks it
    listing = run(["tar", "-tvzf", archive]).stdout.splitlines()
    assert listing and all(" root/root " in line or " 0/0 " in line for line in listing), \
        listing[:5]
    # licence texts: psproxy's and one per package linked in or carried
    lic = {p.name for p in (unpacked / "LICENSES").iterdir()}
    for want in ("psproxy.txt", "README", "libssl-dev.txt", "libuv1-dev.txt",
                 "libcurl4-openssl-dev.txt", "libnghttp2-dev.txt", "libpq-dev.txt",
                 "libcjson1.txt", "node-llhttp.txt"):
        assert want in lic, (want, sorted(lic))
    for so in (unpacked / "lib").iterdir():
        pkg = run(["dpkg", "-S", "/usr/lib/x86_64-linux-gnu/" + so.name], check=False)
        if pkg.returncode != 0:
            pkg = run(["dpkg", "-S", "/lib/x86_64-linux-gnu/" + so.name])
        assert pkg.stdout.split(":")[0] + ".txt" in lic, (so.name, pkg.stdout)


def test_nothing_needs_glibc_newer_than_2_34(unpacked):
    newest = (0, 0)
    for f in elf_files(unpacked):
        for v in re.findall(r"Name: GLIBC_(\d+)\.(\d+)", run(["readelf", "-V", "--wide", f]).stdout):
            version = (int(v[0]), int(v[1]))
            assert version <= GLIBC_MAX, "%s needs GLIBC_%d.%d" % (f.name, *version)
            newest = max(newest, version)
    assert newest >= (2, 2), "no GLIBC symbol versions found: readelf output changed?"


def test_ldd_finds_only_the_c_library_outside_the_archive(unpacked):
    env = {k: v for k, v in os.environ.items() if k != "LD_LIBRARY_PATH"}
    out = run(["ldd", unpacked / "psproxy"], env=env).stdout
    lib = str(unpacked / "lib") + "/"
    resolved = 0
    for line in out.splitlines():
        parts = line.split()
        assert "not found" not in line, line
        if len(parts) >= 3 and parts[1] == "=>":
            resolved += 1
            assert parts[2].startswith(lib) or parts[0] in GLIBC_LIBS, line
    carried = {p.name for p in (unpacked / "lib").iterdir()}
    assert resolved >= len(carried) and "libcjson.so.1" in carried, out


def test_binary_is_hardened_stripped_and_has_a_debug_file(archive, unpacked):
    exe = unpacked / "psproxy"
    header = run(["readelf", "-h", exe]).stdout
    assert re.search(r"Type:\s+DYN", header), header  # PIE
    d = dynamic(exe)
    assert "BIND_NOW" in d and re.search(r"FLAGS_1\).*NOW.*PIE", d), d  # full RELRO
    # looks for libraries in the archive only, for itself and what it loads
    assert re.search(r"\(RPATH\)\s+Library rpath: \[\$ORIGIN/lib\]", d), d
    assert "RUNPATH" not in d, d
    segments = run(["readelf", "-lW", exe]).stdout
    assert "GNU_RELRO" in segments
    stack = [line for line in segments.splitlines() if "GNU_STACK" in line]
    assert stack and "RWE" not in stack[0], stack  # no executable stack
    syms = run(["nm", "-D", exe]).stdout
    assert "__stack_chk_fail" in syms  # stack protector
    assert re.search(r"__\w+_chk@", syms), "no FORTIFY_SOURCE checks imported"
    sections = run(["readelf", "-SW", exe]).stdout
    assert ".debug_info" not in sections and ".symtab" not in sections, "not stripped"
    assert ".gnu_debuglink" in sections
    # the debug file beside the archive belongs to this binary
    debug = archive.with_name(archive.name.replace(".tar.gz", ".debug"))
    assert debug.exists(), debug
    link = run(["readelf", "--string-dump=.gnu_debuglink", exe]).stdout
    assert debug.name in link, link
    ids = [re.search(r"Build ID: (\w+)", run(["readelf", "-n", f]).stdout).group(1)
           for f in (exe, debug)]
    assert ids[0] == ids[1], ids
    assert ".debug_info" in run(["readelf", "-SW", debug]).stdout
    for so in (unpacked / "lib").iterdir():
        # RPATH, not RUNPATH: ahead of LD_LIBRARY_PATH for what each loads
        d = dynamic(so)
        assert re.search(r"\(RPATH\)\s+Library rpath: \[\$ORIGIN\]", d) and "RUNPATH" not in d, so


def test_one_openssl_the_static_one(unpacked):
    carried = [p.name for p in (unpacked / "lib").iterdir()]
    assert not [n for n in carried if re.match(r"lib(ssl|crypto)\.so", n)], carried
    for f in elf_files(unpacked):
        needed = re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", dynamic(f))
        assert not [n for n in needed if re.match(r"lib(ssl|crypto|gnutls)\.so", n)], (f, needed)
    # OpenSSL's own symbols are in the binary
    assert "OpenSSL 3." in run(["strings", "-n", "8", unpacked / "psproxy"]).stdout


def test_release_unit_runs_the_static_user_on_the_caddyfile(unpacked):
    unit = (unpacked / "psproxy.service").read_text()
    settings = [line.strip() for line in unit.splitlines()
                if line.strip() and not line.lstrip().startswith("#")]
    assert "ExecStart=/usr/local/bin/psproxy -c /etc/psproxy/Caddyfile" in settings
    assert "User=psproxy" in settings and "Group=psproxy" in settings
    assert not any(s.startswith("DynamicUser=") for s in settings), settings
    assert "StateDirectory=psproxy" in settings
    if shutil.which("systemd-analyze") and "--offline" in run(["systemd-analyze", "--help"]).stdout:
        p = run(["systemd-analyze", "security", "--offline=true",
                 unpacked / "psproxy.service"], check=False)
        m = re.search(r"Overall exposure level for \S+: (\d+(?:\.\d+)?)", p.stdout)
        assert m and float(m.group(1)) <= 2.0, p.stdout[-3000:]


def test_install_sh_is_posix_sh(unpacked):
    if shutil.which("shellcheck") is None:
        pytest.fail("shellcheck missing: apt-get install shellcheck (scripts/install-deps)")
    p = run(["shellcheck", "-s", "sh", unpacked / "install.sh"], check=False)
    assert p.returncode == 0, p.stdout
    # and dash, Debian's /bin/sh, parses it
    run(["dash", "-n", unpacked / "install.sh"])


# -- a minimal Debian root ---------------------------------------------------------


@pytest.fixture(scope="session")
def minbase():
    """A pristine `debootstrap --variant=minbase bookworm` root, made once."""
    if os.geteuid() != 0:
        pytest.fail("the release tests need root (debootstrap, chroot, mount)")
    done = MINBASE / ".psproxy-minbase-complete"
    if done.exists():
        return MINBASE
    tmp = MINBASE.with_name(MINBASE.name + ".tmp")
    for d in (tmp, MINBASE):
        if d.exists():
            shutil.rmtree(d)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    # in a mount namespace of its own: what debootstrap mounts (proc, sys)
    # ends with it, even when it is killed
    p = subprocess.run(["unshare", "--mount", "--propagation", "private",
                        "debootstrap", "--variant=minbase", "bookworm", str(tmp), MIRROR],
                       capture_output=True, text=True, timeout=DEBOOTSTRAP_TIMEOUT,
                       stdin=subprocess.DEVNULL)
    if p.returncode != 0:
        pytest.fail("debootstrap failed (%d):\n%s%s" % (p.returncode, p.stdout[-3000:],
                                                         p.stderr[-3000:]))
    (tmp / done.name).touch()
    tmp.rename(MINBASE)
    return MINBASE


@pytest.fixture
def root(minbase, archive, tmp_path):
    """This test's copy of the minimal root, the archive unpacked in /opt."""
    r = tmp_path / "root"
    run(["cp", "-a", "--reflink=auto", minbase, r], timeout=300)
    (r / "opt").mkdir(exist_ok=True)
    run(["tar", "-C", r / "opt", "-xzf", archive])
    yield r
    shutil.rmtree(r, ignore_errors=True)


def release_dir(root):
    """Where the archive is unpacked in ROOT, as a path inside it."""
    return "/opt/" + find_archive().name[:-len(".tar.gz")]


def chroot_argv(root, argv):
    """ARGV run in ROOT: a private mount namespace with its own /proc there
    (glibc reads /proc/self/exe to expand $ORIGIN), unmounted when it ends."""
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c",
            'mount -t proc proc "$0/proc" && exec chroot "$0" "$@"', str(root), *argv]


# The environment of a fresh root shell: nothing of this host's (no
# SSL_CERT_FILE, LD_LIBRARY_PATH or proxy settings) leaks in.
ROOT_ENV = {"PATH": ROOT_PATH, "HOME": "/root", "LC_ALL": "C"}


def in_root(root, argv, check=True, timeout=CMD_TIMEOUT):
    return run(chroot_argv(root, argv), check=check, timeout=timeout, env=ROOT_ENV)


def test_minbase_root_has_none_of_the_libraries(root):
    installed = in_root(root, ["dpkg-query", "-W", "-f", "${Package}\n"]).stdout.split()
    for pkg in DEBIAN_PACKAGES_ABSENT:
        assert pkg not in installed, "%s is in the minimal root: the test proves nothing" % pkg
    found = in_root(root, ["sh", "-c", "ls /usr/lib/x86_64-linux-gnu/ | "
                           "grep -E '^lib(uv|ssl|curl|cjson|nghttp2|pq)\\.so' || true"]).stdout
    assert found.strip() == "", found
    # ...and the loader finds every library psproxy needs in the archive
    out = in_root(root, ["ldd", release_dir(root) + "/psproxy"]).stdout
    for line in out.splitlines():
        parts = line.split()
        assert "not found" not in line, out
        if len(parts) >= 3 and parts[1] == "=>":
            assert parts[2].startswith(release_dir(root) + "/lib/") or parts[0] in GLIBC_LIBS, line


def test_validate_in_minbase_root(root):
    rel = release_dir(root)
    p = in_root(root, [rel + "/psproxy", "--version"])
    assert p.stdout.startswith("psproxy "), p.stdout
    p = in_root(root, [rel + "/psproxy", "validate", "-c", rel + "/Caddyfile"])
    assert "valid configuration" in p.stdout, p.stdout + p.stderr
    (root / "etc" / "bad.caddyfile").write_text("example.com {\n\tfile_server\n}\n")
    p = in_root(root, [rel + "/psproxy", "validate", "-c", "/etc/bad.caddyfile"], check=False)
    assert p.returncode != 0
    assert "/etc/bad.caddyfile:2" in p.stderr, p.stderr


def test_serves_https_with_a_pebble_certificate_in_minbase_root(root, tmp_path, https_ca,
                                                                 pebble_factory):  # noqa: F811
    upstream = Upstream(tmp_path)
    http_port, https_port = free_port(), free_port()
    pebble = pebble_factory(http_port=http_port, tls_port=https_port)
    # The CA bundle where Amazon Linux keeps it (the minimal root has no
    # ca-certificates) holds the CA of Pebble's HTTPS listener, and no
    # acme_ca_root: the static libcurl trusts the ACME CA through the bundle
    # psproxy found.
    bundle = root / "etc" / "pki" / "tls" / "certs" / "ca-bundle.crt"
    bundle.parent.mkdir(parents=True)
    shutil.copy(https_ca.ca, bundle)
    (root / "etc" / "psproxy").mkdir()
    (root / "etc" / "psproxy" / "Caddyfile").write_text(
        "{\n\tadmin off\n\tworkers 1\n\thttp_port %d\n\thttps_port %d\n"
        "\temail admin@photospots.live\n\tacme_ca %s\n"
        "\tstorage file_system /var/lib/psproxy\n}\n\n"
        "%s {\n\treverse_proxy %s\n}\n"
        % (http_port, https_port, pebble.directory_url, NAME, upstream.addr))
    log = tmp_path / "psproxy.log"
    with open(log, "w") as logf:
        proc = subprocess.Popen(
            chroot_argv(root, [release_dir(root) + "/psproxy", "-c", "/etc/psproxy/Caddyfile"]),
            stdout=logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=ROOT_ENV)
    try:
        cacert = tmp_path / "pebble-roots.pem"
        cacert.write_bytes(pebble.root.read_bytes())
        resolve = "%s:%d:127.0.0.1" % (NAME, https_port)
        url = "https://%s:%d/whoami" % (NAME, https_port)
        deadline = time.monotonic() + FIRST_CERT_TIMEOUT
        while True:
            assert proc.poll() is None, "psproxy exited %s:\n%s" % (proc.returncode, tail(log))
            r = curl(url, "--resolve", resolve, "--cacert", str(cacert), timeout=10,
                     tmp=tmp_path)
            if r.status == 200:
                break
            assert time.monotonic() < deadline, "no HTTPS 200 after %.0f s: %r\n%s" % (
                FIRST_CERT_TIMEOUT, r, tail(log))
            time.sleep(0.2)
        assert r.body == str(upstream.port).encode(), r  # the upstream's answer
        # the certificate is Pebble's, and stored where the Caddyfile says
        certs = list((root / "var" / "lib" / "psproxy").rglob(NAME + ".crt"))
        assert certs, tail(log)
        # HTTP redirects to HTTPS as in Caddy
        r = curl("http://%s:%d/x" % (NAME, http_port), "--resolve",
                 "%s:%d:127.0.0.1" % (NAME, http_port), tmp=tmp_path)
        assert r.status == 308, r
        text = log.read_text()
        assert "trust: CA bundle /etc/pki/tls/certs/ca-bundle.crt\n" in text, text[-3000:]
        assert "acme_ca_root" not in text, text[-3000:]
        assert pebble.issued_seen() >= 1
    finally:
        reap(proc)
        upstream.stop()


# -- install.sh ---------------------------------------------------------------------

# Records each call; `is-active` answers from the state start/stop leave.
SYSTEMCTL_STANDIN = """#!/bin/sh
echo "$*" >> /var/log/systemctl-calls
case "$1" in
is-active) [ -e /run/psproxy-active ] ;;
start|restart) touch /run/psproxy-active ;;
stop) rm -f /run/psproxy-active ;;
disable) [ "$2" = --now ] && rm -f /run/psproxy-active; true ;;
*) true ;;
esac
"""


def with_systemctl(root):
    sc = root / "usr" / "bin" / "systemctl"
    assert not sc.exists(), "the minimal root has a systemctl"
    sc.write_text(SYSTEMCTL_STANDIN)
    sc.chmod(0o755)
    (root / "run").mkdir(exist_ok=True)


def systemctl_calls(root):
    f = root / "var" / "log" / "systemctl-calls"
    calls = f.read_text().splitlines() if f.exists() else []
    if f.exists():
        f.unlink()
    return calls


def install(root, shell, *args, rel=None, check=True):
    rel = rel or release_dir(root)
    return in_root(root, [shell, rel + "/install.sh", *args], check=check)


def tree_state(root):
    """Path -> (mode, uid, gid, content digest or link target) under what
    install.sh manages, and the account lines."""
    out = {}
    for top in ("usr/local", "etc/psproxy", "etc/systemd", "var/lib/psproxy"):
        base = root / top
        if not base.exists():
            continue
        for p in sorted([base, *base.rglob("*")]):
            st = os.lstat(p)
            if stat.S_ISLNK(st.st_mode):
                what = "-> " + os.readlink(p)
            elif stat.S_ISREG(st.st_mode):
                what = hashlib.sha256(p.read_bytes()).hexdigest()
            else:
                what = "dir"
            out[str(p.relative_to(root))] = (st.st_mode, st.st_uid, st.st_gid, what)
    for db in ("passwd", "group", "shadow"):
        out["etc/" + db] = tuple(line for line in (root / "etc" / db).read_text().splitlines()
                                 if line.startswith("psproxy:"))
    return out


def account(root):
    line = in_root(root, ["getent", "passwd", "psproxy"]).stdout.strip()
    name, _, uid, gid, _, home, shell = line.split(":")
    return int(uid), int(gid), home, shell


@pytest.mark.parametrize("shell", ["sh", "bash"])  # dash (Debian's sh); bash (Amazon Linux's)
def test_install_sh_lays_down_the_service(root, shell):
    with_systemctl(root)
    # certificates an earlier (dynamic or deleted) psproxy user left behind
    old_cert = root / "var" / "lib" / "psproxy" / "certificates" / "old" / "old.key"
    old_cert.parent.mkdir(parents=True)
    old_cert.write_text("key")
    for p in (old_cert, old_cert.parent, old_cert.parent.parent, old_cert.parent.parent.parent):
        os.chown(p, 61234, 61234)
    rel = release_dir(root)
    version = rel.split("-")[1]
    p = install(root, shell)
    out = p.stdout
    # the binary, reached through the link, loading from its own directory
    link = root / "usr" / "local" / "bin" / "psproxy"
    assert os.readlink(link) == "/usr/local/lib/psproxy/%s/psproxy" % version
    v = in_root(root, ["psproxy", "--version"]).stdout
    assert v.startswith("psproxy " + version), v
    libdir = root / "usr" / "local" / "lib" / "psproxy" / version
    assert (libdir / "lib" / "libcjson.so.1").exists()
    for f in libdir.rglob("*"):
        st = os.lstat(f)
        assert st.st_uid == 0 and not st.st_mode & 0o022, f  # root's, not writable by others
    # the unit, the default Caddyfile
    unit = root / "etc" / "systemd" / "system" / "psproxy.service"
    assert unit.read_bytes() == (root / rel.lstrip("/") / "psproxy.service").read_bytes()
    caddyfile = root / "etc" / "psproxy" / "Caddyfile"
    assert caddyfile.read_bytes() == (root / rel.lstrip("/") / "Caddyfile").read_bytes()
    # the system user and its state directory
    uid, gid, home, shell_of = account(root)
    assert 0 < uid < 1000, uid
    assert home == "/var/lib/psproxy" and shell_of.endswith("nologin"), (home, shell_of)
    assert in_root(root, ["getent", "group", "psproxy"]).stdout.split(":")[2] == str(gid)
    st = os.stat(root / "var" / "lib" / "psproxy")
    assert (st.st_uid, st.st_gid, st.st_mode & 0o777) == (uid, gid, 0o700)
    for p in (old_cert, old_cert.parent):
        assert (os.stat(p).st_uid, os.stat(p).st_gid) == (uid, gid), p
    assert "gave /var/lib/psproxy and everything in it to psproxy" in out, out
    # the service's user runs the binary and reads the Caddyfile
    p = in_root(root, ["setpriv", "--reuid", "psproxy", "--regid", "psproxy", "--init-groups",
                       "/usr/local/bin/psproxy", "validate", "-c", "/etc/psproxy/Caddyfile"])
    assert "valid configuration" in p.stdout, p.stdout + p.stderr
    # systemd: reloaded, enabled, started
    calls = systemctl_calls(root)
    assert calls[0] == "daemon-reload", calls
    assert "enable --quiet psproxy.service" in calls and "start psproxy.service" in calls, calls
    # it says what it did, and which CA bundle (none in a minimal root)
    for said in ("created system user psproxy", "installed the default /etc/psproxy/Caddyfile",
                 "installed /etc/systemd/system/psproxy.service", "started psproxy",
                 "no CA bundle found"):
        assert said in out, (said, out)

    # Again: nothing changes but a restart on the same binary.
    before = tree_state(root)
    out = install(root, shell).stdout
    assert tree_state(root) == before
    assert "kept /etc/psproxy/Caddyfile" in out and "system user psproxy exists" in out, out
    assert "restart psproxy.service" in systemctl_calls(root)

    # A CA bundle where Amazon Linux keeps it is found and named.
    bundle = root / "etc" / "pki" / "tls" / "certs" / "ca-bundle.crt"
    bundle.parent.mkdir(parents=True)
    bundle.write_text("")
    assert "CA bundle: /etc/pki/tls/certs/ca-bundle.crt" in install(root, shell).stdout
    systemctl_calls(root)

    # An edited Caddyfile is the user's: kept by an install.
    mine = "{\n\tadmin off\n}\n\n:8080 {\n\trespond \"mine\" 200\n}\n"
    caddyfile.write_text(mine)
    install(root, shell)
    assert caddyfile.read_text() == mine
    systemctl_calls(root)


def make_version(root, version):
    """A copy of the unpacked archive that calls itself VERSION."""
    src = root / release_dir(root).lstrip("/")
    dst = root / "opt" / ("psproxy-%s-linux-x86_64" % version)
    shutil.copytree(src, dst, symlinks=True)
    script = dst / "install.sh"
    script.write_text(re.sub(r"^VERSION=.*$", "VERSION=" + version, script.read_text(),
                             count=1, flags=re.M))
    return "/opt/" + dst.name


def test_install_sh_upgrades_and_uninstalls(root):
    with_systemctl(root)
    install(root, "sh")
    systemctl_calls(root)
    base = root / "usr" / "local" / "lib" / "psproxy"
    first = os.readlink(root / "usr" / "local" / "bin" / "psproxy").split("/")[-2]

    # Upgrade: the link moves, the service restarts, the previous version stays
    # to go back to; the one before it goes.
    out = install(root, "sh", rel=make_version(root, "9.0.1")).stdout
    assert os.readlink(root / "usr" / "local" / "bin" / "psproxy") == \
        "/usr/local/lib/psproxy/9.0.1/psproxy"
    assert "restarted psproxy on 9.0.1" in out, out
    assert "restart psproxy.service" in systemctl_calls(root)
    versions = lambda: sorted(p.name for p in base.iterdir() if p.is_dir())  # noqa: E731
    assert versions() == sorted([first, "9.0.1"])
    rel2 = make_version(root, "9.0.2")
    out = install(root, "sh", rel=rel2).stdout
    assert versions() == ["9.0.1", "9.0.2"], out
    assert "removed psproxy %s" % first in out
    assert "kept psproxy 9.0.1 to go back to" in out, out
    # installing 9.0.2 again keeps 9.0.1, the one to go back to
    before = tree_state(root)
    out = install(root, "sh", rel=rel2).stdout
    assert versions() == ["9.0.1", "9.0.2"], out
    assert tree_state(root) == before
    systemctl_calls(root)

    # A Caddyfile the new version refuses: nothing changes, no restart.
    caddyfile = root / "etc" / "psproxy" / "Caddyfile"
    default = caddyfile.read_text()
    caddyfile.write_text("example.com {\n\tno_such_directive\n}\n")
    before = tree_state(root)
    p = install(root, "sh", rel=make_version(root, "9.0.3"), check=False)
    assert p.returncode != 0
    assert "/etc/psproxy/Caddyfile:2" in p.stderr and "nothing was changed" in p.stderr, p.stderr
    assert tree_state(root) == before
    assert not any(c.startswith(("restart", "start")) for c in systemctl_calls(root))
    caddyfile.write_text(default)

    # Uninstall: what install.sh laid down goes; certificates, the account
    # owning them, and an edited Caddyfile stay.
    cert = root / "var" / "lib" / "psproxy" / "certificates" / "x" / "x.crt"
    cert.parent.mkdir(parents=True)
    cert.write_text("cert")
    out = install(root, "sh", "--uninstall").stdout
    assert "disable --now psproxy.service" in systemctl_calls(root)
    for gone in ("usr/local/bin/psproxy", "usr/local/lib/psproxy",
                 "etc/systemd/system/psproxy.service", "etc/psproxy/Caddyfile"):
        assert not os.path.lexists(root / gone), (gone, out)
    assert cert.read_text() == "cert"
    assert account(root)[0] > 0
    assert "kept /var/lib/psproxy" in out, out
    # install again, edit the Caddyfile, uninstall: the edited file is kept;
    # a second uninstall finds nothing to do
    install(root, "sh")
    caddyfile.write_text(default + "# mine\n")
    out = install(root, "sh", "--uninstall").stdout
    assert caddyfile.exists() and "kept /etc/psproxy/Caddyfile (edited)" in out, out
    install(root, "sh", "--uninstall")
