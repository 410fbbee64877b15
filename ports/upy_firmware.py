# The firmware a MicroPython board runs (main.py: `import mbus_boards.pico as board`,
# `from mbus_ports.upy_firmware import run; run(board)`).
#
# run(board): builds the meter(s) from the compiled meter file on the board's filesystem
# (/meter.mbus.json, which mbus-deploy makes on the host: no codec on the board; see
# load_meters for a hand-written /meter.json; a demo meter when there is none), applies
# the settings a master changed earlier (mbus_ports.state), serves the line with the
# shared LineServer,
# persists new settings after the reply went out (atomically: temp file, rename), feeds
# the watchdog, and keeps serving through any exception (logged, short pause, go on).
#
# A board module provides: NAME, BAUD, meter_path, state_path, make_port(baud) -> port,
# wdt() -> object with feed() or None, led (a Pin or None), config (dict, optional):
#   "address"/"id": override the first meter's; "hook": module with setup(meters, board)
#   that attaches value callbacks (default "sensors", optional); "reply_delay_ms";
#   "mem_report": 1 prints the memory report after start (and "mem_every" N requests).
import gc
import json

try:
    from time import ticks_ms, ticks_diff, ticks_add, sleep_ms
except ImportError:  # CPython
    from mbus_ports.line import ticks_ms, ticks_diff, ticks_add, sleep_ms

from mbus_core.bus import Bus
from mbus_core.compiled import CompiledError, Stamp, meters_from_compiled
from mbus_ports.line import LineServer
from mbus_ports import state as _state
from mbus_core.live_record import wrap_notes

BAUD_RATES = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400)
# the demo meter ({"name": "demo", "address": 3, "id": 12345678, "manufacturer": "TST",
# "version": 1, "medium": "water"}), compiled: a volume counter and a constant flow
DEMO = {"mbus_compiled": 1, "meters": [{
    "address": 3, "name": "demo", "id": 12345678, "manufacturer": "TST", "medium": 7,
    "records": [{"head": "0413", "code": 4, "pow10": 3, "counter": [123.456, 0.001]},
                "043D05000000"]}]}
COMPILED = ".mbus.json"
# the serving loop collects once this many bytes were allocated since the last collection,
# so the heap in use never goes far past what the firmware keeps (see mem_report)
GC_SLACK = 8192

# memory figures of the running firmware (bytes): see mem_report()
MEM = {"start": 0, "free": 0, "peak": 0, "requests": 0, "errors": 0, "line": None}


def log(msg):
    print("mbus: " + msg)


def _err(e):
    return "%s: %s" % (type(e).__name__, e)


class Clock:
    """Seconds since start for value generators, from ticks_ms without the wrap."""

    def __init__(self):
        self.t = ticks_ms()
        self.s = 0.0

    def __call__(self):
        now = ticks_ms()
        self.s += ticks_diff(now, self.t) / 1000
        self.t = now
        return self.s


def compiled_path(path):
    """The compiled meter file that goes with a meter file: /meter.json -> /meter.mbus.json
    (a path that is one already stays as it is)."""
    if path.endswith(COMPILED):
        return path
    return (path[:-5] if path.endswith(".json") else path) + COMPILED


def _stamp(path):
    """Stamp().value() of a file's bytes, or None when there is no such file."""
    try:
        f = open(path, "rb")
    except OSError:
        return None
    s = Stamp()
    try:
        while True:
            chunk = f.read(256)
            if not chunk:
                break
            s.add(chunk)
    finally:
        f.close()
    return s.value()


def load_meters(path, clock=None):
    """The meters, without the codec: from the compiled file beside the meter file `path`
    (/meter.json -> /meter.mbus.json, made on the host by mbus-deploy). The meter file
    itself (a meter description, edited by hand) is read only where it is not the one the
    compiled file was made from and the board has the codec (mbus-deploy --codec); it is
    then compiled on the board, for the next start. Anything missing or wrong: one line
    in the log, and the compiled file, else the demo meter (a headless board keeps
    answering)."""
    cpath = compiled_path(path)
    src = None if cpath == path else _stamp(path)
    doc = None
    try:
        f = open(cpath)
        try:
            doc = json.load(f)
        finally:
            f.close()
    except OSError:
        if src is None:
            log("no meter file %s: serving the demo meter" % cpath)
    except ValueError as e:
        log("%s: bad JSON: %s" % (cpath, e))
    if src is not None and (doc is None or doc.get("source") != src):
        meters = _from_description(path, cpath, src, clock,
                                   "the demo meter" if doc is None else cpath)
        if meters is not None:
            return meters
    if doc is not None:
        try:
            return meters_from_compiled(doc, clock)
        except CompiledError as e:
            log("%s: %s; serving the demo meter" % (cpath, e))
    return meters_from_compiled(DEMO, clock)


def _from_description(path, cpath, src, clock, instead):
    """A meter description read with the codec (mbus_ports.config, as on CPython) and
    compiled to `cpath`; None (logged) when this board has no codec or the file is wrong."""
    try:
        from mbus_ports.config import load_meters as _load
        from mbus_core.codec.compile import compile_meters
    except ImportError as e:
        log("%s: this board has no codec to read a meter description (%s); compile it on "
            "the host (mbus-deploy --meter FILE); serving %s" % (path, e, instead))
        return None
    try:
        doc = compile_meters(_load(path, clock), src)
    except Exception as e:  # ConfigError (one line, names the file), MemoryError
        log("%s; serving %s" % (e, instead))
        return None
    finally:
        unload_config_modules()
    try:
        _state.save_state(cpath, doc)
        log("compiled %s to %s" % (path, cpath))
    except OSError as e:
        log("cannot write %s: %s" % (cpath, _err(e)))
    return meters_from_compiled(doc, clock)


def _cfg(board):
    c = getattr(board, "config", None)
    return c if isinstance(c, dict) else {}


def _run_hook(board, meters):
    name = _cfg(board).get("hook", "sensors")
    if not name:
        return
    try:
        mod = __import__(name)
    except ImportError as e:
        if name in str(e):
            return  # no hook module: fine
        log("hook %s: %s" % (name, _err(e)))
        return
    except Exception as e:
        log("hook %s: %s" % (name, _err(e)))
        return
    setup = getattr(mod, "setup", None)
    if setup is not None:
        try:
            setup(meters, board)
        except Exception as e:
            log("hook %s.setup: %s" % (name, _err(e)))


# Needed only to read a meter description on the board (mbus-deploy --codec): the JSON
# model, the record codec and its VIF and unit tables, the compiler. The meters keep what
# they serve with (mbus_core.live_record, .generators, .datatypes).
CONFIG_MODULES = ("mbus_ports.config", "mbus_core.codec.compile", "mbus_core.codec.model",
                  "mbus_core.codec.capture", "mbus_core.codec.records",
                  "mbus_core.codec.units", "mbus_core.codec.vif", "mbus_core.codec")


def unload_config_modules():
    """Drop the configuration-time modules so their code and tables can be collected:
    on a Pico that is most of the heap the core takes."""
    import sys
    for name in CONFIG_MODULES:
        sys.modules.pop(name, None)
        pkg, _, attr = name.rpartition(".")
        parent = sys.modules.get(pkg)
        if parent is not None and attr in getattr(parent, "__dict__", {}):
            try:
                delattr(parent, attr)
            except (AttributeError, TypeError):
                pass
    gc.collect()


def mem_report():
    line = MEM.get("line")
    if line is not None:  # the loop may have been stopped before it counted the last one
        MEM["requests"] = line.requests
    a = gc.mem_alloc()
    if a > MEM["peak"]:
        MEM["peak"] = a
    gc.collect()
    now = gc.mem_alloc()
    text = ("memory: heap in use after start %d bytes (free %d), peak while serving %d "
            "bytes, in use now %d bytes, %d requests, %d errors"
            % (MEM["start"], MEM["free"], MEM["peak"], now, MEM["requests"], MEM["errors"]))
    log(text)
    return text


class Firmware:
    """Everything run() builds, kept together so a test or the REPL can look inside."""

    def __init__(self, board):
        self.board = board
        cfg = _cfg(board)
        self.clock = Clock()
        meters = load_meters(board.meter_path, self.clock)
        if "address" in cfg:
            meters[0].address = cfg["address"]
        if "id" in cfg:
            meters[0].id = cfg["id"]
        _run_hook(board, meters)
        self.meters = meters
        self.configured = [m.id for m in meters]
        self.state_path = board.state_path
        st = _state.load_state(self.state_path, log)
        _state.apply_state(st, meters, log)
        baud = _state.state_baud(st, BAUD_RATES) or getattr(board, "BAUD", 2400)
        self.saved = st
        self.dirty = False
        # counters' readings: saved every readings_min minutes (flash wear: default one
        # hour), each time at their value two periods ahead so that after a power cut the
        # meter resumes at or beyond anything a master has read
        self.readings_s = cfg.get("readings_min", 60) * 60
        self.readings_due = ticks_add(ticks_ms(), int(self.readings_s * 1000))
        self.bus = Bus(meters)
        self.bus.on_change = self._changed
        unload_config_modules()
        self.port = board.make_port(baud)
        self.line = LineServer(self.bus, self.port, baud=baud,
                               reply_delay_ms=cfg.get("reply_delay_ms"),
                               baud_fallback_ms=cfg.get("baud_fallback_ms", 60000))
        self.line.on_baud = self._baud
        self.led = getattr(board, "led", None)

    def _changed(self, slave, what):
        # called from inside bus.feed, before the reply goes out: only take note here
        if what in ("address", "id", "baud"):
            self.dirty = True

    def _baud(self, rate):
        self.dirty = True

    def tick(self):
        """The periodic save of the counters' readings."""
        # ticks, not self.clock(): a float per loop turn would churn the heap
        if self.readings_s and ticks_diff(ticks_ms(), self.readings_due) >= 0:
            self.readings_due = ticks_add(ticks_ms(), int(self.readings_s * 1000))
            self.persist()

    def persist(self):
        """Save the settings when they differ from the saved ones (spares the flash)."""
        self.dirty = False
        snap = _state.snapshot(self.meters, self.configured, self.line.baud,
                               2 * self.readings_s)
        if snap == self.saved:
            return False
        _state.save_state(self.state_path, snap)
        self.saved = snap
        log("saved settings to %s" % self.state_path)
        return True

    def describe(self):
        out = []
        for m in self.meters:
            out.append("address %d id %08d" % (m.address, m.id))
        return ", ".join(out)


def run(board, steps=0):
    """Serve forever (or `steps` loop turns, for tests). Returns on KeyboardInterrupt."""
    gc.collect()
    log("board %s, meter file %s, state file %s"
        % (getattr(board, "NAME", "?"), board.meter_path, board.state_path))
    fw = Firmware(board)
    line = fw.line
    cfg = _cfg(board)
    every = cfg.get("mem_every", 0)
    wdt = None
    if hasattr(board, "wdt"):
        wdt = board.wdt()
    gc.collect()
    MEM["start"] = gc.mem_alloc()
    MEM["free"] = gc.mem_free()
    MEM["peak"] = MEM["start"]
    MEM["line"] = line
    if hasattr(gc, "threshold"):
        gc.threshold(GC_SLACK)
    log("serving %d meter(s) (%s) at %d baud" % (len(fw.meters), fw.describe(), line.baud))
    if cfg.get("mem_report"):
        mem_report()
    replies = 0
    turns = 0
    try:
        while True:
            try:
                line.step()
                if fw.dirty:
                    fw.persist()
                fw.tick()
                if line.replies != replies:
                    replies = line.replies
                    for note in wrap_notes(fw.meters):
                        log(note)
                    if fw.led is not None:
                        fw.led.value(replies & 1)
                if line.requests != MEM["requests"]:
                    MEM["requests"] = line.requests
                    a = gc.mem_alloc()
                    if a > MEM["peak"]:
                        MEM["peak"] = a
                    if every and line.requests % every == 0:
                        mem_report()
            except KeyboardInterrupt:
                raise
            except Exception as e:  # MemoryError, OSError, a bug: log it and keep serving
                MEM["errors"] += 1
                try:
                    log("error in the loop: " + _err(e))
                except Exception:
                    pass
                gc.collect()
                sleep_ms(100)
            if wdt is not None:
                wdt.feed()
            if steps:
                turns += 1
                if turns >= steps:
                    break
    except KeyboardInterrupt:
        log("stopped")
    if cfg.get("mem_report"):
        mem_report()
    try:
        fw.port.close()
    except Exception:
        pass
    return fw
