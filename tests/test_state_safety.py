"""Issue 16: the state file (--state FILE, ports/state.py) never destroys anything.

Only files in tmp_path are used (a FIFO stands in for a device node): no test touches a
real device. Reads that would block (a FIFO opened for reading or writing) run in a thread
with a deadline, so that a regression fails instead of hanging."""
import json
import os
import subprocess
import threading

import pytest

from mbus_ports import state as _state
from mbus_ports.state import load_state, save_state
from tests.hostutil import micropython_exe, usage_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MAX_SIZE = getattr(_state, "MAX_SIZE", 64 * 1024)


def start_refused(args):
    """The one line of a start with --device tcp:0 that must be refused at once."""
    return usage_error(["--device", "tcp:0"] + list(args))


def in_thread(fn, *args):
    """fn(*args) with a deadline; a FIFO that a regression opens is unblocked after it."""
    out = {}

    def run():
        try:
            out["value"] = fn(*args)
        except Exception as e:  # noqa: BLE001 - handed to the test
            out["error"] = e
    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(5)
    return t.is_alive(), out


def unblock(fifo):
    """Open the other end of a FIFO so a blocked open() in a stuck thread returns."""
    for flags in (os.O_RDONLY | os.O_NONBLOCK, os.O_RDWR):
        try:
            os.close(os.open(fifo, flags))
        except OSError:
            pass


@pytest.fixture
def fifo(tmp_path):
    p = str(tmp_path / "fifo")
    os.mkfifo(p)
    yield p
    unblock(p)


def is_fifo(path):
    import stat
    return stat.S_ISFIFO(os.lstat(path).st_mode)


# -- start-up checks -------------------------------------------------------------------
def test_a_fifo_is_refused_at_start_and_left_alone(fifo):
    line = start_refused(["--state", fifo])
    assert line == "mbus-slave: error: --state %s: not a regular file" % fifo
    assert is_fifo(fifo)


def test_a_directory_is_refused_at_start(tmp_path):
    d = tmp_path / "d"
    d.mkdir()
    line = start_refused(["--state", str(d)])
    assert line == "mbus-slave: error: --state %s: is a directory" % d
    assert os.listdir(str(d)) == []


def test_a_missing_folder_is_refused_at_start(tmp_path):
    p = tmp_path / "nope" / "state.json"
    line = start_refused(["--state", str(p)])
    assert line == ("mbus-slave: error: --state %s: folder %s does not exist"
                    % (p, tmp_path / "nope"))


def test_a_folder_that_is_a_file_is_refused_at_start(tmp_path):
    f = tmp_path / "plain"
    f.write_text("x")
    line = start_refused(["--state", str(f / "state.json")])
    assert "%s is not a folder" % f in line
    assert f.read_text() == "x"


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into any folder")
def test_a_read_only_folder_is_refused_at_start(tmp_path):
    d = tmp_path / "ro"
    d.mkdir()
    d.chmod(0o555)
    try:
        line = start_refused(["--state", str(d / "s.json")])
        assert "folder %s is not writable" % d in line
    finally:
        d.chmod(0o755)


def test_symlinks_are_refused_at_start_and_left_alone(tmp_path, fifo):
    target = tmp_path / "real.json"
    target.write_text('{"format": 1, "baud": 9600}')
    for to in (str(target), fifo, str(tmp_path / "dangling")):
        link = str(tmp_path / "link.json")
        os.symlink(to, link)
        line = start_refused(["--state", link])
        assert line.startswith("mbus-slave: error: --state %s: is a symbolic link to %s"
                               % (link, to)), line
        assert os.readlink(link) == to
        os.remove(link)
    assert target.read_text() == '{"format": 1, "baud": 9600}'
    assert is_fifo(fifo) and not os.path.lexists(str(tmp_path / "dangling"))


def test_a_non_regular_tmp_beside_it_is_refused_at_start(tmp_path):
    p = str(tmp_path / "s.json")
    os.mkfifo(p + ".tmp")
    try:
        line = start_refused(["--state", p])
        assert line == ("mbus-slave: error: --state %s: %s.tmp exists and is not a regular "
                        "file (not replaced)" % (p, p))
        assert is_fifo(p + ".tmp") and not os.path.exists(p)
    finally:
        unblock(p + ".tmp")


def test_check_path_accepts_a_new_or_regular_file(tmp_path):
    p = tmp_path / "s.json"
    check_path = _state.check_path
    assert check_path(str(p)) is None
    p.write_text("{}")
    assert check_path(str(p)) is None
    old = os.getcwd()
    os.chdir(str(tmp_path))
    try:
        assert check_path("s.json") is None and check_path("new.json") is None
    finally:
        os.chdir(old)


# -- writing ------------------------------------------------------------------------------
def test_save_never_replaces_what_is_not_a_regular_file(tmp_path, fifo):
    d = tmp_path / "d"
    d.mkdir()
    target = tmp_path / "target.json"
    target.write_text("precious")
    link = str(tmp_path / "link.json")
    os.symlink(str(target), link)
    for path in (fifo, str(d), link):
        stuck, out = in_thread(save_state, path, {"format": 1})
        assert not stuck, "save_state(%s) blocked" % path
        assert isinstance(out.get("error"), OSError), (path, out)
        assert "not replaced" in str(out["error"]), out["error"]
        assert not os.path.lexists(path + ".tmp")
    assert is_fifo(fifo) and d.is_dir() and os.readlink(link) == str(target)
    assert target.read_text() == "precious"


def test_save_never_writes_through_a_tmp_that_is_not_a_regular_file(tmp_path):
    p = str(tmp_path / "s.json")
    victim = tmp_path / "victim"
    victim.write_text("precious")
    os.symlink(str(victim), p + ".tmp")          # a .tmp that points elsewhere
    stuck, out = in_thread(save_state, p, {"format": 1})
    assert not stuck and isinstance(out.get("error"), OSError), out
    assert victim.read_text() == "precious" and os.readlink(p + ".tmp") == str(victim)
    assert not os.path.lexists(p)
    os.remove(p + ".tmp")
    os.mkfifo(p + ".tmp")                        # a .tmp that would block the writer
    try:
        stuck, out = in_thread(save_state, p, {"format": 1})
        assert not stuck, "save_state blocked on a FIFO .tmp"
        assert isinstance(out.get("error"), OSError) and is_fifo(p + ".tmp"), out
    finally:
        unblock(p + ".tmp")


def test_save_replaces_a_stale_regular_tmp(tmp_path):
    p = str(tmp_path / "s.json")
    with open(p + ".tmp", "w") as f:
        f.write("half")
    save_state(p, {"format": 1, "baud": 4800})
    assert load_state(p) == {"format": 1, "baud": 4800}
    assert sorted(os.listdir(str(tmp_path))) == ["s.json"]


# -- reading ------------------------------------------------------------------------------
def test_load_never_blocks_on_or_moves_what_is_not_a_regular_file(tmp_path, fifo):
    d = tmp_path / "d"
    d.mkdir()
    for path, what in ((fifo, "not a regular file"), (str(d), "is a directory")):
        warnings = []
        stuck, out = in_thread(load_state, path, warnings.append)
        assert not stuck, "load_state(%s) blocked" % path
        assert out.get("value") == {} and len(warnings) == 1, (out, warnings)
        assert warnings[0].startswith("state file %s %s; ignored" % (path, what))
    assert is_fifo(fifo) and d.is_dir()
    assert sorted(os.listdir(str(tmp_path))) == ["d", "fifo"]


def test_a_file_larger_than_the_cap_is_corrupt(tmp_path):
    p = tmp_path / "s.json"
    text = '{"format": 1, "baud": 9600}' + " " * MAX_SIZE   # valid JSON, but too big
    p.write_text(text)
    warnings = []
    assert load_state(str(p), warnings.append) == {}
    assert len(warnings) == 1 and "larger than" in warnings[0], warnings
    assert (tmp_path / "s.json.corrupt").read_text() == text


def test_a_sparse_file_beyond_the_cap_is_corrupt(tmp_path):
    p = tmp_path / "s.json"
    with open(str(p), "wb") as f:
        f.truncate(4 * MAX_SIZE)                       # holes: reads as zeros
    warnings = []
    assert load_state(str(p), warnings.append) == {} and len(warnings) == 1, warnings
    assert "larger than %d bytes" % MAX_SIZE in warnings[0], warnings


def test_a_file_that_never_ends_is_read_only_up_to_the_cap(tmp_path, monkeypatch):
    """What /dev/zero did to the old reader (2.4 GB read), on a small regular file that
    keeps growing while it is read: the read stops past the cap."""
    p = tmp_path / "s.json"
    p.write_text("{}")
    reads = []

    class Endless:
        def read(self, n=-1):
            reads.append(n)
            assert n is not None and 0 < n <= MAX_SIZE + 1, "unbounded read(%r)" % n
            return b"\0" * n

        def close(self):
            pass

    monkeypatch.setattr(_state, "open", lambda *a: Endless(), raising=False)
    warnings = []
    assert load_state(str(p), warnings.append) == {} and len(warnings) == 1, warnings
    assert "larger than %d bytes" % MAX_SIZE in warnings[0], warnings
    assert sum(reads) <= 2 * MAX_SIZE, sum(reads)


def test_a_corrupt_file_is_kept_beside_it(tmp_path):
    p = tmp_path / "s.json"
    p.write_text("{garbage")
    warnings = []
    assert load_state(str(p), warnings.append) == {}
    assert len(warnings) == 1 and "kept as %s.corrupt" % p in warnings[0], warnings
    assert not p.exists() and (tmp_path / "s.json.corrupt").read_text() == "{garbage"
    save_state(str(p), {"format": 1, "baud": 2400})
    assert (tmp_path / "s.json.corrupt").read_text() == "{garbage"
    # a second corrupt file does not replace the first one kept
    p.write_text("[1, 2]")
    warnings = []
    assert load_state(str(p), warnings.append) == {}
    assert "kept as %s.corrupt.1" % p in warnings[0], warnings
    assert (tmp_path / "s.json.corrupt").read_text() == "{garbage"
    assert (tmp_path / "s.json.corrupt.1").read_text() == "[1, 2]"


def test_an_unknown_format_is_kept_beside_it_and_not_applied(tmp_path):
    p = tmp_path / "s.json"
    text = json.dumps({"format": 2, "baud": 9600, "meters": {"0": {"address": 9}}})
    p.write_text(text)
    warnings = []
    assert load_state(str(p), warnings.append) == {}
    assert len(warnings) == 1 and "format 2" in warnings[0], warnings
    assert "kept as %s.unknown" % p in warnings[0], warnings
    assert (tmp_path / "s.json.unknown").read_text() == text and not p.exists()


def test_a_file_without_a_format_key_still_loads(tmp_path):
    p = tmp_path / "s.json"
    p.write_text('{"baud": 9600}')
    assert load_state(str(p)) == {"baud": 9600} and p.exists()


def test_the_slave_keeps_a_corrupt_state_file_and_writes_a_new_one(tcp_factory, tmp_path):
    p = tmp_path / "state.json"
    p.write_text("{not json")
    s = tcp_factory("--state", str(p))
    assert s.stop() == 0
    assert "kept as %s.corrupt" % p in s.log(), s.log()
    assert (tmp_path / "state.json.corrupt").read_text() == "{not json"
    assert json.loads(p.read_text())["format"] == 1


UPY_SCRIPT = r"""
import sys
sys.path.insert(0, ROOT + "/tests")
import upy_run  # the source tree on the path, ports/ as mbus_ports
from mbus_ports.state import load_state, save_state, check_path
p = TMP + "/s.json"
def put(path, text):
    f = open(path, "w")
    f.write(text)
    f.close()
def get(path, n=-1):
    f = open(path)
    t = f.read(n)   # n: a 1 MiB file need not fit the heap in one piece
    f.close()
    return t
put(p, "{bad")
w = []
assert load_state(p, w.append) == {} and len(w) == 1 and ".corrupt" in w[0], w
assert get(p + ".corrupt") == "{bad"
put(p, '{"format": 7}')
w = []
assert load_state(p, w.append) == {} and len(w) == 1 and ".unknown" in w[0], w
assert get(p + ".unknown") == '{"format": 7}'
f = open(p, "w")
f.write('{"format": 1}')
for i in range(257):
    f.write(" " * 4096)
f.close()
w = []
assert load_state(p, w.append) == {} and "larger than" in w[0], w
assert get(p + ".corrupt.1", 13) == '{"format": 1}'
save_state(p, {"format": 1, "baud": 9600})
assert load_state(p) == {"format": 1, "baud": 9600}
assert check_path(p) is None
w = []
assert load_state(FIFO, w.append) == {} and "not a regular file" in w[0], w
assert check_path(FIFO) == "not a regular file"
assert check_path(TMP) == "is a directory"
try:
    save_state(TMP, {"format": 1})
    assert False
except OSError as e:
    assert "not replaced" in str(e), e
print("upy-state-safety-ok")
"""


def test_the_same_code_on_micropython(tmp_path, fifo):
    upy = micropython_exe()
    script = tmp_path / "t.py"
    script.write_text("ROOT = %r\nTMP = %r\nFIFO = %r\n" % (ROOT, str(tmp_path), fifo)
                      + UPY_SCRIPT)
    out = subprocess.run([upy, str(script)], capture_output=True, text=True, timeout=20)
    assert "upy-state-safety-ok" in out.stdout, out.stdout + out.stderr
