# Live control, what the API shows: a raw copy of each meter made on the line thread
# (raw_meter, meter_config: they read generator state), turned into JSON on the HTTP
# thread (meter_json: the decoding of the records happens there, off the line).
from mbus_core.codec.records import decode_records, ext_end, DecodeError
from mbus_core.codec.vif import medium_name
from mbus_core.generators import Counter, Wander
from mbus_core.meter import manufacturer_text

CI_TEXT = {0x72: "long", 0x7A: "short", 0x78: "none", 0x73: "fixed"}


def _hex(b):
    return " ".join("%02X" % x for x in b)


def _num(v):
    """A number as strict JSON carries it (NaN and infinities as text)."""
    if isinstance(v, float):
        if v != v:
            return "NaN"
        if v in (float("inf"), float("-inf")):
            return "Infinity" if v > 0 else "-Infinity"
        return float("%.12g" % v)   # 123.457, not 123.45700000000001 (float scaling)
    return v


# -- value sources as meter files write them ---------------------------------------------
def source_config(src, pow10=0):
    """A record's value source as a meter file's "value". pow10 < 0: the values in raw
    units (a resolution coarser than 1 has no "resolution" key to carry it)."""
    k = 10 ** pow10 if pow10 < 0 else 1

    def sc(v):
        if k == 1:
            return v
        return v * k if isinstance(v, float) else round(v * k, 12)

    if isinstance(src, Counter):
        return {"counter": {"start": sc(src.reading()), "rate": sc(src.rate)}}
    if isinstance(src, Wander):
        return {"wander": {"min": sc(src.lo), "max": sc(src.hi), "step": sc(src.step),
                           "start": sc(src.x), "seed": src.state}}
    if callable(src):
        src = src()
    if isinstance(src, (bytes, bytearray)):
        return _hex(src)
    return sc(src) if isinstance(src, (int, float)) and not isinstance(src, bool) else src


def record_config(rec):
    """One record as a meter file describes it: raw dif/vif and its value source (or the
    whole record as hex when it is constant bytes or has no VIF)."""
    if isinstance(rec, (bytes, bytearray)):
        return _hex(rec)
    head = getattr(rec, "head", None)
    if head is None or rec.code in (0x0, 0x0F) or head[0] in (0x0F, 0x1F, 0x2F):
        return _hex(rec.encode())
    at = ext_end(head, 1, len(head), head[0] & 0x80, len(head))
    if at < 0 or at >= len(head):
        return _hex(rec.encode())
    out = {"dif": _hex(head[:at]), "vif": _hex(head[at:])}
    pow10 = rec.pow10
    kind = rec.kind
    if kind != "num":   # a raw dif/vif infers only some kinds: name each
        out["type"] = {"bin": "binary", "datetime": "datetime6" if rec.code == 0x6
                       else "datetime"}.get(kind, kind)
        pow10 = 0
    if pow10 > 0:
        out["resolution"] = float("1e-%d" % pow10)
    out["value"] = source_config(rec.source, pow10 if pow10 < 0 else 0)
    if rec.name:
        out["name"] = rec.name
    return out


def _frame(address, app):
    body = bytes((0x08, address)) + bytes(app)
    n = len(body)
    return bytes((0x68, n, n, 0x68)) + body + bytes((sum(body) & 0xFF, 0x16))


def meter_config(m):
    """A Meter as a --bus file entry (the values where they stand now)."""
    if m.replay is not None:
        out = {"address": m.address,
               "replay": [_hex(_frame(m.address, app)) for app in m.replay]}
        if m.name:
            out["name"] = m.name
        return out
    out = {}
    if m.name:
        out["name"] = m.name
    out.update({"address": m.address, "id": m.id,
                "manufacturer": manufacturer_text(m.manufacturer), "version": m.version,
                "medium": m.medium, "status": m.status, "signature": m.signature,
                "ci": CI_TEXT.get(m.ci, "long")})
    if m.strict_repeat:
        out["strict_repeat"] = True
    if m.fabrication is not None:
        out["fabrication"] = m.fabrication
    if m.ci == 0x73:
        f = m.fixed or (0, 0, 0, 0)
        out["fixed"] = {"unit1": f[0], "counter1": f[1], "unit2": f[2], "counter2": f[3]}
        out["records"] = []
    else:
        out["records"] = [record_config(r) for r in m.records]
    if m.alarm:
        out["alarm"] = [_hex(m.alarm)]
    sec = getattr(m, "security", None)
    if sec is not None:
        s = {"mode": sec.mode, "key": bytes(sec.key).hex().upper()}
        if sec.mode == 7:
            s["counter"] = sec.counter
        if sec.clear:
            s["clear"] = sec.clear
        out["security"] = s
    return out


# -- the line thread's copy ---------------------------------------------------------------
def raw_meter(s, ctl):
    """Plain data of slave s and its meter (line thread)."""
    m = s.meter
    recs = []
    if m.replay is None and m.ci != 0x73:
        for rec in m.records:
            if isinstance(rec, (bytes, bytearray)):
                recs.append((bytes(rec), None, None))   # settable: decided off the line
                continue
            try:
                enc = rec.encode()
            except Exception as e:  # a value callback that failed
                enc = "%s: %s" % (type(e).__name__, e)
            src = getattr(rec, "source", None)
            settable = src is not None
            recs.append((enc, source_config(src) if settable else None, settable))
    faults = []
    for f in ctl.faults.faults:
        if f.applies_to(m.address):
            n = ctl.fault_ids.get(f)
            left = ctl.expiry.get(f)
            faults.append({"id": n, "spec": f.spec(), "fired": f.fired,
                           "runtime": n is not None,
                           "expires_in": round(left - ctl.clock(), 1) if left else None})
    return {"address": m.address, "id": m.id, "manufacturer": m.manufacturer,
            "version": m.version, "medium": m.medium, "status": m.status, "name": m.name,
            "present": s.present, "alarm": bytes(m.alarm) if m.alarm else None,
            "ci": m.ci, "replay": m.replay is not None,
            "fixed": m.fixed if m.ci == 0x73 else None,
            "counters": {"requests": s.requests, "replies": s.replies,
                         "repeats": s.repeats, "errors": s.errors,
                         "value_errors": m.errors},
            "records": recs, "faults": faults}


# -- JSON (the HTTP thread) -----------------------------------------------------------
def _record_json(i, enc, source, settable):
    if settable is None:   # hex bytes in the meter file: settable when they decode
        from mbus_ports.control_ops import settable_record
        settable = settable_record(enc) is not None
    out = {"index": i, "settable": settable}
    if isinstance(enc, str):
        out["error"] = enc
        return out
    out["hex"] = _hex(enc)
    try:
        d = decode_records(enc)[0]
    except (DecodeError, ValueError, IndexError):
        return out
    out.update({"quantity": d.quantity, "unit": d.unit, "value": _num(d.value),
                "function": d.function, "storage": d.storage, "tariff": d.tariff,
                "type": d.type_name()})
    if source is not None:
        out["source"] = _num(source) if not isinstance(source, dict) else source
    return out


def meter_json(raw):
    m = dict(raw)
    m["id"] = "%08d" % raw["id"]
    m["manufacturer"] = manufacturer_text(raw["manufacturer"])
    m["medium_code"] = raw["medium"]
    m["medium"] = medium_name(raw["medium"])
    m["ci"] = CI_TEXT.get(raw["ci"], "%02X" % raw["ci"])
    m["alarm"] = _hex(raw["alarm"]) if raw["alarm"] else None
    m["records"] = [_record_json(i, *r) for i, r in enumerate(raw["records"])]
    if raw["fixed"] is not None:
        f = raw["fixed"]
        m["fixed"] = {"unit1": f[0], "counter1": f[1], "unit2": f[2], "counter2": f[3]}
    else:
        del m["fixed"]
    return m
