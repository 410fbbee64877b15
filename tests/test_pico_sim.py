"""The firmware on an emulated Raspberry Pi Pico (tools/pico-sim: rp2040js running the
official MicroPython 1.26.1 RPI_PICO image, a real 32-bit build): deployed with
mbus-deploy over the emulated USB REPL (mpremote), read by pymeterbus over UART0.

One deploy from a blank board per session; every other test starts the emulator from a
copy of that flash image. The emulator runs at a fraction of a Pico's speed, so the
master's timeouts are generous and explicit (Master(timeout=, gap=)); nothing sleeps.
Skipped when node or rp2040js is missing (.ci/run installs rp2040js with npm)."""
import os
import shutil
import subprocess
import sys
import threading

import pytest

from mbus_tools.pico_sim import board as pico
from mbus_tools.pico_sim.board import Master, PicoSim, ident, long_frame

MISSING = pico.missing()   # the emulated board's tests skip (fixture `deployed`) with it

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WATER = os.path.join(ROOT, "examples", "water-meter.json")
BOOT = 180        # seconds of wall time for a start or reset up to "serving"
REPLY = 40.0      # the master's wait for the first byte of a reply
GAP = 4.0         # a silence this long ends a reply
SILENT = 8.0      # where no reply is expected


@pytest.fixture(scope="session")
def deployed(tmp_path_factory):
    """A blank board, then `mbus-deploy --board pico --meter water-meter.json` through the
    REPL pty, unchanged; the flash image it left, with what deploy and the board printed."""
    if MISSING:
        pytest.skip("pico-sim: %s" % MISSING)
    flash = str(tmp_path_factory.mktemp("pico") / "deployed.flash")
    sim = PicoSim(flash, fresh=True)
    try:
        out = subprocess.run([os.path.join(os.path.dirname(sys.executable), "mbus-deploy"),
                              "--board", "pico", "--port", sim.repl, "--meter", WATER],
                             capture_output=True, text=True, timeout=900)
        serving = sim.serving(BOOT) if out.returncode == 0 else None
    finally:
        sim.stop()
    return {"flash": flash, "deploy": out, "serving": serving, "lines": list(sim.lines)}


@pytest.fixture
def board(deployed, tmp_path):
    """The emulator started from a copy of the deployed flash, serving."""
    flash = str(tmp_path / "pico.flash")
    shutil.copyfile(deployed["flash"], flash)
    sim = PicoSim(flash, trace_uart=True)
    try:
        sim.serving(BOOT)
        yield sim
    finally:
        sim.stop()


@pytest.fixture
def master(board):
    m = Master(board.uart, timeout=REPLY, gap=GAP)
    yield m
    m.close()


def test_deploy_from_blank_board_then_read(deployed, board, master):
    out = deployed["deploy"]
    assert out.returncode == 0, out.stdout + out.stderr
    assert "# done: the board serves M-Bus" in out.stdout
    assert deployed["serving"].startswith(
        "board: mbus: serving 1 meter(s) (address 2 id 23456789) at 2400 baud")
    resets = [ln for ln in deployed["lines"] if ln.startswith("pico-sim: reset")]
    assert len(resets) >= 2, deployed["lines"]   # mbus-deploy's two hard resets
    t, raw = master.req_ud2(2)
    assert ident(t) == "23456789"
    assert t.body.bodyHeader.manufacturer_field.decodeManufacturer == "TST"
    vals = [r.value for r in t.records]
    assert len(vals) == 8, vals
    assert 123.456 <= float(vals[0]) < 200          # the counting volume, m3
    # pymeterbus gives the operating time (1234 d) in seconds
    assert float(vals[2]) == 100.0 and vals[4] == 1234 * 86400 and vals[7] == 4711
    assert in_window(board) == 2400


def in_window(sim):
    """The next reply's delay on the wire (simulated time, from the end of the request's
    last character to the reply's first) is inside the EN 13757-2 window: 11 bit times to
    330 bit times + 50 ms. Its baud rate."""
    words = sim.wait_line("uart: reply-start ", BOOT).split()
    baud, delay_ns = int(words[4]), int(words[6])
    assert 11 * 1e9 / baud <= delay_ns <= 330 * 1e9 / baud + 50e6, (baud, delay_ns)
    return baud


def test_secondary_selection_then_read_at_253(board, master):
    assert not master.select("87654321FFFFFFFF", timeout=SILENT)   # not this meter: silent
    assert master.request(pico.short(0x5B, 253), timeout=SILENT) == b""   # none selected
    assert master.select("23456789FFFFFFFF")
    t, _ = master.req_ud2(253)
    assert ident(t) == "23456789"


def test_primary_address_survives_machine_reset(board, master):
    # SND_UD, CI 51, DIF 01 VIF 7A: new primary address 7
    assert master.request(long_frame(0x53, 2, 0x51, bytes((0x01, 0x7A, 7)))) == b"\xe5"
    board.wait_line("board: mbus: saved settings", BOOT)
    out = board.mpremote("reset", timeout=120)             # machine.reset() over the REPL
    assert out.returncode == 0, out.stderr
    board.wait_line("pico-sim: reset", BOOT)
    assert "(address 7 id 23456789)" in board.serving(BOOT)
    t, _ = master.req_ud2(7)
    assert ident(t) == "23456789"
    assert master.request(pico.short(0x5B, 2), timeout=SILENT) == b""


def test_baud_switch_to_9600_and_back(board, master):
    assert master.request(long_frame(0x53, 2, 0xBD)) == b"\xe5"    # CI BD: 9600 baud
    assert in_window(board) == 2400                 # acknowledged at the old rate
    board.wait_line("uart: baud 9600", BOOT)        # then the UART was reprogrammed
    # at once at the new rate: the board saves the new rate to flash (about 0.1 s of
    # simulated time) only once the line is quiet, never between a request and its reply
    master.set_baud(9600)
    t, _ = master.req_ud2(2)
    assert ident(t) == "23456789"
    assert in_window(board) == 9600
    board.wait_line("board: mbus: saved settings", BOOT)
    assert master.request(long_frame(0x53, 2, 0xBB)) == b"\xe5"    # CI BB: 2400 baud
    assert in_window(board) == 9600
    board.wait_line("uart: baud 2400", BOOT)
    board.wait_line("board: mbus: saved settings", BOOT)
    master.set_baud(2400)
    t, _ = master.req_ud2(2, fcb=True)
    assert ident(t) == "23456789"
    assert in_window(board) == 2400


# A test build of the firmware loop: the real run() serving a meter of constant records
# (counters and wandering values compute floats, which are heap objects: they allocate by
# design) with ID 87654321, whose BCD form 0x87654321 is above 2**30 (no small int on a
# 32-bit build); the heap is locked after WARM replies, MORE replies are served under the
# lock, then one report line on the REPL.
HEAP_METER = {
    "name": "heap", "address": 2, "id": 87654321, "manufacturer": "TST", "version": 2,
    "medium": "water", "records": [
        {"quantity": "volume", "unit": "m3", "type": "bcd8", "value": 100.0,
         "resolution": 0.001},
        {"quantity": "date", "storage": 1, "value": "2023-12-31"},
        {"quantity": "operating time", "unit": "d", "type": "int16", "value": 1234},
        {"quantity": "custom", "unit": "pulses", "type": "int32", "value": 4711}]}
HEAP_TEST = '''
import gc, micropython
import mbus_boards.pico as board
from mbus_ports import upy_firmware as firmware
board.meter_path = "/heap.mbus.json"
WARM = 4
MORE = 4
st = {"locked": 0, "base": 0, "errors": 0}

def turn(fw):
    line = fw.line
    if not st["locked"]:
        if line.replies >= WARM:
            gc.collect()
            st["base"] = line.replies
            st["errors"] = firmware.MEM["errors"]
            st["locked"] = 1
            micropython.heap_lock()
        return False
    if line.replies - st["base"] >= MORE:
        micropython.heap_unlock()
        return True
    return False

fw = firmware.run(board, turn=turn)   # (turn() unlocked the heap: the lock nests)
micropython.heap_lock()
try:
    bytearray(16)
    works = 0
except MemoryError:
    works = 1
micropython.heap_unlock()
print("HEAPTEST lock-works %d locked-replies %d errors %d"
      % (works, fw.line.replies - st["base"], firmware.MEM["errors"] - st["errors"]))
'''


def test_id_87654321_served_with_the_heap_locked(board, master, tmp_path):
    import json
    from mbus_tools.deploy import compile_meter
    meter = tmp_path / "heap.json"
    meter.write_text(json.dumps(HEAP_METER))
    compiled = tmp_path / "heap.mbus.json"
    compiled.write_text(compile_meter(str(meter)))
    script = tmp_path / "heap_test.py"
    script.write_text(HEAP_TEST)
    tool = os.path.join(os.path.dirname(sys.executable), "mpremote")
    proc = subprocess.Popen([tool, "connect", board.repl, "cp", str(compiled),
                             ":heap.mbus.json", "+", "run", str(script)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    out = []
    reader = threading.Thread(target=lambda: out.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        board.wait_line("board: mbus: serving 1 meter(s) (address 2 id 87654321)", BOOT)
        for locked in (False, True):   # the same requests before and under the lock
            t, _ = master.req_ud2(2)
            assert ident(t) == "87654321"
            t, _ = master.req_ud2(2, fcb=True)
            assert [r.value for r in t.records][2:] == [1234 * 86400, 4711]
            assert master.select("87654321FFFFFFFF"), "no E5 (heap locked: %s)" % locked
            t, _ = master.req_ud2(253, fcb=locked)
            assert ident(t) == "87654321"
        proc.wait(timeout=BOOT)
    except AssertionError as e:   # with what the board said on the REPL
        proc.kill()
        reader.join(timeout=10)
        raise AssertionError("%s\nREPL:\n%s" % (e, "".join(out)))
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        reader.join(timeout=10)
    report = [ln for ln in out if ln.startswith("HEAPTEST")]
    assert report == ["HEAPTEST lock-works 1 locked-replies 4 errors 0\n"], "".join(out)


# Stalls the loop (a value callback that never returns) on the first readout after any
# start but one that followed a watchdog timeout (WATCHDOG REASON bit 0, 0x40058008).
STALL_HOOK = '''
import machine
from mbus_core.live_record import Record


def stall():
    print("mbus: stall hook: stalling the loop")
    while True:
        pass


def setup(meters, board):
    if machine.mem32[0x40058008] & 1:
        print("mbus: stall hook: started after a watchdog timeout")
        return
    meters[0].records.append(Record(bytes((0x04, 0xFD, 0x3A)), 0x4, stall))
'''


def test_watchdog_resets_a_stalled_loop(board, master, tmp_path):
    hook = tmp_path / "sensors.py"
    hook.write_text(STALL_HOOK)
    cfg = tmp_path / "board.json"
    cfg.write_text('{"wdt_ms": 2000}')
    out = board.mpremote("cp", str(hook), ":sensors.py", "+", "cp", str(cfg), ":board.json",
                         "+", "reset", timeout=300)
    assert out.returncode == 0, out.stderr
    board.wait_line("pico-sim: reset (machine.reset()", BOOT)
    board.serving(BOOT)
    master.send(pico.short(0x5B, 2))
    board.wait_line("board: mbus: stall hook: stalling the loop", BOOT)
    board.wait_line("pico-sim: reset (watchdog timeout)", BOOT)
    board.wait_line("board: mbus: stall hook: started after a watchdog timeout", BOOT)
    board.serving(BOOT)
    t, _ = master.req_ud2(2)
    assert ident(t) == "23456789"


def test_bench_figures_on_the_deployed_board(deployed):
    """mbus-bench's Pico part (tools/bench_pico.py), small: the demo meter's heap, the
    .mpy sizes on the board, the core's cycles, the reply delay at 2400 baud."""
    from mbus_tools import bench_pico
    res = bench_pico.measure(requests=2, core=20, deployed=deployed["flash"], runs=("demo",),
                             baud9600=False)
    mem = res["memory"]["demo"]
    assert "error" not in mem, mem
    assert 20000 < mem["start"] <= mem["peak"] < mem["gc_total"], mem
    assert 0 < mem["largest_free"] < mem["gc_total"] - mem["start"], mem
    assert res["mpy"]["files"] >= 15 and res["mpy"]["core"] < res["mpy"]["total"]
    for nrec in (1, 10):
        c = res["core_%d" % nrec]
        assert 0 < c["repeat_cycles"] and 0 < c["fresh_cycles"], c
    d = res["delay_2400"]
    assert d["n"] == 2 and d["in_window"] == 2, d
    text = "\n".join(bench_pico.report_lines(res))
    assert "heap, demo meter: in use after start / peak while serving 2 requests" in text
    assert "cycles (" in text and "reply delay on the wire at 2400 baud" in text


@pytest.mark.parametrize("args, text", [
    (["--flash", "/nonexistent-dir/pico.flash"], "--flash: no such folder /nonexistent-dir"),
    (["--flash", "/tmp"], "--flash: /tmp is a folder"),
    (["--speed", "2"], "unrecognized arguments: --speed 2")])
def test_bad_arguments_are_one_line(args, text):
    out = subprocess.run([sys.executable, pico.LAUNCHER] + args, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == "", out
    assert out.stderr.splitlines() == ["pico-sim: error: %s (try --help)" % text], out.stderr
