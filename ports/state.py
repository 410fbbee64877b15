# Settings a master changed (primary address, identity, baud rate), kept across restarts.
# Runtime-neutral: runs on CPython and MicroPython (json and os only; no os.path, no
# logging, no f-strings). The file is JSON:
#
#   {"format": 1, "baud": 9600,
#    "meters": {"0": {"configured_id": 12345678, "address": 7, "id": 12345678,
#                     "manufacturer": "TST", "version": 1, "medium": 7}}}
#
# "meters" is keyed by the meter's index in the bus (as text: JSON keys are strings);
# "configured_id" is the ID the meter had in its description, so that a state file written
# for another bus is not applied to the wrong meter.
import json
import os

from mbus_core.meter import manufacturer_code

try:
    import sys as _sys
except ImportError:  # pragma: no cover
    _sys = None

FORMAT = 1


def _default_warn(msg):
    try:
        _sys.stderr.write("mbus-slave: warning: " + msg + "\n")
    except Exception:
        print("mbus-slave: warning: " + msg)


def load_state(path, warn=None):
    """The state in `path` as a dict. A missing file gives {}; an unreadable or corrupt
    file gives {} and one warning (never an exception)."""
    if warn is None:
        warn = _default_warn
    try:
        f = open(path, "r")
    except OSError:
        # Where rename cannot replace a file (FAT on a board), save_state removes the old
        # file before renaming the complete new one into place: a reset in between leaves
        # only the .tmp file, which was fully written and flushed before the removal.
        try:
            f = open(path + ".tmp", "r")
        except OSError:
            return {}
        path = path + ".tmp"
    try:
        try:
            text = f.read()
        finally:
            f.close()
        if not text.strip():
            raise ValueError("empty file")
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        return data
    except Exception as e:  # ValueError (JSON), OSError, UnicodeError: all the same here
        warn("state file %s is unreadable (%s); starting from the configuration"
             % (path, e))
        return {}


def _dirname(path):
    i = path.rfind("/")
    if i < 0:
        return "."
    if i == 0:
        return "/"
    return path[:i]


def _fsync_dir(path):
    """Make the rename durable (CPython on POSIX; a no-op where it cannot be done)."""
    if not hasattr(os, "fsync") or not hasattr(os, "O_RDONLY") or not hasattr(os, "open"):
        return
    try:
        fd = os.open(_dirname(path), os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_state(path, state):
    """Write `state` (a dict) to `path` atomically: a reader sees the old file or the new
    one, never a mix. Writes path + ".tmp", flushes, fsyncs, renames over the old file.
    Raises OSError when the file cannot be written."""
    text = json.dumps(state)
    tmp = path + ".tmp"
    f = open(tmp, "w")
    try:
        f.write(text)
        f.write("\n")
        f.flush()
        if hasattr(os, "fsync") and hasattr(f, "fileno"):
            try:
                os.fsync(f.fileno())
            except OSError:
                pass
    finally:
        f.close()
    replace = getattr(os, "replace", None)
    if replace is not None:
        replace(tmp, path)
    else:
        try:
            os.rename(tmp, path)
        except OSError:
            # some filesystems (FAT) do not rename over an existing file
            try:
                os.remove(path)
            except OSError:
                pass
            os.rename(tmp, path)
    _fsync_dir(path)


# -- meters <-> state ----------------------------------------------------------------------
def _man_text(code):
    if code & 0x8000:
        return code
    out = ""
    for shift in (10, 5, 0):
        v = (code >> shift) & 0x1F
        if not 1 <= v <= 26:
            return code
        out += chr(v + 64)
    return out


def meter_state(meter, configured_id):
    """The persisted settings of one meter."""
    return {"configured_id": configured_id, "address": meter.address, "id": meter.id,
            "manufacturer": _man_text(meter.manufacturer), "version": meter.version,
            "medium": meter.medium}


def snapshot(meters, configured_ids, baud=None):
    """The state dict for a list of meters (and the line's baud rate, if any)."""
    out = {"format": FORMAT, "meters": {}}
    for i in range(len(meters)):
        out["meters"][str(i)] = meter_state(meters[i], configured_ids[i])
    if baud:
        out["baud"] = baud
    return out


def _man_code(v):
    # a raw code keeps the top bit a replayed telegram may carry; letters go through the core
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0xFFFF:
        return v
    if isinstance(v, str):
        return manufacturer_code(v)
    raise ValueError("bad manufacturer")


def _small(v, hi):
    if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v <= hi:
        raise ValueError("bad value")
    return v


def apply_state(state, meters, warn=None):
    """Put the persisted settings onto freshly configured meters (before they go on a
    Bus). Entries for a meter index that does not exist, or whose configured ID differs
    from the meter's current one, are skipped with a warning. Returns the number of meters
    changed."""
    if warn is None:
        warn = _default_warn
    entries = state.get("meters") if isinstance(state, dict) else None
    if not isinstance(entries, dict):
        return 0
    changed = 0
    for key in entries:
        e = entries[key]
        try:
            i = int(key)
        except ValueError:
            warn("state: ignoring meter entry %r" % (key,))
            continue
        if not 0 <= i < len(meters) or not isinstance(e, dict):
            warn("state: no meter %s in this configuration; entry ignored" % key)
            continue
        m = meters[i]
        if e.get("configured_id", m.id) != m.id:
            warn("state: meter %d is configured with ID %08d, the state was saved for "
                 "%08d; entry ignored" % (i + 1, m.id, e.get("configured_id")))
            continue
        try:
            address = _small(e.get("address", m.address), 250)
            ident = _small(e.get("id", m.id), 99999999)
            man = _man_code(e.get("manufacturer", m.manufacturer))
            version = _small(e.get("version", m.version), 255)
            medium = _small(e.get("medium", m.medium), 255)
        except ValueError:
            warn("state: meter %s has a bad value; entry ignored" % key)
            continue
        if (address, ident, man, version, medium) != (m.address, m.id, m.manufacturer,
                                                      m.version, m.medium):
            changed += 1
        if ident != m.id:
            m.id_raw = None
        m.address = address
        m.id = ident
        m.manufacturer = man
        m.version = version
        m.medium = medium
    return changed


def state_baud(state, allowed):
    """The persisted baud rate if it is one of `allowed`, else 0."""
    b = state.get("baud") if isinstance(state, dict) else None
    if isinstance(b, int) and not isinstance(b, bool) and b in allowed:
        return b
    return 0
