# Meters -> their compiled form (see mbus_core.compiled, which loads it on a board without
# the codec). The meters come from the one validation path (mbus_core.codec.model
# meters_from_config, through mbus_ports.config.load_meters for a file), so a compiled
# file holds only what mbus-slave would serve. A dict: the caller writes it as JSON.
from mbus_core import compiled as C
from mbus_core.codec.datatypes import hexstr
from mbus_core.codec.model import ConfigError, meters_from_config
from mbus_core.generators import Counter, Wander
from mbus_core.notes import meter_where
from mbus_core.meter import CI_LONG, manufacturer_spec


def _hex(b):
    return hexstr(b).replace(" ", "")


def compile_meters(meters, source=None):
    """list of Meter -> the compiled form. source: mbus_core.compiled.Stamp().value() of
    the JSON file they came from (a board compares it with its /meter.json)."""
    out = {C.MARK: C.FORMAT}
    if source is not None:
        out["source"] = list(source)
    out["meters"] = [compile_meter(m, i) for i, m in enumerate(meters)]
    return out


def compile_config(cfg, source=None):
    """A meter description (dict, as parsed from JSON) -> the compiled form; ConfigError
    as meters_from_config raises it."""
    return compile_meters(meters_from_config(cfg), source)


def compile_meter(m, index=0):
    d = {"address": m.address}
    sec = getattr(m, "security", None)
    if sec is not None:   # the key goes to the board, as it is in every real meter
        d["security"] = {"mode": sec.mode, "key": _hex(sec.key), "counter": sec.counter,
                         "clear": sec.clear}
    if m.name is not None:
        d["name"] = m.name
    if m.strict_repeat:
        d["strict_repeat"] = True
    if m.replay is not None:
        d["replay"] = [_hex(a) for a in m.replay]
        return d
    d["id"] = m.id
    d["manufacturer"] = manufacturer_spec(m.manufacturer)
    for key, default in (("version", 1), ("medium", 0), ("status", 0), ("signature", 0)):
        v = getattr(m, key)
        if v != default:
            d[key] = v
    if m.fabrication is not None:
        d["fabrication"] = m.fabrication
    if m.ci != CI_LONG:
        d["ci"] = m.ci
    if m.fixed is not None:
        d["fixed"] = list(m.fixed)
    if m.alarm is not None:
        d["alarm"] = _hex(m.alarm)
    recs = []
    for j, rec in enumerate(m.records):
        try:
            recs.append(compile_record(rec))
        except ValueError as e:
            raise ConfigError("%s: record %d: %s" % (meter_where(index, m.name), j + 1, e))
    d["records"] = recs
    return d


def compile_record(rec):
    """A record -> its hex bytes (a constant), or {head, code, pow10, kind, name, and a
    counter or wander}."""
    if isinstance(rec, (bytes, bytearray)):
        return _hex(rec)
    if not rec.dynamic:
        return _hex(rec.encode())
    src = getattr(rec, "source", None)
    if isinstance(src, Counter):
        spec = ("counter", [src.start, src.rate])
    elif isinstance(src, Wander):
        spec = ("wander", [src.lo, src.hi, src.step, src.x, src.state])
    else:
        raise ValueError("its value comes from a callable: only constants, counters and "
                         "random walks can be compiled")
    d = {"head": _hex(rec.head), "code": rec.code}
    if rec.pow10:
        d["pow10"] = rec.pow10
    if rec.kind != "num":
        d["kind"] = rec.kind
    if rec.name is not None:
        d["name"] = rec.name
    d[spec[0]] = spec[1]
    return d
