"""Issue 16: bad input gives one line and exit status 2 in every tool, never a traceback.
The meter-file cases run through mbus-slave (--meter, --bus), tools/upy-sim and
mbus-deploy (--dry-run, and with no board connected) as real processes."""
import json
import os
import subprocess
import sys
import time

import pytest

from mbus_ports import cli

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GOOD = {"quantity": "volume", "unit": "m3", "value": 1}
RECORD = 'meter 1 ("m1"): record 2: '

# name -> (file text, words the one line has; it starts "PROG: error: FILE: " and, for a
# record's mistake, goes on with RECORD)
CASES = {
    "deep": ("[" * 100000 + "]" * 100000, "bad JSON"),
    "real32": ({"quantity": "volume", "unit": "m3", "type": "real32", "value": 1e39},
               RECORD + "1e+39 does not fit in real32"),
    "list": ({"quantity": "volume", "unit": "m3", "value": [1]}, RECORD + "value"),
    "lots": ({"quantity": "volume", "unit": "m3", "value": "lots"},
             RECORD + "value 'lots' is not a number"),
    "binary": ({"quantity": "custom", "unit": "x", "type": "binary", "value": "AB" * 17},
               RECORD + "17 bytes of binary data"),
    "null": ({"quantity": "volume", "unit": "m3", "value": None}, RECORD + "value"),
    "bool": ({"quantity": "volume", "unit": "m3", "value": True}, RECORD + "true"),
    "no-value": ({"quantity": "volume", "unit": "m3"}, RECORD + "needs a value"),
    "date": ({"quantity": "date", "value": "2023-02-30"}, RECORD + "no such date"),
    "dife": ({"dif": "84" + " 80" * 10 + " 00", "vif": "13", "value": 1},
             RECORD + "10 DIFEs"),
}


def meter_text(rec, bus=False):
    if isinstance(rec, str):
        return rec
    m = {"name": "m1", "records": [GOOD, rec]}
    return json.dumps({"meters": [m]} if bus else m)


def tools(path, bus_path):
    upy_sim = os.path.join(ROOT, "tools", "upy-sim")
    deploy = [sys.executable, "-m", "mbus_tools.deploy", "--board", "pico", "--meter", path]
    return {"mbus-slave --meter": [sys.executable, "-m", "mbus_ports", "--meter", path],
            "mbus-slave --bus": [sys.executable, "-m", "mbus_ports", "--bus", bus_path],
            "upy-sim": [sys.executable, upy_sim, "--meter", path],
            "mbus-deploy --dry-run": deploy + ["--dry-run"],
            "mbus-deploy (no board)": deploy + ["--port", "/dev/mbus-no-such-board"]}


def start_all(tmp_path):
    """Every case in every tool, started at once (they finish in well under a second)."""
    runs = []
    for name, (rec, words) in CASES.items():
        path = tmp_path / (name + ".json")
        path.write_text(meter_text(rec))
        bus_path = tmp_path / (name + "-bus.json")
        bus_path.write_text(meter_text(rec, bus=True))
        for tool, cmd in tools(str(path), str(bus_path)).items():
            p = subprocess.Popen(cmd, cwd=ROOT, stdin=subprocess.DEVNULL,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            shown = str(bus_path) if tool.endswith("--bus") else str(path)
            runs.append((name, tool, shown, words, p))
    return runs


def finish(p, deadline):
    """(stdout, stderr) of a run; one that accepted the file and serves is stopped
    (SIGTERM: upy-sim then stops its firmware too)."""
    try:
        return p.communicate(timeout=max(deadline - time.monotonic(), 0.1))
    except subprocess.TimeoutExpired:
        p.terminate()
        out, err = p.communicate(timeout=30)
        return out, "still running: accepted the file\n" + err


def test_bad_meter_files_are_one_line_and_status_2_in_every_tool(tmp_path):
    problems = []
    deadline = time.monotonic() + 15
    for name, tool, path, words, p in start_all(tmp_path):
        out, err = finish(p, deadline)
        prog = tool.split()[0]
        lines = err.strip().splitlines()
        where = RECORD if words.startswith(RECORD) else ""
        want = "%s: error: %s: %s" % (prog, path, where)
        if p.returncode != 2 or len(lines) != 1 or not lines[0].startswith(want) \
                or words[len(where):] not in lines[0]:
            problems.append("%s, %s: status %s, stderr %r (want %r)"
                            % (tool, name, p.returncode, err[-300:], want))
        if "mpremote" in out:  # mbus-deploy checks the file before it touches a board
            problems.append("%s, %s: went on to the board: %r" % (tool, name, out[-200:]))
    assert not problems, "\n".join(problems)


def test_deploy_missing_meter_file_is_status_2(tmp_path):
    path = str(tmp_path / "nope.json")
    p = subprocess.run([sys.executable, "-m", "mbus_tools.deploy", "--board", "pico",
                        "--meter", path, "--dry-run"], cwd=ROOT, capture_output=True,
                       text=True, timeout=60)
    assert p.returncode == 2, p.stderr
    assert p.stderr.startswith("mbus-deploy: error: %s: cannot read" % path), p.stderr


def long_frame(records):
    """RSP_UD, address 1, CI 78 (no header), with the records' bytes."""
    body = bytes((0x08, 0x01, 0x78)) + bytes.fromhex(records)
    return bytes((0x68, len(body), len(body), 0x68)) + body + bytes(
        (sum(body) & 0xFF, 0x16))


def _no_constants(name):
    raise AssertionError("bare %s in the JSON" % name)


def test_decode_real32_nan_and_infinity_as_strict_json():
    frame = long_frame("05 06 00 00 80 7F  05 06 00 00 80 FF  05 06 00 00 C0 7F")
    p = subprocess.run([sys.executable, "-m", "mbus_tools.decode", frame.hex()], cwd=ROOT,
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0, p.stderr
    d = json.loads(p.stdout, parse_constant=_no_constants)
    got = [(r["value"], r["raw"]) for r in d["records"]]
    assert got == [("Infinity", "Infinity"), ("-Infinity", "-Infinity"), ("NaN", "NaN")]
    for r in d["records"]:
        assert "not a finite number" in r["note"], r


@pytest.mark.parametrize("text", ["0x10", "0o7", "1_0", "\u0663", "\uff13", " 3", "+3", "",
                                  "251", "-1"])
def test_addr_takes_plain_ascii_decimal_only(text):
    # parse only (an accepted address would start a meter); main() turns UsageError into
    # one line and exit status 2
    with pytest.raises(cli.UsageError) as e:
        cli.build_parser().parse_args(["--addr", text])
    assert str(e.value).startswith("argument --addr"), e.value


@pytest.mark.parametrize("text", ["\uff11\uff12\uff13\uff14\uff15\uff16\uff17\uff18",
                                  "\u0661\u0662\u0663\u0664\u0665\u0666\u0667\u0668",
                                  "1234567", "0x123456", "+1234567"])
def test_ident_takes_eight_ascii_digits_only(text):
    with pytest.raises(cli.UsageError) as e:
        cli.build_parser().parse_args(["--id", text])
    assert str(e.value).startswith("argument --id"), e.value


def test_plain_addr_and_ident_still_work():
    args = cli.build_parser().parse_args(["--addr", "007", "--id", "00001234"])
    assert args.addr == 7 and args.ident == 1234
    assert cli.build_parser().parse_args(["--addr", "250"]).addr == 250
