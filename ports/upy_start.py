# The firmware's start (mbus_ports.upy_firmware): the meter files -> the meters, and the
# board's hook. Needed only until the meters are built: the firmware drops this module,
# mbus_core.compiled and (where a board has it) the codec again before it serves, so that
# their code does not stay on the heap.
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

from mbus_core.compiled import CompiledError, Stamp, meters_from_compiled
from mbus_ports.upy_firmware import log, _err, drop_modules


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

# Dropped once the meters are built (upy_firmware.drop_modules): this module, the
# compiled-form loader and, where a board read a meter description, the meter file reader
# and every codec module (the JSON model, the record codec and its VIF tables, the
# compiler). The meters keep what they serve with (mbus_core.live_record, .generators,
# .fields).
START_MODULES = ("mbus_ports.upy_start", "mbus_core.compiled")


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
