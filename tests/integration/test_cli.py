"""The command line: validate, --version, --help, and clean exit on signals."""

import re
import signal
import subprocess

import pytest

from conftest import PSPROXY, curl, make_config, proxy_block


def run(*args, timeout=10):
    return subprocess.run([PSPROXY, *args], capture_output=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)


GOOD = make_config(8080, proxy_block("127.0.0.1:9000", "127.0.0.1:9001", lb="round_robin"))


def test_validate_accepts_a_good_file(tmp_path):
    f = tmp_path / "good.conf"
    f.write_text(GOOD)
    p = run("validate", "-c", str(f))
    assert p.returncode == 0, p.stderr.decode()


@pytest.mark.parametrize("bad,line", [
    ("http://127.0.0.1:8080 {\n\treverse_proxi 127.0.0.1:9000\n}\n", 2),
    ("{\n\tadmin off\n\tno_such_option 1\n}\nhttp://127.0.0.1:8080 {\n\trespond 200\n}\n", 3),
    ("http://127.0.0.1:8080 {\n\trespond 200\n\n\treverse_proxy 127.0.0.1:9000 {\n"
     "\t\tlb_policy nonsense\n\t}\n}\n", 5),
], ids=["unknown_directive", "unknown_global_option", "bad_lb_policy"])
def test_validate_names_file_and_line_of_an_error(tmp_path, bad, line):
    f = tmp_path / "bad.conf"
    f.write_text(bad)
    p = run("validate", "-c", str(f))
    err = p.stderr.decode(errors="replace")
    assert p.returncode != 0, err
    assert re.search(r"(^|\s|/)bad\.conf:%d: \S" % line, err, re.M), err


def test_validate_reports_unclosed_brace(tmp_path):
    f = tmp_path / "brace.conf"
    f.write_text("http://127.0.0.1:8080 {\n\trespond 200\n")
    p = run("validate", "-c", str(f))
    err = p.stderr.decode(errors="replace")
    assert p.returncode != 0, err
    assert re.search(r"brace\.conf:\d+: \S", err), err


def test_start_with_a_bad_file_exits_non_zero_naming_the_line(tmp_path):
    f = tmp_path / "bad.conf"
    f.write_text("http://127.0.0.1:8080 {\n\treverse_proxi 127.0.0.1:9000\n}\n")
    p = run("-c", str(f))
    err = p.stderr.decode(errors="replace")
    assert p.returncode != 0, err
    assert "bad.conf:2:" in err, err


def test_version():
    p = run("--version")
    assert p.returncode == 0, p.stderr
    assert re.search(r"psproxy.*\d+\.\d+\.\d+", p.stdout.decode()), p.stdout


def test_help():
    p = run("--help")
    assert p.returncode == 0, p.stderr
    out = p.stdout.decode()
    assert "-c" in out and "validate" in out, out


def test_unknown_option_fails():
    p = run("--no-such-option")
    assert p.returncode != 0
    assert p.stderr, "no message for an unknown option"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_exits_cleanly_while_idle(proxy, tmp_path, sig):
    assert curl(proxy.url + "/echo", tmp=tmp_path).status == 200
    rc, killed = proxy.stop(sig)
    assert not killed, "psproxy did not exit within 10 s of %s" % sig.name
    assert rc == 0, "exit status %d after %s; log:\n%s" % (rc, sig.name, proxy.log_text())


def test_logs_listening_line(proxy):
    assert "listening on" in proxy.log_text()
