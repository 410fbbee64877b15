# Meter descriptions (dicts, as parsed from JSON by the caller) -> mbus_core.meter.Meter.
# Values come from constants, callables or small generators; time only from an injected
# clock callable. No I/O here: the port reads the file and adds its name to errors.
from mbus_core.codec import records as R
from mbus_core.codec import vif as vt
from mbus_core import frame as F
from mbus_core import meter as M
from mbus_core.notes import meter_where
from mbus_core.compiled import source_samples
from mbus_core.replay import replay_meter
from mbus_core.codec.datatypes import _shown
from mbus_core.codec.capture import capture_hex, is_reply
from mbus_core.generators import Counter, Wander  # noqa: F401 (part of the model API)


class ConfigError(ValueError):
    """A meter description is wrong. The message is one line naming meter and field."""


METER_KEYS = ("name", "address", "id", "manufacturer", "version", "medium", "status",
              "signature", "fabrication", "records", "replay", "ci", "fixed", "alarm",
              "strict_repeat", "security", "comment", "description", "note", "source",
              "quirks")
RECORD_KEYS = ("quantity", "unit", "value", "type", "function", "storage", "tariff",
               "subunit", "dif", "vif", "vife", "resolution", "name", "comment")
# record keys whose value is text (hex for dif/vif/vife)
TEXT_KEYS = ("quantity", "unit", "type", "dif", "vif", "vife", "name", "comment")
CI_NAMES = (("long", 0x72), ("72", 0x72), ("short", 0x7A), ("7a", 0x7A), ("none", 0x78),
            ("78", 0x78), ("fixed", 0x73), ("73", 0x73))


def _what(v):
    """A JSON value as a message shows it: short, never the whole of a big one."""
    if v is None or isinstance(v, bool):
        return "null" if v is None else ("true" if v else "false")
    if isinstance(v, (list, dict)):
        return "a list" if isinstance(v, list) else "an object"
    return _shown(v) if isinstance(v, str) else repr(v)


def make_value(spec, clock=None):
    """A constant, a callable, or {"counter": {...}} / {"wander": {...}} -> value source."""
    if spec is None or isinstance(spec, (bool, list)):
        raise ValueError("value must be a number, a string or a generator, not %s%s"
                         % (_what(spec), " (write 1 or 0)" if isinstance(spec, bool) else ""))
    if isinstance(spec, dict):
        if len(spec) != 1:
            raise ValueError("a generator is {\"counter\": {...}} or {\"wander\": {...}}")
        for kind in spec:
            args = spec[kind]
        if not isinstance(args, dict):
            raise ValueError("%s: parameters must be an object" % kind)
        for k in args:
            if not isinstance(args[k], (int, float)) or isinstance(args[k], bool):
                raise ValueError("%s: %s must be a number" % (kind, k))
        if kind == "counter":
            for k in args:
                if k not in ("start", "rate"):
                    raise ValueError("counter: unknown key '%s' (known: start, rate)" % k)
            return Counter(args.get("start", 0), args.get("rate", 1), clock)
        if kind == "wander":
            for k in args:
                if k not in ("min", "max", "step", "start", "seed"):
                    raise ValueError("wander: unknown key '%s' (known: min, max, step, "
                                     "start, seed)" % k)
            return Wander(args.get("min", 0), args.get("max", 100), args.get("step", 1),
                          args.get("start"), int(args.get("seed", 1)), clock)
        raise ValueError("unknown generator '%s' (known: counter, wander)" % kind)
    return spec


# -- records ---------------------------------------------------------------------------
def record_from_config(rc, clock=None):
    """One record entry (dict) -> Record. Raises ValueError with a short message."""
    if isinstance(rc, (bytes, bytearray)):
        return bytes(rc)
    if isinstance(rc, str):  # a complete record as hex
        return R.parse_hex(rc)
    if not isinstance(rc, dict):
        raise ValueError("a record must be an object")
    for k in rc:
        if k not in RECORD_KEYS:
            raise ValueError("unknown key '%s' (known: %s)" % (k, ", ".join(RECORD_KEYS)))
    _check_kinds(rc)
    if "value" not in rc and _has_data(rc):
        raise ValueError("a record needs a value (a number, a string or a generator)")
    src = make_value(rc.get("value", 0), clock)
    samples = source_samples(src)
    if samples is None and callable(src):
        samples = [0.001]
    res = rc.get("resolution")
    if res is not None and (not isinstance(res, (int, float)) or isinstance(res, bool)
                            or res <= 0):
        raise ValueError("resolution must be a number > 0")
    return R.make_record(quantity=rc.get("quantity"), unit=rc.get("unit"), value=src,
                         type=rc.get("type"), function=rc.get("function", "instantaneous"),
                         storage=rc.get("storage", 0), tariff=rc.get("tariff", 0),
                         subunit=rc.get("subunit", 0), dif=rc.get("dif"),
                         vif=rc.get("vif"), vife=rc.get("vife"), resolution=res,
                         samples=samples, name=rc.get("name"))


def _check_kinds(rc):
    """Each key's JSON kind, so that no TypeError comes from deeper down."""
    for k in ("storage", "tariff", "subunit"):
        v = rc.get(k, 0)
        if not isinstance(v, int) or isinstance(v, bool) or v < 0:
            raise ValueError("%s must be an integer >= 0" % k)
    for k in TEXT_KEYS:
        v = rc.get(k)
        if v is not None and not isinstance(v, (str, bytes)):
            raise ValueError("%s must be a string, not %s" % (k, _what(v)))
    f = rc.get("function", "")
    if isinstance(f, bool) or not isinstance(f, (str, int)):
        raise ValueError("function must be a name (instantaneous, maximum, minimum, error), "
                         "not %s" % _what(f))


def _has_data(rc):
    """Does the record carry a data field (then it needs a value)? Not with type none, a
    raw DIF of data field 0 or 8, or the filler DIF 2F."""
    if rc.get("type") == "none":
        return False
    dif = rc.get("dif")
    if dif is None:
        return True
    dib = R.parse_hex(dif)
    return not dib or (dib[0] != 0x2F and (dib[0] & 0x0F) not in (0x0, 0x8))


def demo_records(medium):
    """A sensible record set for a medium code."""
    if medium in (0x04, 0x0C, 0x0D, 0x0A, 0x0B):  # heat / cooling
        return [
            {"quantity": "energy", "unit": "kWh", "value": {"counter": {"start": 12345,
                                                                       "rate": 0.01}}},
            {"quantity": "volume", "unit": "m3", "value": {"counter": {"start": 456.7,
                                                                      "rate": 0.001}}},
            {"quantity": "power", "unit": "kW", "value": {"wander": {"min": 2, "max": 12,
                                                                    "step": 0.1}}},
            {"quantity": "volume flow", "unit": "m3/h", "value": 0.35},
            {"quantity": "flow temperature", "unit": "C", "value": {
                "wander": {"min": 55, "max": 75, "step": 0.1}}},
            {"quantity": "return temperature", "unit": "C", "value": {
                "wander": {"min": 35, "max": 45, "step": 0.1}}},
            {"quantity": "temperature difference", "unit": "K", "value": 20.0,
             "resolution": 0.01},
            {"quantity": "on time", "unit": "h", "value": {"counter": {"start": 8760,
                                                                      "rate": 0}}},
        ]
    if medium == 0x02:  # electricity
        return [
            {"quantity": "energy", "unit": "kWh", "value": {"counter": {"start": 2500,
                                                                       "rate": 0.001}}},
            {"quantity": "power", "unit": "W", "value": {"wander": {"min": 100, "max": 3000,
                                                                   "step": 10}}},
            {"quantity": "voltage", "unit": "V", "value": 230},
            {"quantity": "current", "unit": "A", "value": 1.5},
        ]
    return [
        {"quantity": "volume", "unit": "m3", "value": {"counter": {"start": 123.456,
                                                                  "rate": 0.001}}},
        {"quantity": "volume flow", "unit": "m3/h", "value": 0.5},
    ]


# -- identity ------------------------------------------------------------------------------
def _int(cfg, key, lo, hi, default):
    v = cfg.get(key, default)
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, str) and _digits(v.strip()):
            v = int(v.strip())
        else:
            raise ValueError("%s must be an integer %d..%d, got %s" % (key, lo, hi, _what(v)))
    if not lo <= v <= hi:
        raise ValueError("%s must be %d..%d, got %d" % (key, lo, hi, v))
    return v


def _digits(s):
    """Plain ASCII decimal digits only: CPython's isdigit() and int() also take other
    scripts' digits (Arabic-Indic, fullwidth), MicroPython's do not."""
    if not s:
        return False
    for ch in s:
        if not "0" <= ch <= "9":
            return False
    return True


def _bool(cfg, key, where):
    v = cfg.get(key, False)
    if not isinstance(v, bool):
        raise ConfigError("%s: %s must be true or false, got %r" % (where, key, v))
    return v


def _fixed(cfg):
    """CI 73: {"unit1": code, "counter1": n, "unit2": code, "counter2": n}, unit codes
    0..63 per EN 13757-3 (fixed data structure), counters of 8 BCD digits."""
    f = cfg.get("fixed", {})
    if not isinstance(f, dict):
        raise ValueError("fixed must be an object with unit1, counter1, unit2, counter2")
    for k in f:
        if k not in ("unit1", "counter1", "unit2", "counter2"):
            raise ValueError("fixed: unknown key '%s' (known: unit1, counter1, unit2, "
                             "counter2)" % k)
    return (_int(f, "unit1", 0, 63, 0), _int(f, "counter1", 0, 99999999, 0),
            _int(f, "unit2", 0, 63, 0), _int(f, "counter2", 0, 99999999, 0))


def parse_id(v, key="id"):
    if isinstance(v, bool):
        raise ValueError("bad %s %r (want up to 8 decimal digits)" % (key, v))
    if isinstance(v, int):
        if 0 <= v <= 99999999:
            return v
        raise ValueError("bad %s %d (want up to 8 decimal digits)" % (key, v))
    if isinstance(v, str):
        s = v.strip()
        if 1 <= len(s) <= 8 and _digits(s):
            return int(s)
    raise ValueError("bad %s %r (want up to 8 decimal digits)" % (key, v))


def parse_manufacturer(v):
    """Three letters, or the 16-bit code as sent (0..32767: a clone of a meter whose code
    is no three letters)."""
    if isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 0x7FFF:
        return v
    if isinstance(v, str) and len(v) == 3:
        ok = True
        for ch in v.upper():
            if not "A" <= ch <= "Z":
                ok = False
        if ok:
            return v.upper()
    raise ValueError("bad manufacturer %r (want 3 letters A-Z, or a code 0..32767)" % (v,))


def raw_id(v):
    """An ID of 8 hex digits with a non-decimal one ("0500023E", as a decoder shows a
    real meter's non-BCD ID) -> its 4 bytes as sent; None for any other value."""
    if not isinstance(v, str) or len(v.strip()) != 8 or _digits(v.strip()):
        return None
    try:
        b = R.parse_hex(v.strip())
    except ValueError:
        return None
    return bytes((b[3], b[2], b[1], b[0]))


def parse_medium(v):
    if isinstance(v, int) and not isinstance(v, bool):
        if 0 <= v <= 255:
            return v
        raise ValueError("medium must be 0..255, got %d" % v)
    if isinstance(v, str):
        c = vt.medium_code(v)
        if c >= 0:
            return c
        s = v.strip().lower()
        if s.startswith("0x"):
            try:
                c = int(s[2:], 16)
                if 0 <= c <= 255:
                    return c
            except ValueError:
                pass
    raise ValueError("bad medium %r (a name such as water, heat, electricity, gas, warm "
                     "water, cooling, other; or a code 0..255; every name: docs/meters.md)"
                     % (v,))


_where = meter_where


def meter_from_config(cfg, index=0, clock=None):
    """One meter description (dict) -> Meter. index (0-based) names the meter in errors
    ("meter 1" is the first)."""
    name = None
    if isinstance(cfg, dict):
        name = cfg.get("name")
        if name is not None and not isinstance(name, str):
            raise ConfigError("%s: name must be a string, not %s"
                              % (_where(index, None), _what(name)))
    where = _where(index, name)
    if not isinstance(cfg, dict):
        raise ConfigError("%s: a meter must be an object" % where)
    for k in cfg:
        if k not in METER_KEYS:
            raise ConfigError("%s: unknown key '%s' (known: %s)"
                              % (where, k, ", ".join(METER_KEYS)))
    try:
        address = _int(cfg, "address", 0, 250, 0)
    except ValueError as e:
        raise ConfigError("%s: %s" % (where, e))
    if "replay" in cfg:
        for k in cfg:
            if k not in ("replay", "address", "name", "strict_repeat", "comment",
                         "description", "quirks"):
                raise ConfigError("%s: '%s' cannot be used with 'replay' (the identity "
                                  "comes from the telegram)" % (where, k))
        text = cfg["replay"]
        if isinstance(text, list) and all(isinstance(t, str) for t in text):
            text = "\n".join(text)
        if not isinstance(text, str):
            raise ConfigError("%s: replay must be hex text (or a list of lines)" % where)
        try:
            m = replay_from_hex(text, address)
        except ConfigError as e:
            raise ConfigError("%s: replay: %s" % (where, e))
        m.name = name
        m.strict_repeat = _bool(cfg, "strict_repeat", where)
        _quirks(m, cfg, where)
        return m
    try:
        rawid = raw_id(cfg.get("id"))
        ident = parse_id(cfg.get("id", 12345678)) if rawid is None else 0
        man = parse_manufacturer(cfg.get("manufacturer", "TST"))
        version = _int(cfg, "version", 0, 255, 1)
        medium = parse_medium(cfg.get("medium", 0))
        status = _int(cfg, "status", 0, 255, 0)
        signature = _int(cfg, "signature", 0, 0xFFFF, 0)
        fab = cfg.get("fabrication")
        if fab is not None:
            fab = parse_id(fab, "fabrication")
        ci = 0x72
        if "ci" in cfg:
            c = cfg["ci"]
            ci = -1
            for n, code in CI_NAMES:
                if (isinstance(c, str) and c.strip().lower() == n) or c == code:
                    ci = code
            if ci < 0:
                raise ValueError("bad ci %r (known: long/72, short/7A, none/78, fixed/73)"
                                 % (c,))
        fixed = _fixed(cfg) if ci == 0x73 else None
        if "fixed" in cfg and ci != 0x73:
            raise ValueError("'fixed' goes with \"ci\": \"fixed\" only")
    except ValueError as e:
        raise ConfigError("%s: %s" % (where, e))
    recs_cfg = cfg.get("records")
    if recs_cfg is None:
        recs_cfg = demo_records(medium)
    if not isinstance(recs_cfg, list):
        raise ConfigError("%s: records must be a list" % where)
    recs = _records_from_config(recs_cfg, where, "record", clock)
    has_fab = False
    for rec in recs:
        head = rec if isinstance(rec, bytes) else rec.head
        if R._vif_of(head) == 0x78:
            has_fab = True
    if fab is not None and not has_fab:
        recs.append(R.make_record("fabrication number", value=fab))
    try:
        m = M.Meter(id=ident, manufacturer=man, version=version, medium=medium,
                    address=address, records=recs, status=status, signature=signature,
                    fabrication=fab, ci=ci, fixed=fixed, name=name,
                    strict_repeat=_bool(cfg, "strict_repeat", where))
    except ValueError as e:
        raise ConfigError("%s: %s" % (where, e))
    if rawid is not None:
        m.set_raw_id(rawid)
    if "alarm" in cfg:
        m.alarm = _alarm_from_config(cfg["alarm"], where, clock)
    if "security" in cfg:
        try:
            m.security = security_from_config(cfg["security"], ci)
        except ValueError as e:
            raise ConfigError("%s: security: %s" % (where, e))
        m.invalidate()
    check_alarm_room(m, m.alarm, where)
    _quirks(m, cfg, where)
    return m


def _quirks(m, cfg, where):
    """"quirks": {...} kept as given; the host checks and serves them (ports/quirks.py)."""
    q = cfg.get("quirks")
    if q is not None and not isinstance(q, dict):
        raise ConfigError("%s: quirks must be an object, as in {\"sleep\": 30}" % where)
    m.quirks = q


def security_from_config(spec, ci=0x72, aes=None):
    """{"mode": 5 or 7, "key": "32 hex digits"[, "counter": N]} -> Security (mode 0:
    None). `aes`: the AES-128 block function factory (default: the one the port
    registered with mbus_core.security.set_default_aes)."""
    from mbus_core import security as S
    if not isinstance(spec, dict):
        raise ValueError("must be an object: {\"mode\": 5, \"key\": \"<32 hex digits>\"}")
    for k in spec:
        if k not in ("mode", "key", "counter", "clear", "comment"):
            raise ValueError("unknown key '%s' (known: mode, key, counter, clear)" % k)
    mode = spec.get("mode")
    if isinstance(mode, bool) or mode not in (0, 5, 7):
        raise ValueError("mode must be 5 (profile A), 7 (profile B) or 0 (none), not %r"
                         % (mode,))
    if mode == 0:
        return None
    if not isinstance(spec.get("key"), str):
        raise ValueError("needs \"key\": 32 hex digits (AES-128)")
    key = S.parse_key(spec["key"])
    counter = spec.get("counter", 0)
    if isinstance(counter, bool) or not isinstance(counter, int) or \
            not 0 <= counter <= 0xFFFFFFFF or (counter and mode != 7):
        raise ValueError("counter (mode 7 only) must be 0..4294967295")
    clear = spec.get("clear", 0)
    if isinstance(clear, bool) or not isinstance(clear, int) or not 0 <= clear <= 250:
        raise ValueError("clear (how many of the last records go unencrypted) must be "
                         "0..250")
    if ci != 0x72:
        raise ValueError("an encrypted meter needs \"ci\": \"long\" (CI 72)")
    if aes is None:   # what the port registered (mbus_ports.aes does on import)
        aes = S.default_aes()
    return S.Security(mode, key, aes, counter=counter, clear=clear)


def _records_from_config(lst, where, label, clock):
    out = []
    for i, rc in enumerate(lst):
        try:
            out.append(record_from_config(rc, clock))
        except ValueError as e:
            raise ConfigError("%s: %s %d: %s" % (where, label, i + 1, e))
    return out


def _alarm_from_config(alarm, where, clock):
    """"alarm": [records] -> the class 1 data a REQ_UD1 gets (the ACD bit is set in every
    RSP_UD until a master fetched it)."""
    if not isinstance(alarm, list) or not alarm:
        raise ConfigError("%s: alarm must be a non-empty list of records" % where)
    parts = []
    n = 0
    for rec in _records_from_config(alarm, where, "alarm record", clock):
        n += 1
        try:
            parts.append(rec if isinstance(rec, bytes) else rec.encode())
        except ValueError as e:
            raise ConfigError("%s: alarm record %d: %s" % (where, n, e))
    data = b"".join(parts)
    if len(data) > M.MAX_USER_DATA - 12:
        raise ConfigError("%s: alarm records take %d bytes, one telegram holds %d"
                          % (where, len(data), M.MAX_USER_DATA - 12))
    return data


def check_alarm_room(meter, alarm, where):
    """ConfigError when the class 1 data `alarm` does not fit the one telegram a REQ_UD1
    gets from this meter (encrypted: whole blocks, at most 15, after 2F 2F)."""
    if not alarm:
        return
    room = M.MAX_USER_DATA - 12
    if meter.security is not None:
        room = meter.security.record_room(room)
    if len(alarm) > room:
        raise ConfigError("%s: alarm records take %d bytes, one %stelegram holds %d"
                          % (where, len(alarm), "encrypted " if meter.security else "", room))


def meters_from_config(cfg, clock=None):
    """One meter dict, or {"meters": [...]} -> list of Meter."""
    if isinstance(cfg, dict) and "meters" in cfg:
        for k in cfg:
            if k not in ("meters", "comment", "description"):
                raise ConfigError("bus: unknown key '%s' (known: meters, comment)" % k)
        cfg = cfg["meters"]
        if not isinstance(cfg, list):
            raise ConfigError("bus: meters must be a list")
    if isinstance(cfg, list):
        return [meter_from_config(mc, i, clock) for i, mc in enumerate(cfg)]
    return [meter_from_config(cfg, 0, clock)]


# -- captured telegrams ----------------------------------------------------------------
def parse_frames(text):
    """Hex text (bytes with or without spaces, one or more frames, any lines) -> list of
    frames (bytes): E5, short 10..16, or long/control 68 L L 68 .. CS 16, each checked by
    the runtime's frame parser (mbus_core.frame), one after the other with nothing between."""
    try:
        data = R.parse_hex(text)
    except ValueError as e:
        raise ConfigError(str(e))
    if not data:
        raise ConfigError("no bytes in the hex text")
    parser = F.FrameParser()
    out = []
    i = 0
    n = 0
    while i < len(data):
        n += 1
        b = data[i]
        if b == F.ACK:
            size = 1
        elif b == F.SHORT_START:
            size = 5
        elif b == F.LONG_START:
            if i + 4 > len(data):
                raise ConfigError("frame %d: cut off in the header" % n)
            size = data[i + 1] + 6
        else:
            raise ConfigError("frame %d: bad start byte 0x%02X at offset %d (want 68)"
                              % (n, b, i))
        if i + size > len(data):
            raise ConfigError("frame %d: %d bytes announced, only %d there"
                              % (n, size, len(data) - i))
        frame = data[i:i + size]
        if size > 1:
            if parser.feed(frame) != size or not parser.kind or parser.errors:
                raise ConfigError("frame %d: %s" % (n, _frame_fault(frame)))
        out.append(frame)
        i += size
    return out


def _frame_fault(f):
    """What is wrong with a frame the frame parser refused, in words."""
    if f[0] == F.LONG_START and (f[2] != f[1] or f[3] != F.LONG_START or f[1] < 3):
        return "bad header (68 L L 68 with equal L >= 3 wanted)"
    at = len(f) - 2
    cs = F.checksum(f, 1 if f[0] == F.SHORT_START else 4, at)
    if f[at] != cs:
        return "bad checksum 0x%02X (computed 0x%02X)" % (f[at], cs)
    return "bad stop byte 0x%02X (want 16)" % f[at + 1]


def replay_from_hex(text, address=None):
    """Captured RSP_UD telegram(s) -> a Meter answering them verbatim. The text is hex, or
    a trace (libmbus's -d output, mbus-slave --trace): the meter's telegrams are its long
    frames from a slave; the master's requests and E5s around them are left out."""
    frames = parse_frames(capture_hex(text))
    apps = [f[6:len(f) - 2] for f in frames if is_reply(f)]
    if not apps:
        raise ConfigError("no telegram from a meter (a long frame 68 L L 68 08 ...) in the "
                          "capture")
    if address is not None and not (0 <= address <= 250):
        raise ConfigError("address must be 0..250")
    return replay_meter(apps, address)
