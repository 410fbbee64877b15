# A captured RSP_UD readout -> an editable meter description (a dict; the host writes it
# as JSON) that serves the same telegrams byte for byte, the access number aside.
# Every record keeps its exact DIF/DIFE/VIF/VIFE coding (raw "dif"/"vif" and the value as
# sent); what no value can reproduce stays a complete record in hex. make_live() turns
# the captured energy/volume/mass values into counters and temperatures into random walks.
# Host side: the codec (no I/O; the caller reads the file and adds its name to errors).
from mbus_core.codec import model
from mbus_core.codec import records as R
from mbus_core.codec import vif as vt
from mbus_core.codec.capture import capture_hex, is_reply
from mbus_core.codec.datatypes import hexstr
from mbus_core.meter import manufacturer_spec

ConfigError = model.ConfigError
DATA_CIS = {0x72: "long", 0x7A: "short", 0x78: "none", 0x73: "fixed"}
COUNTED = ("Energy", "Volume", "Mass")       # quantities that grow: counters
# how fast a live counter grows, in libmbus' units per second: 1 kW, 0.5 m3/h, 500 kg/h
RATES = {"Wh": 1000 / 3600.0, "J": 1000.0, "m^3": 0.5 / 3600, "kg": 500 / 3600.0}
WANDER_SPAN = 2.0    # a live temperature moves within +-2 K of the captured value
WANDER_STEP = 0.1    # by up to 0.1 K a second


# -- the capture -------------------------------------------------------------------------
def readout(text):
    """The first readout in a capture: its telegrams up to the first one that does not
    end with DIF 1F (more records follow), as [(frame number, application data from the
    CI on, decoded)], and their C fields. ConfigError, one line, when the capture holds
    no RSP_UD with data."""
    frames = model.parse_frames(capture_hex(text))
    replies = [(i + 1, f) for i, f in enumerate(frames) if is_reply(f)]
    if not replies:
        raise ConfigError("no RSP_UD in the capture (a long frame 68 L L 68 08 ... from a "
                          "meter): %d frame(s), none from a meter" % len(frames))
    out = []
    for n, f in replies:
        app = bytes(f[6:len(f) - 2])
        ci = app[0]
        if ci == 0x70:
            raise ConfigError("frame %d: an application error (CI 70), not an RSP_UD with "
                              "data" % n)
        if ci not in DATA_CIS:
            raise ConfigError("frame %d: CI %02X cannot be cloned (72, 7A, 78 or 73 can; "
                              "--replay serves it verbatim)" % (n, ci))
        try:
            decoded = R.decode_user_data(app)
        except ValueError as e:
            raise ConfigError("frame %d: not a well-formed telegram: %s" % (n, e))
        if out and ci != out[0][1][0]:
            raise ConfigError("frame %d: CI %02X after CI %02X: not one meter's readout"
                              % (n, ci, out[0][1][0]))
        out.append((n, app, decoded, f[4]))
        recs = decoded["records"]
        if not recs or recs[-1].special != "more":
            break
    _same_meter(out)
    return [t[:3] for t in out], [t[3] for t in out]


def _same_meter(tels):
    first = tels[0]
    if first[1][0] != 0x72:
        return
    for n, app, _, _ in tels[1:]:
        if app[1:9] != first[1][1:9]:
            raise ConfigError("frame %d comes from another meter than frame %d (ID, "
                              "manufacturer, version or medium differ)" % (n, first[0]))


# -- identity ------------------------------------------------------------------------------
def _identity(app, decoded, cfg):
    ci = app[0]
    if ci == 0x72:
        h = decoded["header"]
        cfg["id"] = h["id"]            # 8 digits as sent; hex digits when not BCD
        man = h["manufacturer_code"]
        if man > 0x7FFF:
            raise ConfigError("manufacturer code %04X has bit 15 set: it cannot be "
                              "cloned; --replay serves it verbatim" % man)
        cfg["manufacturer"] = manufacturer_spec(man)
        cfg["version"] = h["version"]
        cfg["medium"] = _medium(h["medium"])
    cfg["ci"] = DATA_CIS[ci]
    if ci in (0x72, 0x7A):
        h = decoded["header"]
        cfg["status"] = h["status"]
        cfg["signature"] = h["signature"]
    if ci == 0x73:
        h = decoded["header"]
        fx = decoded["fixed"]
        if h["status"] & 0x80:
            raise ConfigError("fixed data (CI 73) with binary counters (status bit 7) "
                              "cannot be cloned; --replay serves it verbatim")
        cfg["id"] = h["id"]
        cfg["medium"] = _medium(h["medium"])
        cfg["status"] = h["status"]
        cfg["fixed"] = {"unit1": fx["unit1"], "counter1": fx["counter1"],
                        "unit2": fx["unit2"], "counter2": fx["counter2"]}


MEDIA = ("other", "oil", "electricity", "gas", "heat", "heat: inlet", "steam",
         "warm water", "hot water", "water", "cold water", "dual water",
         "heat cost allocator", "compressed air", "cooling", "cooling: inlet",
         "heat / cooling", "bus/system", "pressure")


def _medium(code):
    """The medium as a short name where one says it exactly, else its code."""
    for name in MEDIA:
        if vt.medium_code(name) == code:
            return name
    return code


# -- records -------------------------------------------------------------------------------
def _kind_type(rec):
    """The "type" a raw record needs for its value (None: the DIF and VIF tell)."""
    code = rec.code
    if code == 0x0D and isinstance(rec.raw, str):
        return "text"
    if not isinstance(rec.raw, str):
        return None
    if code == 0x2:
        return "date"
    if code in (0x4, 0x6):
        return "datetime"
    if code == 0x3:
        return "time"
    return None


def _encodes(rc, want):
    try:
        got = model.record_from_config(rc)
        got = got if isinstance(got, bytes) else got.encode()
    except ValueError:
        return False
    return got == want


def _plain(v):
    """A number as JSON keeps it exactly, or None (NaN, infinity)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        return None
    if isinstance(v, float) and (v != v or v in (float("inf"), float("-inf"))):
        return None
    return v


def record_config(rec):
    """One decoded record -> its meter-file entry: {"dif", "vif", "value"[, "type"],
    "comment"} when that encodes to the captured bytes, else the record in hex."""
    want = rec.encoded()
    dib = bytes((rec.dif,)) + rec.dife
    if rec.special == "filler":
        return {"dif": "2F"}
    if rec.special:
        what = ("more records follow in the next telegram" if rec.special == "more"
                else "manufacturer-specific data")
        return {"dif": "%02X" % rec.dif, "value": hexstr(rec.data), "comment": what}
    rc = {"dif": hexstr(dib), "vif": hexstr(rec.head[len(dib):])}
    value = _plain(rec.raw)
    if rec.code not in (0x0, 0x8) and value is not None:
        rc["value"] = value
        t = _kind_type(rec)
        if t is not None:
            rc["type"] = t
    if (value is None and rec.code not in (0x0, 0x8)) or not _encodes(rc, want):
        return hexstr(want)
    rc["comment"] = describe(rec)
    return rc


def describe(rec):
    """What a record holds, for the reader of the meter file."""
    parts = [rec.quantity or "?"]
    if rec.function != "Instantaneous value":
        parts.append(rec.function.lower())
    for label, n in (("storage", rec.storage), ("tariff", rec.tariff),
                     ("subunit", rec.subunit)):
        if n:
            parts.append("%s %d" % (label, n))
    head = ", ".join(parts)
    v = rec.value
    if isinstance(v, float):
        v = "%.10g" % v
    if v is None:
        return head
    unit = rec.unit if rec.unit not in ("", "-") else ""
    return "%s: %s%s" % (head, v, " " + unit if unit else "")


# -- the meter -----------------------------------------------------------------------------
def meter_config(text, live=False, address=None):
    """Captured RSP_UD telegram(s) (hex, libmbus -d output or a --trace) -> a meter
    description (dict) that serves them again, checked here byte for byte."""
    tels, c_fields = readout(text)
    app0, dec0 = tels[0][1], tels[0][2]
    cfg = {"comment": _comment(tels, c_fields)}
    if address is None:
        address = captured_address(text)
    cfg["address"] = 0 if address is None else address
    _identity(app0, dec0, cfg)
    recs = []
    for _, app, decoded in tels:
        recs.extend(record_config(r) for r in decoded["records"])
    fab = _fabrication(recs)
    if fab is not None:
        cfg["fabrication"] = fab
    if app0[0] != 0x73:
        cfg["records"] = recs
    check(cfg, [app for _, app, _ in tels])
    if live:
        make_live(cfg)
    return cfg


def captured_address(text):
    """The primary address the meter answered with in the capture (None: not 0..250)."""
    frames = model.parse_frames(capture_hex(text))
    for f in frames:
        if is_reply(f):
            return f[5] if f[5] <= 250 else None
    return None


def _comment(tels, c_fields):
    access = ", ".join("%d" % app[1 + (8 if app[0] == 0x72 else 0)]
                       for _, app, _ in tels if app[0] in (0x72, 0x7A))
    n = len(tels)
    flags = ""
    if any(c & 0x30 for c in c_fields):   # link state, not the meter's data
        flags = "; C field %s (ACD/DFC bits: not cloned)" % ", ".join(
            "%02X" % c for c in c_fields)
    return ("cloned from a captured readout (%d telegram%s%s%s); values are the captured "
            "ones: edit them or give a value {\"counter\": ...} / {\"wander\": ...}"
            % (n, "s" if n > 1 else "", "; access number %s" % access if access else "",
               flags))


def _fabrication(recs):
    """The fabrication number of a DIF 0C VIF 78 record (enhanced selection)."""
    for rc in recs:
        if isinstance(rc, dict) and rc.get("dif") == "0C" and rc.get("vif") == "78" \
                and isinstance(rc.get("value"), int) and 0 <= rc["value"] <= 99999999:
            return rc["value"]
    return None


def check(cfg, apps):
    """The meter the description makes writes the captured telegrams (access number
    aside); ConfigError naming the first byte that differs otherwise."""
    m = model.meter_from_config(cfg)
    m.refresh()
    if m.telegram_count() != len(apps):
        raise ConfigError("the clone lays out %d telegram(s), the capture has %d"
                          % (m.telegram_count(), len(apps)))
    buf = bytearray(300)
    for i, app in enumerate(apps):
        at = _ACCESS_AT.get(app[0])
        access = app[at] if at is not None else 0
        n = m.write_telegram(i, buf, 0, access)
        got = bytes(buf[:n])
        if got != app:
            k = 0
            while k < min(len(got), len(app)) and got[k] == app[k]:
                k += 1
            raise ConfigError("the clone differs from telegram %d at byte %d of its "
                              "application data" % (i + 1, k))


_ACCESS_AT = {0x72: 9, 0x7A: 1, 0x73: 5}


# -- live values ---------------------------------------------------------------------------
def make_live(cfg):
    """In a meter description with raw records (a clone, a catalogue meter): the current
    energy, volume and mass values become counters that grow from the captured value, the
    temperatures random walks around it. Returns how many records were changed."""
    changed = 0
    for k, rc in enumerate(cfg.get("records") or []):
        live = _live_value(rc, k + 1)
        if live is not None:
            rc["value"] = live
            kind = "counter" if "counter" in live else "random walk"
            rc["comment"] = "%s (captured; live: a %s)" % (rc.get("comment", ""), kind)
            changed += 1
    return changed


def _live_value(rc, seed):
    if not isinstance(rc, dict) or "dif" not in rc or "vif" not in rc or "type" in rc:
        return None
    v = rc.get("value")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    try:
        rec = model.record_from_config(rc)
        dec = R.decode_records(rec.encode() if not isinstance(rec, bytes) else rec)[0]
    except ValueError:
        return None
    info = vt.vif_info(dec.vif, dec.vife) if dec.text_unit is None else None
    if info is None or dec.function != "Instantaneous value" or dec.subunit:
        return None
    quantity, unit, factor = info
    whole = dec.code != 0x5
    if quantity in COUNTED and dec.storage == 0 and unit in RATES:
        rate = RATES[unit] / factor
        return {"counter": {"start": v, "rate": float("%.6g" % rate)}}
    if "temperature" in quantity.lower() and dec.storage == 0:
        span = _raw(WANDER_SPAN / factor, whole)
        step = _raw(WANDER_STEP / factor, whole)
        return {"wander": {"min": v - span, "max": v + span, "step": step, "start": v,
                           "seed": seed}}
    return None


def _raw(x, whole):
    """A span or step in the record's raw units: at least one step of the coding."""
    if whole:
        return max(1, int(x + 0.5))
    return float("%.6g" % x)

