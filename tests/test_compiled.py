"""Compiled meters on a board: which meter files the firmware accepts and what it serves
from each, on the MicroPython unix port with the pico board file and a stand-in `machine`
(as tests/test_upy_boards.py does), laid out as mbus-deploy lays a board out: without the
codec unless --codec. Also: the host compiler names a bad meter like mbus-slave does."""
import json
import os
import shutil
import subprocess
import zlib

import pytest

from mbus_core import compiled as C
from mbus_core.codec.compile import compile_config
from mbus_core.codec.model import ConfigError
from mbus_tools import bench_upy, deploy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WATER = os.path.join(ROOT, "examples", "water-meter.json")

# bench_upy's stand-in machine module, its UART here answering a list of requests and
# keeping what the firmware sends
MACHINE = bench_upy.FW_MACHINE + '''
SENT = []


class UART(UART):
    INPUT = []

    def readinto(self, buf):
        if not UART.INPUT:
            return None
        d = UART.INPUT.pop(0)
        buf[:len(d)] = d
        return len(d)

    def write(self, data):
        SENT.append(bytes(data).hex())
        return len(data)
'''

DRIVER = '''
import json
import sys
import machine
import mbus_boards.pico as board
from mbus_ports import upy_firmware as fw
board.meter_path = "meter.json"
board.state_path = "state.json"
machine.UART.INPUT = [bytes.fromhex("105B%02X%02X16" % (a, (0x5B + a) & 0xFF))
                      for a in (2, 3)]
fw.run(board, steps=3)
print("MODULES " + json.dumps(sorted(sys.modules)))
print("SENT " + json.dumps(machine.SENT))
'''


def micropython():
    found = deploy.find_tool("micropython")
    if not found:
        pytest.fail("micropython is not installed: pip install -e '.[test]'")
    return found


def lay_out(board_dir, codec=False):
    lib = board_dir / "lib"
    for src, dest in deploy.shipped_files("pico", codec=codec):
        (lib / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(ROOT, src), str(lib / dest))
    (board_dir / "machine.py").write_text(MACHINE)
    (board_dir / "driver.py").write_text(DRIVER)


def boot(board_dir):
    """One start of the firmware: (log lines, modules loaded at the end, replies)."""
    env = dict(os.environ, MICROPYPATH=":" + str(board_dir / "lib"))
    out = subprocess.run([micropython(), "driver.py"], cwd=str(board_dir), env=env,
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and "Traceback" not in out.stdout, out.stdout + out.stderr
    lines = out.stdout.splitlines()
    modules = json.loads([ln for ln in lines if ln.startswith("MODULES ")][0][8:])
    sent = [bytes.fromhex(h) for h in
            json.loads([ln for ln in lines if ln.startswith("SENT ")][0][5:])]
    return [ln for ln in lines if ln.startswith("mbus: ")], modules, sent


def answered(sent):
    """{primary address: ID bytes} of the RSP_UDs sent."""
    return dict((t[5], t[7:11]) for t in sent if t[0] == 0x68)


WATER_ID = bytes.fromhex("89674523")
DEMO_ID = bytes.fromhex("78563412")
CODEC = [m for m in ("mbus_core.codec", "mbus_core.codec.model", "mbus_core.codec.records",
                     "mbus_core.codec.vif", "mbus_core.codec.compile", "mbus_ports.config")]


def test_compiled_meter_without_codec(tmp_path):
    lay_out(tmp_path)
    assert not (tmp_path / "lib" / "mbus_core" / "codec").exists()
    (tmp_path / "meter.mbus.json").write_text(deploy.compile_meter(WATER))
    log, modules, sent = boot(tmp_path)
    assert answered(sent) == {2: WATER_ID}
    assert [ln for ln in log if "meter" in ln and not ln.startswith(("mbus: serving ",
                                                                     "mbus: board "))] == [], log
    for name in CODEC + ["mbus_core.compiled", "mbus_ports.upy_start"]:
        assert name not in modules, name   # the start's modules are dropped again
    assert "mbus_core.live_record" in modules and "mbus_core.generators" in modules


def test_replayed_meter_without_codec(tmp_path):
    # a captured telegram (libmbus's EDC.hex, BSD-3: tests/fixtures/libmbus-frames) served
    # verbatim by the board; the replay's builder is loaded for it and dropped again
    captured = bytes.fromhex(open(os.path.join(
        ROOT, "tests", "fixtures", "libmbus-frames", "EDC.hex")).read())
    meter = tmp_path / "edc.json"
    meter.write_text(json.dumps({"address": 2, "replay": captured.hex()}))
    board = tmp_path / "board"
    lay_out(board)
    (board / "meter.mbus.json").write_text(deploy.compile_meter(str(meter)))
    log, modules, sent = boot(board)
    replies = [t for t in sent if t[0] == 0x68]
    assert len(replies) == 1 and replies[0][5] == 2
    assert replies[0][6:-2] == captured[6:-2]   # CI onwards, byte for byte
    for name in ("mbus_core.replay", "mbus_core.compiled", "mbus_ports.upy_start"):
        assert name not in modules, name


def test_meter_description_without_codec_is_one_line_and_the_demo_meter(tmp_path):
    lay_out(tmp_path)
    shutil.copyfile(WATER, str(tmp_path / "meter.json"))
    log, modules, sent = boot(tmp_path)
    assert answered(sent) == {3: DEMO_ID}
    said = [ln for ln in log if "meter.json" in ln and not ln.startswith("mbus: board ")]
    assert len(said) == 1 and "this board has no codec to read a meter description" in said[0]
    assert said[0].endswith("mbus-deploy --meter FILE); serving the demo meter"), said


def test_hand_edited_meter_file_without_codec_keeps_the_compiled_meter(tmp_path):
    lay_out(tmp_path)
    (tmp_path / "meter.mbus.json").write_text(deploy.compile_meter(WATER))
    edited = json.load(open(WATER))
    edited["address"] = 9
    (tmp_path / "meter.json").write_text(json.dumps(edited))
    log, modules, sent = boot(tmp_path)
    assert answered(sent) == {2: WATER_ID}
    said = [ln for ln in log if "codec" in ln]
    assert len(said) == 1 and said[0].endswith("serving meter.mbus.json"), log


def test_deployed_pair_is_read_without_the_codec(tmp_path):
    """mbus-deploy --codec puts both files there: the compiled one is what the meter file
    compiles to (same stamp), so no start needs the codec until /meter.json is edited."""
    lay_out(tmp_path, codec=True)
    shutil.copyfile(WATER, str(tmp_path / "meter.json"))
    (tmp_path / "meter.mbus.json").write_text(deploy.compile_meter(WATER))
    shutil.rmtree(str(tmp_path / "lib" / "mbus_core" / "codec"))  # proof: never needed
    log, modules, sent = boot(tmp_path)
    assert answered(sent) == {2: WATER_ID} and not [ln for ln in log if "codec" in ln], log


def test_meter_description_with_codec_is_compiled_on_the_board(tmp_path):
    lay_out(tmp_path, codec=True)
    edited = json.load(open(WATER))
    edited["address"] = 3
    (tmp_path / "meter.json").write_text(json.dumps(edited))
    log, modules, sent = boot(tmp_path)
    assert answered(sent) == {3: WATER_ID}
    assert "mbus: compiled meter.json to meter.mbus.json" in log, log
    for name in CODEC:
        assert name not in modules, name
    doc = json.loads((tmp_path / "meter.mbus.json").read_text())
    data = (tmp_path / "meter.json").read_bytes()
    assert doc["source"] == [len(data), zlib.adler32(data)]
    assert C.meters_from_compiled(doc)[0].address == 3
    # the next start takes the compiled file: the codec is not needed any more
    shutil.rmtree(str(tmp_path / "lib" / "mbus_core" / "codec"))
    log, modules, sent = boot(tmp_path)
    assert answered(sent) == {3: WATER_ID}
    assert not [ln for ln in log if "compiled" in ln or "codec" in ln], log


def test_broken_meter_description_with_codec_is_one_line(tmp_path):
    lay_out(tmp_path, codec=True)
    (tmp_path / "meter.json").write_text('{"address": 300}')
    log, modules, sent = boot(tmp_path)
    assert answered(sent) == {3: DEMO_ID}
    said = [ln for ln in log if "meter.json" in ln and not ln.startswith("mbus: board ")]
    assert len(said) == 1 and "address must be 0..250" in said[0], log
    assert said[0].endswith("serving the demo meter")
    assert not (tmp_path / "meter.mbus.json").exists()


@pytest.mark.parametrize("text,want", [
    ("{not json", "meter.mbus.json: bad JSON"),
    ('{"mbus_compiled": 2, "meters": []}', "compiled meter format 2, this firmware reads 1"),
    ('{"mbus_compiled": 1, "meters": [{"address": 2, "records": ["0C1X"]}]}',
     "meter 1: record 1: "),
])
def test_broken_compiled_file_is_one_line_and_the_demo_meter(tmp_path, text, want):
    lay_out(tmp_path)
    (tmp_path / "meter.mbus.json").write_text(text)
    log, modules, sent = boot(tmp_path)
    assert answered(sent) == {3: DEMO_ID}
    said = [ln for ln in log if "meter.mbus.json" in ln]
    assert len(said) == 1 and want in said[0], log


def test_no_meter_file_is_the_demo_meter(tmp_path):
    lay_out(tmp_path)
    log, modules, sent = boot(tmp_path)
    assert answered(sent) == {3: DEMO_ID}
    assert "mbus: no meter file meter.mbus.json: serving the demo meter" in log


def test_the_firmware_demo_meter_is_the_compiled_demo_description():
    from mbus_ports import upy_start
    demo = {"name": "demo", "address": 3, "id": 12345678, "manufacturer": "TST",
            "version": 1, "medium": "water"}
    assert upy_start.DEMO == compile_config(demo)


def test_compile_names_meter_and_record_of_a_bad_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"meters": [{"address": 1}, {"name": "x", "address": 2, "records": '
                   '[{"quantity": "volume", "unit": "parsec", "value": 1}]}]}')
    with pytest.raises(deploy.BadInput) as e:
        deploy.compile_meter(str(bad))
    assert str(e.value).startswith(str(bad) + ': meter 2 ("x"): record 1: unknown unit')
    with pytest.raises(ConfigError):
        compile_config({"address": 251})


def test_stamp_matches_zlib():
    with open(WATER, "rb") as f:
        data = f.read()
    s = C.Stamp()
    s.add(data)
    assert s.value() == [len(data), zlib.adler32(data)]


def test_firmware_heap_figures():
    """tools/bench_upy.py's firmware figures (what mbus-bench reports): the pico firmware
    as deployed serves every request; the collector's threshold keeps the peak within
    GC_SLACK (and one request's garbage) of the heap in use after start. On 32 bits (the
    WebAssembly port, where installed) every figure is smaller. The firmware's own heap is
    the measured one less the stand-in machine module (built in on a board), whose share is
    reported too. Counts of a deterministic run, no timing."""
    from mbus_ports.upy_firmware import GC_SLACK
    cross = deploy.find_tool("mpy-cross")
    got, notes = bench_upy.firmware_figures(micropython(), ROOT, WATER, cross)
    u = got["unix64"]
    assert u, notes
    assert u["requests"] == u["replies"] == bench_upy.FW_REQUESTS
    assert 0 < u["start"] <= u["peak"] <= u["start"] + GC_SLACK + 4096
    assert u["after"] <= u["start"] + 1024
    assert 0 < u["stand_in"] < 4096   # three small classes
    assert u["firmware"] == u["start"] - u["stand_in"]
    assert u["firmware_peak"] == u["peak"] - u["stand_in"]
    w = got["wasm32"]
    if w is None:
        pytest.skip("no MicroPython WebAssembly port: %s" % notes)
    assert w["requests"] == w["replies"] == bench_upy.FW_REQUESTS
    assert w["start"] < u["start"] and w["peak"] < u["peak"]
    assert w["peak"] <= w["start"] + GC_SLACK + 4096
    # measured where the WebAssembly port's collector frees: smaller than on 64 bits
    assert 0 < w["stand_in"] < u["stand_in"]
    assert w["firmware"] == w["start"] - w["stand_in"] < u["firmware"]
