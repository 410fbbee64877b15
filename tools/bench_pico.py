"""mbus-bench's figures on an emulated Raspberry Pi Pico (tools/pico-sim: rp2040js running
the official MicroPython 1.26.1 RPI_PICO image, a real 32-bit build):

- the firmware as `mbus-deploy --board pico` lays it out (`.mpy`, no codec): heap in use
  after start, peak while serving, largest free block (`micropython.mem_info()`), for the
  demo, water and heat meters and a bus of 250 meters, each serving through UART0;
- the `.mpy` sizes on the board's filesystem;
- the core's cost per REQ_UD2 (10 records, fresh telegram and repeat) in emulated CPU
  cycles: the emulator runs 8 ns of simulated time per cycle, so the simulated
  microseconds the board measures, times 125, are cycles (and mean microseconds at 125 MHz);
- the reply delay as UART0 puts it on the wire, in simulated time (from the end of the
  request's last character to the start of the reply's first), against the EN 13757-2
  window at 2400 and 9600 baud.

Takes a few minutes (the emulator is slow; the deploy copies at about 3 KiB/s).
    python -m mbus_tools.bench_pico [REQUESTS]      (prints the figures as JSON)"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

from mbus_tools.pico_sim import board as pico
from mbus_tools.pico_sim.board import Master, PicoSim, long_frame, short

ROOT = pico.ROOT
EXAMPLES = os.path.join(ROOT, "examples")
BOOT = 300           # seconds of wall time for a start, a deploy step, a script
BUS_METERS = 250
MHZ = 125

# Runs the firmware (the real run()) on a meter file until it has served `n` replies, with
# the state file elsewhere (the deployed one stays as it is); then the memory figures.
MEM_SCRIPT = """
import gc, micropython
import mbus_boards.pico as board
from mbus_ports import upy_firmware as firmware
board.meter_path = %r
board.state_path = "/bench_state.json"
N = %d
def turn(fw):
    return fw.line.replies >= N
fw = firmware.run(board, turn=turn)
print("PICOMEM start %%d peak %%d requests %%d" %% (firmware.MEM["start"], firmware.MEM["peak"],
                                                fw.line.requests))
gc.collect()
micropython.mem_info()
import os
try:
    os.remove("/bench_state.json")
except OSError:
    pass
"""

# The core alone: a 10-record meter of constant records (tools/bench_upy.py's), n requests
# with a toggled FCB (a fresh telegram each) and n repeats, timed in simulated µs.
CORE_SCRIPT = """
import time, machine
from mbus_core.bus import Bus
from mbus_core.meter import Meter
wdt = machine.WDT(timeout=8000)
KINDS = ((0x04, 0x06), (0x04, 0x13), (0x04, 0x2B), (0x04, 0x3B), (0x02, 0x5B), (0x02, 0x5F),
         (0x04, 0x6D))
def records(n):
    out = []
    for i in range(n):
        dif, vif = KINDS[i %% len(KINDS)]
        size = 4 if dif == 0x04 else 2
        v = 1000 + 37 * i
        body = [dif | (0x40 if i >= len(KINDS) else 0), vif]
        for k in range(size):
            body.append((v >> (8 * k)) & 0xFF)
        out.append(bytes(body))
    return out
def short(c, a):
    return bytes((0x10, c, a, (c + a) & 0xFF, 0x16))
def cost(bus, a, b, n):
    for _ in range(10):
        bus.feed(a, 0, 5)
        bus.feed(b, 0, 5)
    wdt.feed()
    t0 = time.ticks_us()
    for _ in range(n // 2):
        bus.feed(a, 0, 5)
        bus.feed(b, 0, 5)
    us = time.ticks_diff(time.ticks_us(), t0) / (2 * (n // 2))
    wdt.feed()
    return us
for nrec in (1, 10):
    bus = Bus([Meter(address=1, id=10000001, manufacturer="TST", medium=4,
                     records=records(nrec))])
    fresh = cost(bus, short(0x5B, 1), short(0x7B, 1), %d)
    repeat = cost(bus, short(0x7B, 1), short(0x7B, 1), %d)
    print("PICOCORE %%d %%.2f %%.2f" %% (nrec, fresh, repeat))
"""

SIZES_SCRIPT = """
import os
for d in ("/lib/mbus_core", "/lib/mbus_ports", "/lib/mbus_boards"):
    for name in os.listdir(d):
        print("PICOSIZE %s/%s %d" % (d, name, os.stat(d + "/" + name)[6]))
"""


class Fail(Exception):
    pass


def bus_file(path, n=BUS_METERS):
    """A meter file of n small meters (addresses 1..n, two records each)."""
    meters = [{"name": "m%d" % a, "address": a, "id": 30000000 + a, "manufacturer": "TST",
               "medium": "water", "records": [
                   {"quantity": "volume", "unit": "m3", "type": "bcd8", "value": 10.0 + a,
                    "resolution": 0.001},
                   {"quantity": "error flags", "type": "int8", "value": 0}]}
              for a in range(1, n + 1)]
    with open(path, "w") as f:
        json.dump({"meters": meters}, f)


def _check(out, what):
    if out.returncode != 0:
        text = (out.stderr.strip() or out.stdout.strip()).splitlines()
        raise Fail("%s: %s" % (what, text[-1] if text else "exit status %d" % out.returncode))
    return out.stdout


def _script(tmp, name, text):
    path = os.path.join(tmp, name)
    with open(path, "w") as f:
        f.write(text)
    return path


def _run_serving(sim, master, tmp, meter_path, address, n):
    """MEM_SCRIPT on `meter_path` (on the board) while the master reads `address` n times;
    the board's figures."""
    script = _script(tmp, "mem.py", MEM_SCRIPT % (meter_path, n))
    proc = subprocess.Popen([_mpremote(), "connect", sim.repl, "run", script],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_serving(sim, proc)
        for i in range(n):
            master.req_ud2(address, fcb=bool(i & 1))
        out, _ = proc.communicate(timeout=BOOT)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    m = re.search(r"PICOMEM start (\d+) peak (\d+) requests (\d+)", out)
    free = re.search(r"max free sz: (\d+)", out)
    total = re.search(r"GC: total: (\d+)", out)
    if not (m and free and total):
        raise Fail("no memory report from the board: %s" % out.strip()[-300:])
    return {"start": int(m.group(1)), "peak": int(m.group(2)), "requests": int(m.group(3)),
            "largest_free": 16 * int(free.group(1)), "gc_total": int(total.group(1))}


def _wait_serving(sim, proc):
    """Until the firmware serves; Fail with the board's last words when the script ended
    before (a meter file that does not fit in the heap)."""
    for _ in range(BOOT):
        try:
            return sim.serving(1)
        except TimeoutError:
            if proc.poll() is not None:
                out = proc.stdout.read().strip().splitlines()
                raise Fail("the firmware did not start: %s" % (out[-1] if out else "?"))
    raise Fail("the firmware did not start within %d s" % BOOT)


def _mpremote():
    tool = os.path.join(os.path.dirname(sys.executable), "mpremote")
    return tool if os.access(tool, os.X_OK) else "mpremote"


def _delays(sim):
    """(baud, after-rx ns) of every reply the trace reported so far."""
    out = []
    for ln in sim.drain():
        if ln.startswith("uart: reply-start "):
            w = ln.split()
            out.append((int(w[4]), int(w[6])))
    return out


def _delay_figures(pairs, baud):
    ms = sorted(ns / 1e6 for b, ns in pairs if b == baud)
    lo = 11 * 1000 / baud
    hi = 330 * 1000 / baud + 50
    if not ms:
        return None
    return {"n": len(ms), "min_ms": ms[0], "p50_ms": ms[len(ms) // 2], "max_ms": ms[-1],
            "window_ms": [lo, hi], "in_window": sum(1 for v in ms if lo <= v <= hi)}


RUNS = ("demo", "water", "heat", "bus250")


def measure(requests=6, core=200, deployed=None, runs=RUNS, baud9600=True):
    """Every figure (a dict); Fail with one line when something does not work.
    deployed: a flash image where `mbus-deploy --board pico` put the water meter (a copy
    is used), else a blank board is deployed first; runs: which meters' memory figures."""
    from mbus_tools.deploy import compile_meter
    tmp = tempfile.mkdtemp(prefix="mbus-bench-pico-")
    res = {"requests": requests, "mhz": MHZ, "memory": {}}
    sim = master = None
    try:
        flash = os.path.join(tmp, "pico.flash")
        if deployed:
            shutil.copyfile(deployed, flash)
        sim = PicoSim(flash, fresh=not deployed, trace_uart=True, start_timeout=BOOT)
        if not deployed:
            _check(subprocess.run(
                [os.path.join(os.path.dirname(sys.executable), "mbus-deploy"), "--board",
                 "pico", "--port", sim.repl, "--meter",
                 os.path.join(EXAMPLES, "water-meter.json")],
                capture_output=True, text=True, timeout=1200), "mbus-deploy")
        sim.serving(BOOT)
        sizes = re.findall(r"PICOSIZE (\S+) (\d+)", _check(
            sim.mpremote("run", _script(tmp, "sizes.py", SIZES_SCRIPT), timeout=BOOT),
            "sizes"))
        res["mpy"] = {"files": len(sizes), "total": sum(int(s) for _, s in sizes),
                      "core": sum(int(s) for p, s in sizes if "/mbus_core/" in p)}
        out = _check(sim.mpremote("run", _script(tmp, "core.py", CORE_SCRIPT % (core, core)),
                                  timeout=BOOT), "core cost")
        for nrec, fresh, repeat in re.findall(r"PICOCORE (\d+) (\S+) (\S+)", out):
            res["core_%s" % nrec] = {"fresh_us": float(fresh), "repeat_us": float(repeat),
                                     "fresh_cycles": round(float(fresh) * MHZ),
                                     "repeat_cycles": round(float(repeat) * MHZ)}
        master = Master(sim.uart, timeout=60.0, gap=5.0)
        bus = os.path.join(tmp, "bus.json")
        bus_file(bus)
        pairs = []
        table = (("demo", None, 3), ("water", "water-meter.json", 2),
                 ("heat", "heat-meter.json", None), ("bus250", bus, 125))
        for name, src, address in table:
            if name not in runs:
                continue
            if src is None:
                path = "/none.json"                  # no meter file: the demo meter
            else:
                local = os.path.join(tmp, name + ".mbus.json")
                text = compile_meter(os.path.join(EXAMPLES, src))
                with open(local, "w") as f:
                    f.write(text)
                if address is None:
                    address = json.loads(text)["meters"][0]["address"]
                path = "/%s.mbus.json" % name
                _check(sim.mpremote("cp", local, ":" + path[1:], timeout=1200), "copy " + src)
            try:
                res["memory"][name] = _run_serving(sim, master, tmp, path, address, requests)
            except (Fail, AssertionError) as e:
                res["memory"][name] = {"error": str(e).splitlines()[0]}
            pairs += _delays(sim)
        res["delay_2400"] = _delay_figures(pairs, 2400)
        if baud9600:
            res["delay_9600"] = _delays_9600(sim, master, tmp, requests)
        return res
    finally:
        if master is not None:
            master.close()
        if sim is not None:
            sim.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _delays_9600(sim, master, tmp, n):
    """The water meter switched to 9600 baud by the master (state file aside), n reads."""
    script = _script(tmp, "mem.py", MEM_SCRIPT % ("/water.mbus.json", n + 1))
    proc = subprocess.Popen([_mpremote(), "connect", sim.repl, "run", script],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_serving(sim, proc)
        _delays(sim)
        assert master.request(long_frame(0x53, 2, 0xBD)) == b"\xe5", "no E5 to the switch"
        sim.wait_line("board: mbus: saved settings", BOOT)   # (flash write: late replies)
        master.set_baud(9600)
        for i in range(n):
            master.req_ud2(2, fcb=bool(i & 1))
        proc.communicate(timeout=BOOT)
    finally:
        master.set_baud(2400)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    return _delay_figures(_delays(sim), 9600)


def figures():
    """(figures or None, note or None) for mbus-bench."""
    why = pico.missing()
    if why:
        return None, "emulated Pico not measured: %s" % why
    try:
        return measure(), None
    except (Fail, OSError, TimeoutError, AssertionError, subprocess.SubprocessError) as e:
        return None, "emulated Pico not measured: %s" % str(e).splitlines()[0]


def report_lines(p):
    """The README block's lines for the figures (none when there are none)."""
    if not p:
        return []
    lines = ["", "| emulated Raspberry Pi Pico (rp2040js, MicroPython 1.26.1 RPI_PICO, 32-bit), "
             "firmware as deployed (`.mpy`, no codec) | |", "|---|---:|"]
    for name, label in (("demo", "demo meter"), ("water", "water-meter.json"),
                        ("heat", "heat-meter.json"),
                        ("bus250", "a bus of %d meters" % BUS_METERS)):
        m = p["memory"].get(name)
        if not m:
            continue
        lines.append("| heap, %s: in use after start / peak while serving %d requests / "
                     "largest free block | %s |" % (
                         label, p["requests"], "n/a: " + m["error"] if "error" in m else
                         "%d / %d / %d bytes (of %d)" % (m["start"], m["peak"],
                                                          m["largest_free"], m["gc_total"])))
    if p.get("mpy"):
        lines.append("| `.mpy` files on the board's filesystem (%d files; `mbus_core`) | %d "
                     "bytes (%d) |" % (p["mpy"]["files"], p["mpy"]["total"], p["mpy"]["core"]))
    for nrec in (1, 10):
        c = p.get("core_%d" % nrec)
        if c:
            lines.append("| core cost per REQ_UD2, %d record(s): fresh telegram / repeat | "
                         "%d / %d cycles (%.0f / %.0f µs at %d MHz) |" % (
                             nrec, c["fresh_cycles"], c["repeat_cycles"], c["fresh_us"],
                             c["repeat_us"], p["mhz"]))
    for baud in (2400, 9600):
        d = p.get("delay_%d" % baud)
        if d:
            lines.append("| reply delay on the wire at %d baud (simulated; window %.1f..%.1f "
                         "ms): min / median / max, inside the window | %.1f / %.1f / %.1f "
                         "ms, %d of %d |" % (baud, d["window_ms"][0], d["window_ms"][1],
                                             d["min_ms"], d["p50_ms"], d["max_ms"],
                                             d["in_window"], d["n"]))
    return lines


if __name__ == "__main__":
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 6
    why = pico.missing()
    if why:
        sys.exit("bench_pico: error: %s" % why)
    try:
        res = measure(requests=n)
    except (Fail, TimeoutError, AssertionError) as e:
        sys.exit("bench_pico: error: %s" % str(e).splitlines()[0])
    print(json.dumps(res, indent=1))
    print("\n".join(report_lines(res)))
