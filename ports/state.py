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

from mbus_core.meter import manufacturer_code, manufacturer_spec

try:
    import sys as _sys
except ImportError:  # pragma: no cover
    _sys = None

FORMAT = 1
# A state file is a few kB (250 random meters with their counters' readings: 50 kB); a
# larger one is corrupt. The bound keeps a read from filling the memory.
MAX_SIZE = 1 << 20
_READ_CHUNK = 4096
_S_IFMT = 0o170000
_S_IFREG = 0o100000
_S_IFDIR = 0o040000
_S_IFLNK = 0o120000


def _default_warn(msg):
    try:
        _sys.stderr.write("mbus-slave: warning: " + msg + "\n")
    except Exception:
        print("mbus-slave: warning: " + msg)


def _kind(path, follow=False):
    """What is at `path`: "" (nothing), "file", "dir", "link" or "other" (a FIFO, a device
    node, a socket). The last component is not followed (unless `follow`) where the
    runtime can tell: CPython's os.lstat; MicroPython has only os.stat."""
    stat = os.stat if follow else getattr(os, "lstat", os.stat)
    try:
        kind = stat(path)[0] & _S_IFMT
    except OSError:
        return ""
    if kind == _S_IFREG:
        return "file"
    if kind == _S_IFDIR:
        return "dir"
    if kind == _S_IFLNK:
        return "link"
    return "other"


def _not_regular(kind):
    return "is a directory" if kind == "dir" else (
        "is a symbolic link" if kind == "link" else "not a regular file")


def check_path(path):
    """None when `path` can be a state file; else what is wrong, in a few words (for
    `--state PATH: ...`). An existing path must be a regular file (never a device node,
    a FIFO, a directory, a symbolic link: save_state would replace it), so must be its
    .tmp beside it, and the folder must exist and be writable."""
    kind = _kind(path)
    if kind == "link":
        to = ""
        if hasattr(os, "readlink"):
            try:
                to = " to " + os.readlink(path)
            except OSError:
                pass
        return ("is a symbolic link%s (not followed: name the file itself)" % to)
    if kind and kind != "file":
        return _not_regular(kind)
    kind = _kind(path + ".tmp")
    if kind and kind != "file":
        return "%s.tmp exists and is not a regular file (not replaced)" % path
    folder = _dirname(path)
    kind = _kind(folder, follow=True)
    if not kind:
        return "folder %s does not exist" % folder
    if kind != "dir":
        return "%s is not a folder" % folder
    if hasattr(os, "access") and not os.access(folder, os.W_OK | os.X_OK):
        return "folder %s is not writable" % folder
    return None


def _keep(src, base, suffix):
    """Move a state file that will not be used beside it (base + suffix, or .1 .. .9 when
    that is taken) before a new one is written; the text for the warning."""
    for i in range(10):
        dst = base + suffix + ("." + str(i) if i else "")
        if _kind(dst):
            continue
        try:
            os.rename(src, dst)
        except OSError as e:
            return "could not keep it as %s (%s): the next save replaces it" % (dst, e)
        return "kept as " + dst
    return ("not kept (%s .. %s.9 exist): the next save replaces it"
            % (base + suffix, base + suffix))


def load_state(path, warn=None):
    """The state in `path` as a dict. A missing file gives {}. A path that is not a
    regular file gives {} and one warning (it is neither read nor moved). An unreadable,
    corrupt or too large file (over MAX_SIZE bytes), or one of another format, gives {}
    and one warning, and is kept beside it as path + ".corrupt" / ".unknown" (never an
    exception)."""
    if warn is None:
        warn = _default_warn
    base = path
    kind = _kind(path)
    if not kind:
        # Where rename cannot replace a file (FAT on a board), save_state removes the old
        # file before renaming the complete new one into place: a reset in between leaves
        # only the .tmp file, which was fully written and flushed before the removal.
        path = path + ".tmp"
        kind = _kind(path)
        if not kind:
            return {}
    if kind != "file":
        warn("state file %s %s; ignored, starting from the configuration"
             % (path, _not_regular(kind)))
        return {}
    try:
        if os.stat(path)[6] > MAX_SIZE:
            raise ValueError("larger than %d bytes" % MAX_SIZE)
        # and a bounded read all the same (a file may grow); in small reads, since
        # MicroPython's read(n) allocates n bytes at once
        parts = []
        size = 0
        f = open(path, "rb")
        try:
            while True:
                chunk = f.read(_READ_CHUNK)
                if not chunk:
                    break
                size += len(chunk)
                if size > MAX_SIZE:
                    raise ValueError("larger than %d bytes" % MAX_SIZE)
                parts.append(chunk)
        finally:
            f.close()
        text = b"".join(parts).decode("utf-8")
        if not text.strip():
            raise ValueError("empty file")
        data = json.loads(text)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
    except Exception as e:  # ValueError (JSON), OSError, UnicodeError: all the same here
        warn("state file %s is unreadable (%s); %s; starting from the configuration"
             % (path, e, _keep(path, base, ".corrupt")))
        return {}
    fmt = data.get("format", FORMAT)   # files of hand or of old tests may lack it
    if fmt != FORMAT or isinstance(fmt, bool):
        warn("state file %s has format %s, not %d (another version's?); %s; starting "
             "from the configuration" % (path, json.dumps(fmt), FORMAT,
                                         _keep(path, base, ".unknown")))
        return {}
    return data


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
    Raises OSError when the file cannot be written, and when `path` or its .tmp exists
    and is not a regular file (a device node, a FIFO, a directory, a symbolic link:
    never replaced, never written through)."""
    text = json.dumps(state)
    kind = _kind(path)
    if kind and kind != "file":
        raise OSError("%s %s (not replaced)" % (path, _not_regular(kind)))
    tmp = path + ".tmp"
    kind = _kind(tmp)
    if kind == "file":
        os.remove(tmp)   # a stale one of ours
    elif kind:
        raise OSError("%s %s (not replaced)" % (tmp, _not_regular(kind)))
    if hasattr(os, "open") and hasattr(os, "O_EXCL"):
        # O_EXCL: whatever appeared there meanwhile is an error, not followed
        f = open(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666), "w")
    else:
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
def meter_state(meter, configured_id, ahead=0):
    """The persisted settings of one meter, and the readings of its counters `ahead`
    seconds from now."""
    out = {"configured_id": configured_id, "address": meter.address, "id": meter.id,
           "manufacturer": manufacturer_spec(meter.manufacturer), "version": meter.version,
           "medium": meter.medium}
    readings = {}
    for i in range(len(meter.records)):
        rec = meter.records[i]
        src = getattr(rec, "source", None)
        if hasattr(src, "resume"):
            readings[str(i)] = {"head": _hex(rec.head), "value": src.reading(ahead)}
    if readings:
        out["readings"] = readings
    sec = getattr(meter, "security", None)
    if sec is not None and sec.mode == 7:
        # the message counter: while running, the bound reserved ahead of use (see
        # mbus_core.security.Security), so that a restart after a crash never repeats one
        c = sec.counter
        out["message_counter"] = c if ahead == 0 or sec.limit < c else sec.limit
    return out


def _hex(data):
    return "".join("%02X" % b for b in data)


def snapshot(meters, configured_ids, baud=None, ahead=0):
    """The state dict for a list of meters (and the line's baud rate, if any). `ahead`:
    counters are saved at their reading that many seconds from now, so that after a
    crash before the next save they resume at or beyond anything a master has read."""
    out = {"format": FORMAT, "meters": {}}
    for i in range(len(meters)):
        out["meters"][str(i)] = meter_state(meters[i], configured_ids[i], ahead)
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
        differs = (address, ident, man, version, medium) != (m.address, m.id, m.manufacturer,
                                                             m.version, m.medium)
        m.address = address
        m.id = ident
        m.manufacturer = man
        m.version = version
        m.medium = medium
        if _resume_counter(e.get("message_counter"), m, i, warn):
            differs = True
        if _resume_readings(e.get("readings"), m, i, warn) or differs:
            changed += 1
    return changed


def _resume_counter(value, meter, index, warn):
    """A mode 7 meter goes on from its saved message counter (never below the one it was
    configured with); True when it did."""
    sec = getattr(meter, "security", None)
    if value is None or sec is None or sec.mode != 7:
        return False
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 0xFFFFFFFF:
        warn("state: meter %d: bad message counter %r; ignored" % (index + 1, value))
        return False
    if value <= sec.counter:
        return False
    sec.set_counter(value)
    return True


def _resume_readings(readings, meter, index, warn):
    """Counters go on from their saved readings; True when any did."""
    if not isinstance(readings, dict):
        return 0
    resumed = False
    for key in readings:
        r = readings[key]
        try:
            rec = meter.records[int(key)]
        except (ValueError, IndexError):
            rec = None
        src = getattr(rec, "source", None)
        ok = isinstance(r, dict) and hasattr(src, "resume") and r.get("head") == _hex(rec.head)
        v = r.get("value") if ok else None
        if isinstance(v, bool) or not isinstance(v, (int, float)) or v != v:
            warn("state: meter %d record %s: the saved reading does not fit this "
                 "configuration; ignored" % (index + 1, key))
            continue
        src.resume(v)
        resumed = True
    return resumed


def state_baud(state, allowed):
    """The persisted baud rate if it is one of `allowed`, else 0."""
    b = state.get("baud") if isinstance(state, dict) else None
    if isinstance(b, int) and not isinstance(b, bool) and b in allowed:
        return b
    return 0
