# Meters in their compiled form -> Meter objects, without the codec. mbus-deploy and
# tools/upy-sim compile a meter description on the host (mbus_core.codec.compile, with the
# checks mbus-slave makes); a board loads the result with this module alone, so that the
# codec's tables and record builder never reach its heap. The form (a dict, JSON on the
# board's filesystem):
#
#   {"mbus_compiled": 1, "source": [bytes, adler32] of the JSON it came from,
#    "meters": [{"address": 2, "id": 23456789, "manufacturer": "TST", "version": 2,
#                "medium": 7, "records": ["4C1300001000", ...,
#                  {"head": "0C13", "code": 12, "pow10": 3,
#                   "counter": [123.456, 0.001]}, ...]}, ...]}
#
# A record is its complete constant bytes (hex), or a record whose value changes: its head
# (DIF..VIFE, hex), data field code, scale (value * 10**pow10 is sent), kind ("num" unless
# said) and value source: "counter": [start, rate] or "wander": [min, max, step, start,
# seed] (mbus_core.generators). Meter keys left out take the Meter defaults; "ci", "fixed"
# ([unit1, counter1, unit2, counter2]), "status", "signature", "fabrication", "name",
# "strict_repeat", "alarm" (class 1 records, hex); a replayed meter has "replay" (the
# captured application data of each telegram, hex) and takes its identity from it.
from mbus_core.meter import Meter
from mbus_core.live_record import Record
from mbus_core.notes import meter_where
from mbus_core.generators import Counter, Wander

FORMAT = 1
MARK = "mbus_compiled"



def _hex_bytes(text):
    """'0C13..' -> bytes, for builds without bytes.fromhex."""
    if len(text) % 2:
        raise ValueError("odd number of hex digits")
    out = bytearray(len(text) // 2)
    i = 0
    while i < len(out):
        out[i] = int(text[2 * i:2 * i + 2], 16)
        i += 1
    return bytes(out)


_unhex = getattr(bytes, "fromhex", None) or _hex_bytes


class CompiledError(ValueError):
    """A compiled meter file that cannot be used: one line naming meter and record."""


def is_compiled(doc):
    return isinstance(doc, dict) and MARK in doc


def meters_from_compiled(doc, clock=None):
    """The compiled form (a dict) -> list of Meter. clock: callable returning seconds,
    for the counters and random walks."""
    if not is_compiled(doc):
        raise CompiledError("not a compiled meter file (no \"%s\" key)" % MARK)
    if doc[MARK] != FORMAT:
        raise CompiledError("compiled meter format %r, this firmware reads %d: compile the "
                            "meter again with this version" % (doc[MARK], FORMAT))
    out = []
    specs = doc.get("meters")
    if not isinstance(specs, list) or not specs:
        raise CompiledError("no meters")
    i = 0
    while i < len(specs):
        out.append(_meter(specs[i], i, clock))
        i += 1
    return out


def _meter(d, index, clock):
    name = d.get("name") if isinstance(d, dict) else None
    where = meter_where(index, name)
    n = 0
    try:
        if "replay" in d:
            from mbus_core.replay import replay_meter   # only for such a meter
            m = replay_meter([_unhex(a) for a in d["replay"]], d.get("address", 0))
            m.name = name
            m.strict_repeat = d.get("strict_repeat", False)
            return m
        fixed = d.get("fixed")
        recs = []
        for r in d.get("records", ()):
            n += 1
            recs.append(_record(r, clock))
        n = 0
        m = Meter(id=d.get("id", 12345678), manufacturer=d.get("manufacturer", "TST"),
                  version=d.get("version", 1), medium=d.get("medium", 0),
                  address=d.get("address", 0), records=recs, status=d.get("status", 0),
                  signature=d.get("signature", 0), fabrication=d.get("fabrication"),
                  ci=d.get("ci", 0x72), fixed=tuple(fixed) if fixed else None, name=name,
                  strict_repeat=d.get("strict_repeat", False))
        if "alarm" in d:
            m.alarm = _unhex(d["alarm"])
        if "security" in d:
            m.security = _security(d["security"])
        return m
    except (ValueError, TypeError, KeyError, IndexError, AttributeError) as e:
        raise CompiledError("%s: %s%s" % (where, "record %d: " % n if n else "",
                                          e if str(e) else type(e).__name__))


def _security(s):
    """{"mode", "key" (hex), "counter", "clear"} -> Security, with the AES block function
    the port registered (mbus_ports.aes: cryptolib on a board)."""
    from mbus_core import security as S
    return S.Security(s["mode"], _unhex(s["key"]), S.default_aes(), counter=s["counter"],
                      clear=s["clear"])


def _record(r, clock):
    if isinstance(r, str):
        return _unhex(r)
    if "counter" in r:
        a = r["counter"]
        src = Counter(a[0], a[1], clock)
    elif "wander" in r:
        a = r["wander"]
        src = Wander(a[0], a[1], a[2], a[3], a[4], clock)
    else:
        raise ValueError("a record is hex, or has a counter or wander")
    if r.get("kind", "num") != "num":
        raise ValueError("only numbers have a counter or a random walk")
    return check_source(Record(_unhex(r["head"]), r["code"], src, r.get("pow10", 0), "num",
                               r.get("name")))


def source_samples(src):
    """The values a generator's record must be able to send, tried at load without
    advancing it (the host's codec uses them too); None for other sources."""
    if isinstance(src, Counter):
        return [src.start, src.rate, src.start + src.rate]
    if isinstance(src, Wander):
        return [src.lo, src.hi, src.step, src.x]
    return None


def check_source(rec):
    """ValueError when a generator's values do not fit its record (a wrapping counter:
    its start only); returns rec. Start-only: the runtime's Record does not check."""
    samples = source_samples(rec.source)
    if samples is not None:
        for v in samples[:1] if rec.range is not None else samples:
            rec.field(v)
    return rec


class Stamp:
    """What a compiled file says about the JSON it came from: [length, Adler-32] of its
    bytes (zlib.adler32), fed in chunks, so that a board can tell, without the codec, a
    hand-edited meter file and the one its compiled file was made of (small ints only)."""

    def __init__(self):
        self.n = 0
        self.a = 1
        self.b = 0

    def add(self, data):
        a = self.a
        b = self.b
        for c in data:
            a += c
            if a >= 65521:
                a -= 65521
            b += a
            if b >= 65521:
                b -= 65521
        self.a = a
        self.b = b
        self.n += len(data)

    def value(self):
        return [self.n, self.b * 65536 + self.a]
