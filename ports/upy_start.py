# The firmware's start (mbus_ports.upy_firmware.Firmware): the meter files -> the meters,
# the board's hook, the saved state, the bus, the port, the LED and the watchdog. Needed only
# until then: the firmware drops this module, mbus_core.compiled, (where a board has it) the
# codec and the board's /board.json loader again before it serves, so that their code does
# not stay on the heap.
#
# Which meter files a board reads (/meter.json is the board's "meter" file, /board.json):
#   /meter.mbus.json  the compiled meter (mbus-deploy and tools/upy-sim make it on the host
#                     with mbus_core.codec.compile); loaded by mbus_core.compiled, no codec
#   /meter.json       a meter description (JSON, as for mbus-slave --meter), read only when
#                     it is not the file the compiled one was made from (edited by hand, or
#                     no compiled file) and the board has the codec (mbus-deploy --codec):
#                     then compiled on the board to /meter.mbus.json, for the next start;
#                     without the codec: one line in the log, and the compiled file (or the
#                     demo meter) is served
#   neither           the demo meter
import json

from mbus_core.bus import Bus
from mbus_core.compiled import CompiledError, Stamp, meters_from_compiled
from mbus_core.slave import BAUD_RATES
from mbus_ports.line import LineServer
from mbus_ports.upy_firmware import STATE, log, _err, drop_modules

try:
    from time import ticks_ms, ticks_add
except ImportError:  # CPython
    from mbus_ports.line import ticks_ms, ticks_add


def _compiled_meters(doc, clock):
    """meters_from_compiled, with AES (cryptolib, registered with mbus_core.security)
    imported only when a meter encrypts: it costs a board about 10 kB of heap."""
    for m in doc.get("meters", ()) if isinstance(doc, dict) else ():
        if isinstance(m, dict) and "security" in m:
            try:
                from mbus_ports import aes  # noqa: F401
            except ImportError:
                pass
            break
    return meters_from_compiled(doc, clock)

# the demo meter ({"name": "demo", "address": 3, "id": 12345678, "manufacturer": "TST",
# "version": 1, "medium": "water"}), compiled: a volume counter and a constant flow
DEMO = {"mbus_compiled": 1, "meters": [{
    "address": 3, "name": "demo", "id": 12345678, "manufacturer": "TST", "medium": 7,
    "records": [{"head": "0413", "code": 4, "pow10": 3, "counter": [123.456, 0.001]},
                "043D05000000"]}]}
COMPILED = ".mbus.json"

# Dropped once the meters are built (upy_firmware.drop_modules): the compiled-form loader
# (and the replayed meter's builder, loaded for such a meter only, and mbus_core.notes,
# which names a meter in its errors) and, where a board read
# a meter description, the meter file reader and every codec module (the JSON model, the
# record codec and its VIF tables, the compiler). The meters keep what they serve with
# (mbus_core.live_record, .generators, .fields).
START_MODULES = ("mbus_core.compiled", "mbus_core.replay", "mbus_core.notes")
# dropped by the firmware once build() returned: this module, and the boards' /board.json
# loader (a board's make_port or wdt imports it again, should they be called later)
LAST_MODULES = ("mbus_ports.upy_start", "mbus_boards.board_config")


def config_modules():
    """The meter file reader and the codec modules loaded now."""
    import sys
    return tuple(n for n in sys.modules if n.startswith("mbus_core.codec")) \
        + ("mbus_ports.config",)


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
    """The meters, without the codec where the compiled file is the one to serve (see the
    top of this file). Anything missing or wrong: one line in the log, and the compiled
    file, else the demo meter (a headless board keeps answering)."""
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
    if src is not None and (not isinstance(doc, dict) or doc.get("source") != src):
        meters = _from_description(path, cpath, src, clock,
                                   "the demo meter" if doc is None else cpath)
        if meters is not None:
            return meters
    if doc is not None:
        try:
            return _compiled_meters(doc, clock)
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
        drop_modules(config_modules())
    from mbus_ports import state
    try:
        state.save_state(cpath, doc)
        log("compiled %s to %s" % (path, cpath))
    except OSError as e:
        log("cannot write %s: %s" % (cpath, _err(e)))
    return _compiled_meters(doc, clock)


def run_hook(name, meters, board):
    """The hook module's setup(meters, board), which attaches value callbacks; a missing
    module is fine, anything else is one line in the log."""
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


def _cfg(board):
    c = getattr(board, "config", None)
    return c if isinstance(c, dict) else {}


def build(fw, board):
    """Firmware(board): the meters, their saved state and the bus, then (the codec, the
    compiled-form loader and the state file's module dropped) the line on the board's
    port, the LED and the watchdog. Logs the board and the meters it serves. Returns the
    names of the modules for the firmware to drop (LAST_MODULES)."""
    cfg = _cfg(board)
    log("board %s, meter file %s, state file %s"
        % (getattr(board, "NAME", "?"), board.meter_path, board.state_path))
    fw._t = ticks_ms()   # fw.clock(): seconds since now
    fw._s = 0.0
    meters = load_meters(board.meter_path, fw.clock)
    if "address" in cfg:
        meters[0].address = cfg["address"]
    if "id" in cfg:
        meters[0].id = cfg["id"]
    run_hook(cfg.get("hook", "sensors"), meters, board)
    fw.meters = meters
    fw.configured = [m.id for m in meters]
    fw.state_path = board.state_path
    baud = _state(fw, meters, getattr(board, "BAUD", 2400))
    # counters' readings: saved every readings_min minutes (flash wear: default one hour),
    # each time at their value two periods ahead so that after a power cut the meter
    # resumes at or beyond anything a master has read
    fw.readings_s = cfg.get("readings_min", 60) * 60
    fw.readings_due = ticks_add(ticks_ms(), int(fw.readings_s * 1000))
    # mode 7: persist the message counter's bound before use; build the next telegram's
    # ciphers after each reply (prepare_keys), not while answering
    fw.mode7 = [m for m in meters if m.security is not None and m.security.mode == 7]
    for m in fw.mode7:
        m.security.reserve = fw.persist
    fw.bus = Bus(meters)
    fw.bus.on_change = fw._changed
    drop_modules(START_MODULES + config_modules() + STATE)
    fw.port = board.make_port(baud)
    fw.line = LineServer(fw.bus, fw.port, baud=baud,
                         reply_delay_ms=cfg.get("reply_delay_ms"),
                         baud_fallback_ms=cfg.get("baud_fallback_ms", 60000))
    fw.line.on_baud = fw._mark_dirty
    fw.line.on_tick = fw.housekeeping
    fw.led = getattr(board, "led", None)
    fw.wdt = board.wdt() if hasattr(board, "wdt") else None
    fw.mem_every = cfg.get("mem_every", 0)
    fw.mem_report = cfg.get("mem_report", 0)
    log("serving %d meter(s) (%s) at %d baud"
        % (len(meters), ", ".join("address %d id %08d" % (m.address, m.id) for m in meters),
           baud))
    return LAST_MODULES


def _state(fw, meters, baud):
    """The settings a master changed earlier, applied to the meters; the baud rate."""
    from mbus_ports import state
    st = state.load_state(fw.state_path, log)
    state.apply_state(st, meters, log)
    fw.saved = st
    fw.dirty = False
    fw.dirty_at = 0
    return state.state_baud(st, BAUD_RATES) or baud
