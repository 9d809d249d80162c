"""scripts/include-graph, the check that keeps the layout's shape (issue #21):
the real tree passes, and a tree with a planted include circle or an upward
include fails, naming it."""
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "include-graph"


def run(root=None):
    args = [str(SCRIPT)] + (["--root", str(root)] if root else [])
    p = subprocess.run(args, capture_output=True, text=True, timeout=60)
    return p.returncode, p.stdout + p.stderr


def tree(tmp_path):
    for d in ("src", "acme"):
        shutil.copytree(ROOT / d, tmp_path / d)
    return tmp_path


def test_the_tree_has_no_circle_and_includes_downwards():
    rc, out = run()
    assert rc == 0, out
    assert "no include circle" in out


def test_a_file_circle_inside_one_folder_fails(tmp_path):
    t = tree(tmp_path)
    (t / "src/core/first.h").write_text('#include "second.h"\n')
    (t / "src/core/second.h").write_text('#include "first.h"\n')
    rc, out = run(t)
    assert rc == 1, out
    assert "module circle (2): src/core/first src/core/second" in out, out


def test_an_upward_include_fails_as_a_folder_circle_and_a_broken_layer(tmp_path):
    t = tree(tmp_path)
    buf = t / "src/core/buf.h"
    buf.write_text(buf.read_text().replace('#define PS_BUF_H', '#define PS_BUF_H\n#include "conn.h"', 1))
    rc, out = run(t)
    assert rc == 1, out
    assert "layer broken: src/core includes from src/exchange" in out, out
    assert "folder circle" in out, out


def test_a_sibling_include_within_one_layer_fails(tmp_path):
    t = tree(tmp_path)
    chal = t / "acme/chal.h"
    chal.write_text(chal.read_text() + '\n#include "http.h"\n')
    rc, out = run(t)
    assert rc == 1, out
    assert "layer broken: acme includes from src/http" in out, out


def test_a_folder_in_no_layer_fails(tmp_path):
    t = tree(tmp_path)
    (t / "src/extra").mkdir()
    (t / "src/extra/thing.c").write_text('#include "log.h"\n')
    rc, out = run(t)
    assert rc == 1, out
    assert "folder src/extra is in no layer" in out, out
