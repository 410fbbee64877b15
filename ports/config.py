# Meter files for the CLI and the MicroPython firmware. Runtime-neutral (json only; no
# os.path, no f-strings): the file is read here, the description is turned into meters by
# mbus_core.codec.model, and every error comes back as one ConfigError line that names the file.
import json

from mbus_core.codec.model import ConfigError, meters_from_config, replay_from_hex
try:  # registers the AES-128 block function for "security" meters (mbus_core.security)
    from mbus_ports import aes as _aes  # noqa: F401
except ImportError:  # a board without mbus_ports/aes.py: encrypted meters say so
    pass


def read_text(path):
    """The file's text, or ConfigError("PATH: cannot read: ...")."""
    try:
        f = open(path, "r")
    except OSError as e:
        raise ConfigError("%s: cannot read: %s" % (path, _why(e)))
    try:
        try:
            return f.read()
        finally:
            f.close()
    except Exception as e:  # UnicodeError, OSError
        raise ConfigError("%s: cannot read: %s" % (path, _why(e)))


def _why(e):
    s = getattr(e, "strerror", None)
    if s:
        return s
    s = str(e)
    return s if s else type(e).__name__


def parse_json(text, path):
    try:
        return json.loads(text)
    except ValueError as e:
        raise ConfigError("%s: bad JSON: %s" % (path, e))
    except RuntimeError:  # CPython's RecursionError: [[[[...]]]] thousands deep
        raise ConfigError("%s: bad JSON: nested too deeply" % path)


def load_config(path):
    """The parsed JSON of a meter or bus file."""
    return parse_json(read_text(path), path)


def load_meters(path, clock=None):
    """A JSON meter description (one meter, or {"meters": [...]}) -> list of Meter.
    clock: callable returning seconds, for counters and random walks."""
    return meters_of(load_config(path), path, clock)


def meters_of(cfg, path, clock=None):
    """A parsed description -> list of Meter; errors name `path`. Catalogue meters
    ({"meter": "catalog:NAME"}) are looked up on the host (mbus_ports.catalog)."""
    try:
        if _has_refs(cfg):
            try:
                from mbus_ports import catalog
            except ImportError:
                raise ConfigError("catalogue meters (\"meter\": \"catalog:NAME\") are "
                                  "for the host: compile the file there (mbus-deploy)")
            cfg = catalog.expand(cfg)
        return meters_from_config(cfg, clock)
    except ConfigError as e:
        raise ConfigError("%s: %s" % (path, e))
    except (ValueError, TypeError, KeyError) as e:  # a gap in the model's checks
        raise ConfigError("%s: %s" % (path, e))


def meter_json(cfg):
    """A meter description as JSON text for people: one key per line, one record per
    line (what mbus-decode --to-meter prints)."""
    def one(v):
        return json.dumps(v, ensure_ascii=False)
    lines = []
    keys = list(cfg)
    for i, k in enumerate(keys):
        end = "," if i < len(keys) - 1 else ""
        recs = cfg[k]
        if k == "records" and isinstance(recs, list) and recs:
            lines.append('  "records": [')
            for j, rc in enumerate(recs):
                lines.append("    %s%s" % (one(rc), "," if j < len(recs) - 1 else ""))
            lines.append("  ]" + end)
        else:
            lines.append("  %s: %s%s" % (one(k), one(recs), end))
    return "{\n" + "\n".join(lines) + "\n}\n"


def _has_refs(cfg):
    """Does a description name a catalogue meter ({"meter": ...} in a meter)?"""
    if isinstance(cfg, dict) and isinstance(cfg.get("meters"), list):
        cfg = cfg["meters"]
    if not isinstance(cfg, list):
        cfg = [cfg]
    for m in cfg:
        if isinstance(m, dict) and "meter" in m:
            return True
    return False


def load_clone(path, live=False, text=None):
    """A capture (hex, libmbus -d output or a --trace) in file `path` (or its `text`) ->
    the meter description that serves it again (mbus_core.codec.clone); with `live`,
    counters and random walks from the captured values. ConfigError("PATH: ...")."""
    from mbus_core.codec import clone
    if text is None:
        text = read_text(path)
    try:
        return clone.meter_config(text, live)
    except (ValueError, TypeError) as e:
        raise ConfigError("%s: %s" % (path, e))


def load_replay(path, address=None):
    """A file of captured RSP_UD telegrams in hex -> a Meter answering them verbatim."""
    text = read_text(path)
    try:
        return replay_from_hex(text, address)
    except ConfigError as e:
        raise ConfigError("%s: %s" % (path, e))
    except (ValueError, TypeError) as e:
        raise ConfigError("%s: %s" % (path, e))
