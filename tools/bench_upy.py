# Core cost per request, and on MicroPython the heap figures. Runs on both runtimes:
#     micropython tools/bench_upy.py [N]       (tools/bench.py runs it and reads the result)
# Prints one line "BENCH {json}" with microseconds per request for a REQ_UD2 with a toggled
# FCB (a fresh telegram) and a repeat (same FCB), for meters of 1, 10 and 50 records and for
# a bus of 1 vs 250 meters; on MicroPython also the heap allocated per request in steady
# state and the heap a 10-record meter takes.
import sys

try:
    from time import ticks_us, ticks_diff
except ImportError:  # CPython
    from time import perf_counter_ns as _ns

    def ticks_us():
        return _ns() // 1000

    def ticks_diff(a, b):
        return a - b

if __name__ == "__main__":
    _here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    sys.path.insert(0, _here + "/..")

from mbus_core.bus import Bus
from mbus_core.meter import Meter


def short(c, a):
    return bytes((0x10, c, a, (c + a) & 0xFF, 0x16))


def records(n):
    """n constant records of the kinds a heat meter has: energy, volume, power, flow,
    temperatures, date; 6 to 7 bytes each."""
    kinds = ((0x04, 0x06), (0x04, 0x13), (0x04, 0x2B), (0x04, 0x3B), (0x02, 0x5B),
             (0x02, 0x5F), (0x04, 0x6D))
    out = []
    for i in range(n):
        dif, vif = kinds[i % len(kinds)]
        size = 4 if dif == 0x04 else 2
        v = 1000 + 37 * i
        body = [dif | (0x40 if i >= len(kinds) else 0), vif]
        for k in range(size):
            body.append((v >> (8 * k)) & 0xFF)
        out.append(bytes(body))
    return out


def meter(address, nrec, ident=None):
    return Meter(address=address, id=ident if ident is not None else 10000000 + address,
                 manufacturer="TST", medium=4, records=records(nrec))


def _loop(bus, a, b, n):
    """n requests, a and b alternating; returns microseconds per request."""
    half = n // 2
    t0 = ticks_us()
    for _ in range(half):
        bus.feed(a, 0, 5)
        bus.feed(b, 0, 5)
    return ticks_diff(ticks_us(), t0) / (2 * half)


def cost(bus, address, repeat, n, rounds=3):
    """Best of `rounds` runs of n requests (the minimum: least disturbed by the OS)."""
    a = short(0x7B if repeat else 0x5B, address)
    b = short(0x7B, address)
    _loop(bus, a, b, 20)  # warm up: lays the telegrams out
    best = None
    for _ in range(rounds):
        us = _loop(bus, a, b, n)
        if best is None or us < best:
            best = us
    return best


def _aes():
    """The AES-128 block function factory of the port (cryptolib / pycryptodome), or
    None where neither is there."""
    try:
        from ports.aes import aes128, available
    except ImportError:
        try:
            from mbus_ports.aes import aes128, available
        except ImportError:
            return None
    return None if available() else aes128


class Canned:
    """The floor of a slave: parse the request, copy a ready telegram, patch its access
    number and checksum; nothing else."""

    def __init__(self, telegram):
        from mbus_core.frame import FrameParser
        self.parser = FrameParser()
        self.telegram = telegram
        self.tx = bytearray(261)
        self.access = 0
        self.base = sum(telegram[4:-2]) - telegram[15]

    def feed(self, data, start, end):
        pos = self.parser.feed(data, start, end)
        if self.parser.kind:
            t = self.telegram
            n = len(t)
            self.tx[0:n] = t
            a = self.access
            self.tx[15] = a
            self.tx[n - 2] = (self.base + a) & 0xFF
            self.access = (a + 1) & 0xFF
        return pos


def core_costs(n, rounds=5):
    out = {}
    for nrec in (1, 10, 50):
        bus = Bus([meter(1, nrec)])
        bus.feed(short(0x5B, 1), 0, 5)
        canned = Canned(bytes(bus.reply[:bus.reply_len]))
        # fresh, repeat and the canned floor in turns, the best of each: a machine whose
        # speed drifts (a VM, a CPU's clock) then weighs on the three alike
        runs = (("fresh_%d" % nrec, bus, False), ("repeat_%d" % nrec, bus, True),
                ("canned_%d" % nrec, canned, False))
        for _ in range(rounds):
            for key, target, repeat in runs:
                us = cost(target, 1, repeat, n, rounds=1)
                if key not in out or us < out[key]:
                    out[key] = us
    aes = _aes()
    if aes is not None:   # encrypted telegrams (OMS modes 5 and 7), 10 records
        from mbus_core.security import Security
        for mode in (5, 7):
            m = meter(1, 10)
            m.security = Security(mode, bytes(range(16)), aes, counter=0)
            out["secure%d_10" % mode] = cost(Bus([m]), 1, False, n)
    bus1 = Bus([meter(1, 10)])
    out["bus_1"] = cost(bus1, 1, False, n)
    bus250 = Bus([meter(a, 10) for a in range(1, 251)])
    out["bus_250"] = cost(bus250, 125, False, n)
    out["bus_250_last"] = cost(bus250, 250, False, n)
    return out


def _allocated(bus, a, b, n):
    """Heap bytes allocated by n requests with the collector off."""
    import gc
    gc.collect()
    gc.disable()
    try:
        m0 = gc.mem_alloc()
        _loop(bus, a, b, n)
        return gc.mem_alloc() - m0
    finally:
        gc.enable()


def heap_figures(n):
    """MicroPython only: bytes allocated per request in steady state (gc disabled, so
    nothing is collected in between; the difference between n and 2n requests, so the
    harness's own few bytes cancel out), and the heap a 10-record meter takes."""
    import gc
    out = {}
    gc.collect()
    m0 = gc.mem_alloc()
    empty = Bus([])
    gc.collect()
    out["empty_bus_heap"] = gc.mem_alloc() - m0
    del empty
    gc.collect()
    m0 = gc.mem_alloc()
    m = meter(1, 10)
    gc.collect()
    m1 = gc.mem_alloc()
    bus = Bus([m])
    a = short(0x5B, 1)
    b = short(0x7B, 1)
    bus.feed(a, 0, 5)   # the first readout lays the telegrams out
    gc.collect()
    m2 = gc.mem_alloc()
    out["meter10_heap"] = m1 - m0
    out["meter10_bus_heap"] = m2 - m0
    _loop(bus, a, b, 20)
    big = Bus([meter(x, 10) for x in range(1, 251)])
    c = short(0x5B, 125)
    d = short(0x7B, 125)
    _loop(big, c, d, 20)
    gc.collect()
    out["bus250_heap"] = gc.mem_alloc() - m2
    for key, which, x, y in (("alloc_per_request", bus, a, b),
                             ("alloc_per_request_bus250", big, c, d),
                             ("alloc_per_repeat", bus, b, b)):
        one = _allocated(which, x, y, n)
        two = _allocated(which, x, y, 2 * n)
        out[key] = (two - one) / n
    out["heap_free"] = gc.mem_free()
    return out


# -- the firmware's heap --------------------------------------------------------------------
# The pico firmware as mbus-deploy lays it out (.mpy, no codec, the water meter compiled on
# the host) answers FW_REQUESTS REQ_UD2 (FCB toggled: a fresh telegram each) through a
# stand-in `machine` module, on the MicroPython unix port (64-bit: 8-byte object slots) and,
# where node and the MicroPython WebAssembly port are installed, on that (32-bit: 4-byte
# slots, as on an RP2040 or ESP32). The host side (CPython) lays the board out and runs it.
FW_REQUESTS = 10
# issue 10: the firmware's own heap in use after start (without the stand-in machine module,
# which a real board has built in) with the water meter, on the 64-bit unix port
FW_TARGET = 48 * 1024
FW_MACHINE = """
class Pin:
    OUT = 1

    def __init__(self, *a, **kw):
        pass

    def value(self, v=None):
        return 0


class UART:
    LEFT = 0    # requests still to come
    SENT = 0    # replies

    def __init__(self, *a, **kw):
        pass

    def init(self, **kw):
        pass

    def readinto(self, buf):
        n = UART.LEFT
        if n <= 0:
            return None
        UART.LEFT = n - 1
        c = 0x7B if n & 1 else 0x5B
        buf[0] = 0x10
        buf[1] = c
        buf[2] = 2
        buf[3] = (c + 2) & 0xFF
        buf[4] = 0x16
        return 5

    def write(self, data):
        UART.SENT += 1
        return len(data)

    def flush(self):
        pass


class WDT:
    def __init__(self, timeout):
        pass

    def feed(self):
        pass
"""
FW_DRIVER = """
# Built as upy_firmware.run() builds it, served one request at a time: the same steps on
# the unix port (one program) and on the WebAssembly port, whose collector frees nothing
# while Python code runs, so the node side calls each step from the top level.
import gc
gc.collect()
base = gc.mem_alloc()
import machine
gc.collect()
stand_in = gc.mem_alloc() - base
import mbus_boards.pico as board
from mbus_ports import upy_firmware as fw
board.meter_path = "meter.json"
board.state_path = "state.json"
board.config["reply_delay_ms"] = 0
machine.UART.LEFT = %d
F = {"stand_in": stand_in, "requests": 0}


def start():
    F["fw"] = fw.Firmware(board)


def collected():
    gc.collect()
    return gc.mem_alloc()


def serve_one():
    F["fw"].line.step()
    return gc.mem_alloc()


def report(start, peak, after):
    print("BENCHFW {\\"start\\": %%d, \\"peak\\": %%d, \\"after\\": %%d, \\"requests\\": %%d, "
          "\\"replies\\": %%d, \\"stand_in\\": %%d}"
          %% (start, peak, after, F["fw"].line.requests, machine.UART.SENT, F["stand_in"]))


def main():
    start()
    s = collected()
    gc.threshold(fw.GC_SLACK)   # as run() does
    peak = s
    for _ in range(%d):
        a = serve_one()
        if a > peak:
            peak = a
    report(s, peak, collected())


if __name__ == "__main__":
    main()
""" % (FW_REQUESTS, FW_REQUESTS)
# node: the WebAssembly port, the board folder copied into its filesystem, the driver's
# steps from the top level; the collector's threshold (GC_SLACK) is applied there after
# each request, as the threshold collects on a board
FW_WASM = """
import fs from "fs";
import path from "path";
const mjs = process.env.MBUS_WASM_MJS;   // not in argv: the port reads its argv itself
const dir = process.env.MBUS_WASM_BOARD;
const n = parseInt(process.env.MBUS_WASM_REQUESTS);
const { loadMicroPython } = await import(mjs);
const out = [];
const mp = await loadMicroPython({ heapsize: 1024 * 1024, stdout: (l) => out.push(l),
                                   stderr: (l) => out.push(l) });
function copy(src, dst) {
  mp.FS.mkdir(dst);
  for (const n of fs.readdirSync(src)) {
    const s = path.join(src, n);
    if (fs.statSync(s).isDirectory()) copy(s, dst + "/" + n);
    else mp.FS.writeFile(dst + "/" + n, fs.readFileSync(s));
  }
}
copy(dir, "/board");
mp.FS.chdir("/board");
try {
  // gc.collect() frees only when called from the top level here
  const get = (code) => { mp.runPython("V = " + code); return mp.globals.get("V"); };
  const collected = () => { mp.runPython("gc.collect()"); return get("gc.mem_alloc()"); };
  // relative, as on the unix port (MICROPYPATH=:lib): the modules' __file__ is lib/...
  mp.runPython("import gc, sys\\nsys.path[:0] = ['lib', '']");
  const base = collected();   // the stand-in machine module: measured here, where it frees
  mp.runPython("import machine");
  const standIn = collected() - base;
  mp.runPython("import fw_bench\\nfw_bench.F['stand_in'] = " + standIn);
  mp.runPython("fw_bench.start()");
  const start = collected();
  const slack = get("fw_bench.fw.GC_SLACK");
  let peak = start;
  let last = start;
  for (let i = 0; i < n; i++) {
    const a = get("fw_bench.serve_one()");
    if (a > peak) peak = a;
    if (a - last > slack) last = collected();
  }
  mp.runPython("fw_bench.report(" + start + ", " + peak + ", " + collected() + ")");
} catch (e) {
  out.push("ERROR " + e);
}
console.log(out.join("\\n"));
"""
WASM_PACKAGE = "@micropython/micropython-webassembly-pyscript"


def firmware_layout(board_dir, meter, mpy_cross=None):
    """CPython: the board folder (lib/ as mbus-deploy ships it for a pico, .mpy with
    mpy_cross compiled as mbus-deploy compiles them, the compiled meter, the stand-in
    machine module, the driver)."""
    import importlib.util
    import os
    import shutil
    import subprocess
    here = os.path.dirname(os.path.abspath(__file__))
    spec = importlib.util.spec_from_file_location("_mbus_deploy", os.path.join(here,
                                                                              "deploy.py"))
    dep = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(dep)
    root = dep.source_root()[0]
    for src, dest in dep.shipped_files("pico"):
        target = os.path.join(board_dir, "lib", dest)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        if mpy_cross:
            # named as loaded here (MICROPYPATH=:lib), as a board's are as loaded there
            subprocess.run(dep.mpy_cross_cmd(mpy_cross, target[:-3] + ".mpy",
                                             os.path.join(root, src),
                                             dep.board_path(dest, "lib/")),
                           check=True, capture_output=True)
        else:
            shutil.copyfile(os.path.join(root, src), target)
    for name, text in ((dep.COMPILED_METER, dep.compile_meter(meter)),
                       ("machine.py", FW_MACHINE), ("fw_bench.py", FW_DRIVER)):
        with open(os.path.join(board_dir, name), "w") as f:
            f.write(text)


def find_wasm(root):
    """(node, micropython.mjs of the WebAssembly port) or None: MBUS_UPY_WASM, else the
    package installed with `npm install --prefix .venv` (or into the checkout)."""
    import os
    import shutil
    node = shutil.which("node")
    cands = [os.environ.get("MBUS_UPY_WASM", "")]
    for where in (os.path.join(root, ".venv"), root):
        cands.append(os.path.join(where, "node_modules", WASM_PACKAGE, "micropython.mjs"))
    for c in cands:
        if c and os.path.isfile(c) and node:
            return node, c
    return None


def firmware_figures(micropython, root, meter, mpy_cross=None):
    """CPython: {"unix64": figures, "wasm32": figures or None}, notes. Figures: heap in use
    after start, peak while serving, in use after serving (collected), as measured; the
    stand-in machine module's share of them (stand_in); the firmware's own heap after start
    and peak (firmware, firmware_peak: without the stand-in, which a real board has built
    in: the figures compared with FW_TARGET); requests and replies."""
    import json
    import os
    import subprocess
    import tempfile
    out = {"unix64": None, "wasm32": None, "mpy": bool(mpy_cross)}
    notes = []
    with tempfile.TemporaryDirectory(prefix="mbus-fw-bench-") as board_dir:
        firmware_layout(board_dir, meter, mpy_cross)
        runs = [("unix64", [micropython, "fw_bench.py"], {"MICROPYPATH": ":lib"})]
        wasm = find_wasm(root)
        if wasm:
            runs.append(("wasm32", [wasm[0], "--input-type=module", "-e", FW_WASM],
                         {"MBUS_WASM_MJS": wasm[1], "MBUS_WASM_BOARD": board_dir,
                          "MBUS_WASM_REQUESTS": str(FW_REQUESTS)}))
        else:
            notes.append("32-bit firmware heap not measured: needs node and the MicroPython "
                         "WebAssembly port (npm install --prefix .venv %s@1.27.0)"
                         % WASM_PACKAGE)
        for key, cmd, env in runs:
            r = subprocess.run(cmd, cwd=board_dir, env=dict(os.environ, **env),
                               capture_output=True, text=True, timeout=300)
            found = [ln for ln in r.stdout.splitlines() if ln.startswith("BENCHFW ")]
            if found:
                f = json.loads(found[0][8:])
                f["firmware"] = f["start"] - f["stand_in"]
                f["firmware_peak"] = f["peak"] - f["stand_in"]
                out[key] = f
            else:
                notes.append("firmware heap (%s) not measured: %s" % (key, (
                    (r.stdout + r.stderr).strip().splitlines() or ["no output"])[-1]))
    return out, notes


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    n = int(argv[0]) if argv else 2000
    out = {"runtime": sys.implementation.name, "n": n}
    res = core_costs(n)
    for k in res:
        out[k] = res[k]
    if sys.implementation.name == "micropython":
        res = heap_figures(n)
        for k in res:
            out[k] = res[k]
    import json
    print("BENCH " + json.dumps(out))
    return out


if __name__ == "__main__":
    main()
