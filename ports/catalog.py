# The catalogue of named real meters: ports/catalog/NAME.json, meter files cloned from
# telegrams captured from real meters (libmbus's test frames, BSD-3-Clause; each file
# names its source in "source" and says what the meter is in "note"). Used as
# `mbus-slave --meter catalog:NAME`, listed by `mbus-slave --list-meters`, and in bus
# files as {"meter": "catalog:NAME", "address": 5, ...}.
import json
import os

from mbus_core.codec.model import ConfigError

FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "catalog")
PREFIX = "catalog:"
HOW_TO_LIST = "mbus-slave --list-meters lists them"


def names():
    """The catalogue's meter names, sorted."""
    try:
        files = os.listdir(FOLDER)
    except OSError:
        return []
    return sorted(n[:-5] for n in files if n.endswith(".json"))


def is_ref(text):
    return isinstance(text, str) and text.startswith(PREFIX)


def load(name):
    """A catalogue meter's description (a fresh dict). `name` with or without the
    "catalog:" prefix; ConfigError (one line) for a name not in the catalogue."""
    if is_ref(name):
        name = name[len(PREFIX):]
    if name not in names():
        raise ConfigError("unknown catalogue meter %r (%s)" % (name, HOW_TO_LIST))
    with open(os.path.join(FOLDER, name + ".json"), encoding="utf-8") as f:
        return json.load(f)


def listing():
    """One line per catalogue meter: its name and its note."""
    rows = []
    for n in names():
        cfg = load(n)
        rows.append((n, cfg.get("note", "")))
    width = max([len(n) for n, _ in rows] + [0])
    return ["%-*s  %s" % (width, n, note) for n, note in rows]


def expand(cfg, live_all=False):
    """A meter or bus description with catalogue references -> one without: each
    {"meter": "catalog:NAME", key: value...} becomes the catalogue meter with those keys
    over it ("live": true makes its values live, see mbus_core.codec.clone.make_live).
    live_all: make every catalogue meter live."""
    if isinstance(cfg, dict) and isinstance(cfg.get("meters"), list):
        out = dict(cfg)
        out["meters"] = [_entry(m, live_all, i) for i, m in enumerate(cfg["meters"])]
        return out
    if isinstance(cfg, list):
        return [_entry(m, live_all, i) for i, m in enumerate(cfg)]
    return _entry(cfg, live_all, 0)


def _entry(mc, live_all, index):
    if not isinstance(mc, dict) or "meter" not in mc:
        return mc
    where = "meter %d" % (index + 1)
    ref = mc["meter"]
    if not is_ref(ref):
        raise ConfigError("%s: meter must be \"catalog:NAME\" (%s), not %r"
                          % (where, HOW_TO_LIST, ref))
    live = mc.get("live", False)
    if not isinstance(live, bool):
        raise ConfigError("%s: live must be true or false" % where)
    try:
        cfg = load(ref)
    except ConfigError as e:
        raise ConfigError("%s: %s" % (where, e))
    for k in mc:
        if k not in ("meter", "live"):
            cfg[k] = mc[k]
    if live or live_all:
        from mbus_core.codec.clone import make_live
        make_live(cfg)
    return cfg

