"""The mbus-decode CLI, run as a subprocess."""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FRAMES = os.path.join(ROOT, "tests", "fixtures", "libmbus-frames")
TELEGRAM = ("68 19 19 68 08 0A 72 11 22 33 44 94 52 05 07 2A 00 00 00 0C 13 25 21 04 00 "
            "02 6C 1F 31 71 16")


def run(args, stdin=""):
    env = dict(os.environ)
    env["PYTHONPATH"] = ROOT + os.pathsep + env.get("PYTHONPATH", "")
    try:
        import mbus_tools.decode  # noqa: F401  installed (or importable) package
        cmd = [sys.executable, "-m", "mbus_tools.decode"]
    except ImportError:
        cmd = [sys.executable, os.path.join(ROOT, "tools", "decode.py")]
    p = subprocess.run(cmd + args, input=stdin.encode(), capture_output=True, env=env,
                       cwd=ROOT, timeout=60)
    return p.returncode, p.stdout.decode("utf-8"), p.stderr.decode("utf-8")


def test_decode_argument():
    rc, out, err = run([TELEGRAM])
    assert rc == 0, err
    d = json.loads(out)
    assert d["type"] == "long" and d["C"] == "08" and d["A"] == 10 and d["CI"] == "72"
    assert d["header"]["id"] == "44332211"
    assert d["header"]["manufacturer"] == "TTT"
    assert d["header"]["medium_name"] == "Water"
    r0, r1 = d["records"]
    assert r0["quantity"] == "Volume" and r0["unit"] == "m^3" and r0["value"] == 42.125
    assert r0["dif"] == "0C" and r0["vif"] == "13"
    assert r0["function"] == "Instantaneous value" and r0["storage"] == 0
    assert r0["tariff"] == 0 and r0["subunit"] == 0
    assert r1["value"] == "2024-01-31"


def test_decode_file_and_stdin():
    path = os.path.join(FRAMES, "EDC.hex")
    rc, out, err = run(["-f", path])
    assert rc == 0, err
    d = json.loads(out)
    assert d["header"]["manufacturer"] == "EDC"
    assert d["records"][0]["unit"] == "Wh" and d["records"][0]["value"] == 35000
    assert d["records"][4]["unit"] == "\u00b0C"
    with open(path) as f:
        rc, out2, err = run([], stdin=f.read())
    assert rc == 0 and json.loads(out2) == d


def test_multi_frame_file_gives_a_list():
    with open(os.path.join(FRAMES, "minol_minocal_c2.hex")) as f:
        text = f.read()
    rc, out, err = run([], stdin=text + "\n" + TELEGRAM.replace(" ", "") + "\n")
    assert rc == 0, err
    d = json.loads(out)
    assert isinstance(d, list) and len(d) == 2
    assert d[1]["header"]["id"] == "44332211"


def test_short_and_ack_frames():
    rc, out, err = run(["10 5B 01 5C 16"])
    assert rc == 0 and json.loads(out) == {"type": "short", "C": "5B", "A": 1,
                                           "function": "REQ_UD2"}
    rc, out, err = run(["E5"])
    assert rc == 0 and json.loads(out) == {"type": "ack"}


def test_error_frame_is_flagged():
    rc, out, err = run(["68 04 04 68 08 01 70 08 81 16"])
    assert rc == 0
    assert json.loads(out)["error_name"] == "Application busy"


def test_bad_input_one_line_exit_1():
    for bad in ("68 19", "68 zz", TELEGRAM[:-5] + "72 16", "",
                "68 1A 1A 68 08 02 72 78 56 34 12 24 40 01 07 55 00 00 00 03 13 15 31 00 "
                "DA 02 3B 13 01 8B 63 16"):
        rc, out, err = run([bad] if bad else [], stdin="")
        assert rc == 1, (bad, rc, out, err)
        assert out == ""
        assert err.count("\n") == 1 and "Traceback" not in err, err
    rc, out, err = run(["-f", "/nonexistent/file.hex"])
    assert rc == 1 and "Traceback" not in err


def test_bad_arguments_exit_2():
    rc, out, err = run(["--bogus"])
    assert rc == 2 and "Traceback" not in err
    rc, out, err = run(["-f", "x.hex", "68"])
    assert rc == 2
