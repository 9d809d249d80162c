"""A test whose real peer is missing fails under CI and names the package,
and is skipped (with that reason) on a developer's machine: peers.py and the
`peer` marker, run on a real test module with caddy hidden from PATH."""

import os
import subprocess
import sys

import pytest

import peers

HERE = os.path.dirname(os.path.abspath(__file__))


def path_without(tmp_path, *hidden):
    """A PATH of links to /usr/bin and /bin minus HIDDEN."""
    d = tmp_path / "bin"
    d.mkdir()
    for src in ("/usr/bin", "/bin"):
        for name in os.listdir(src):
            if name not in hidden and not os.path.lexists(d / name):
                (d / name).symlink_to(os.path.join(src, name))
    return str(d)


def run_module(tmp_path, path, env_extra):
    env = {k: v for k, v in os.environ.items()
           if k not in ("CI", "PSPROXY_REQUIRE_PEERS", "PYTEST_XDIST_WORKER",
                        "PYTEST_ADDOPTS", "PYTEST_CURRENT_TEST")}
    env.update(env_extra, PATH=path)
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider",
         "-p", "no:xdist", os.path.join(HERE, "test_access_log_caddy.py")],
        capture_output=True, text=True, timeout=60, cwd=str(tmp_path), env=env)


@pytest.mark.parametrize("env", [{"CI": "true"}, {"PSPROXY_REQUIRE_PEERS": "1"}])
def test_missing_peer_fails_under_ci_naming_the_package(tmp_path, env):
    r = run_module(tmp_path, path_without(tmp_path, "caddy"), env)
    assert r.returncode == 1, r.stdout[-2000:]
    assert "missing peer caddy" in r.stdout and "apt-get install caddy" in r.stdout, r.stdout
    assert " passed" not in r.stdout.splitlines()[-1], r.stdout[-500:]


def test_missing_peer_skips_with_its_reason_elsewhere(tmp_path):
    r = run_module(tmp_path, path_without(tmp_path, "caddy"), {"PSPROXY_REQUIRE_PEERS": "0"})
    assert r.returncode == 0, r.stdout[-2000:]
    last = r.stdout.splitlines()[-1]
    assert "skipped" in last and "passed" not in last and "failed" not in last, r.stdout
    assert "apt-get install caddy" in r.stdout, r.stdout


def test_every_peer_a_test_names_is_known():
    """A typo in a marker would otherwise fail with a KeyError at setup;
    here it fails at once, naming the file."""
    import re
    names = set()
    for f in os.listdir(HERE):
        if f.endswith(".py"):
            text = open(os.path.join(HERE, f), encoding="utf-8").read()
            for m in re.finditer(r"""(?:mark\.peer|peers\.need)\(([^)]*)\)""", text):
                names.update((f, n) for n in re.findall(r'"([a-z0-9_]+)"', m.group(1)))
    assert names, "no peer marker found"
    unknown = sorted((f, n) for f, n in names if n not in peers.PEERS)
    assert not unknown, unknown
