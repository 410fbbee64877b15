# Data records (EN 13757-3): encode a record from a description, decode the record
# area of a telegram. Runs unchanged on CPython and MicroPython.
#
#   TypedRecord       one record with a current value of any kind: .encode() -> bytes
#   make_record(...)  a Record from quantity/unit names or raw DIF/VIF bytes
#   decode_records(data) -> [Decoded]   the record area after the header
#   decode_user_data(app_data) -> dict  from the CI byte on (72, 7A, 78, 73, 70)
from mbus_core.codec import datatypes as dt
from mbus_core.codec.datatypes import parse_hex, encode_data  # noqa: F401
from mbus_core.fields import scale_value
from mbus_core.live_record import Record
from mbus_core.compiled import check_source
from mbus_core.meter import manufacturer_text
from mbus_core.codec import vif as vt

FUNCTIONS = (("instantaneous", 0), ("maximum", 1), ("minimum", 2), ("error", 3),
             ("instant", 0), ("actual", 0), ("max", 1), ("min", 2), ("value during error", 3))
FUNCTION_NAMES = ("Instantaneous value", "Maximum value", "Minimum value",
                  "Value during error state")
MAX_DIFE = 10
MAX_VIFE = 10
MAX_TEXT_VIF = 128


class TypedRecord(Record):
    """A record of any kind (numbers, dates, times, text, binary data): the runtime's
    Record sends numbers only, so that a board needs no date or text codings. A
    generator's range is checked here (the runtime's Record leaves it to the loader)."""

    def __init__(self, head, code, value=0, pow10=0, kind="num", name=None):
        Record.__init__(self, head, code, value, pow10, kind, name)
        check_source(self)

    def field(self, value):
        return encode_data(self.code, self.kind, value, self.pow10)


class DecodeError(ValueError):
    pass


# -- the DIF/DIFE block ----------------------------------------------------------------
def function_code(name):
    if isinstance(name, int):
        if 0 <= name <= 3:
            return name
        raise ValueError("function must be 0..3")
    n = name.strip().lower()
    for f, c in FUNCTIONS:
        if f == n:
            return c
    raise ValueError("unknown function %r (known: instantaneous, maximum, minimum, error)"
                     % name)


def _bits(v):
    n = 0
    while v:
        n += 1
        v >>= 1
    return n


def build_dib(code, function=0, storage=0, tariff=0, subunit=0, min_dife=0):
    """DIF (+ DIFEs) for data field `code` (0..15)."""
    if storage < 0 or tariff < 0 or subunit < 0:
        raise ValueError("storage, tariff and subunit must be >= 0")
    rest = storage >> 1
    n = (_bits(rest) + 3) // 4
    t = (_bits(tariff) + 1) // 2
    if t > n:
        n = t
    u = _bits(subunit)
    if u > n:
        n = u
    if min_dife > n:
        n = min_dife
    if n > MAX_DIFE:
        raise ValueError("storage %d / tariff %d / subunit %d need more than 10 DIFEs"
                         % (storage, tariff, subunit))
    out = bytearray(1 + n)
    out[0] = (code & 0x0F) | ((function & 3) << 4) | ((storage & 1) << 6) | (0x80 if n else 0)
    i = 0
    while i < n:
        b = (rest & 0x0F) | ((tariff & 3) << 4) | ((subunit & 1) << 6)
        rest >>= 4
        tariff >>= 2
        subunit >>= 1
        if i < n - 1:
            b |= 0x80
        out[1 + i] = b
        i += 1
    return bytes(out)


def dib_fields(dif, dife):
    """(function, storage, tariff, subunit) of a DIF and its DIFE bytes."""
    storage = (dif >> 6) & 1
    tariff = 0
    subunit = 0
    sbit = 1
    tbit = 0
    ubit = 0
    for b in dife:
        storage |= (b & 0x0F) << sbit
        tariff |= ((b >> 4) & 3) << tbit
        subunit |= ((b >> 6) & 1) << ubit
        sbit += 4
        tbit += 2
        ubit += 1
    return (dif >> 4) & 3, storage, tariff, subunit


# -- choosing the VIF for a quantity and unit ------------------------------------------
def _fits(code, raw):
    if code in (0x1, 0x2, 0x3, 0x4, 0x6, 0x7):
        lo, hi = dt.int_range(dt.DATA_LEN[code])
        return lo <= raw <= hi
    if code in (0x9, 0xA, 0xB, 0xC, 0xE):
        n = 2 * dt.DATA_LEN[code]
        if raw < 0:
            return -raw < 10 ** (n - 1)
        return raw < 10 ** n
    return True


def _is_whole(v, pow10):
    if not isinstance(v, (int, float)):  # before v * 10**p: "lots" * 10**6 is a string
        raise ValueError("value %r is not a number" % (v,))
    if isinstance(v, int):
        return pow10 >= 0 or v % (10 ** -pow10) == 0
    x = v * 10 ** pow10 if pow10 >= 0 else v / (10 ** -pow10)
    r = scale_value(x, 0)
    return abs(x - r) <= 1e-9 * (abs(x) if abs(x) > 1 else 1)


def _cands(codes, primary_only):
    out = []
    for prefix, first, e0, count in codes:
        if primary_only and prefix:
            continue
        n = 0
        while n < count:
            out.append((prefix + bytes((first + n,)), e0 + n))
            n += 1
    return out  # ascending exponent within a run


def choose_code(codes, unit_pow, samples, code, resolution=None):
    """Pick (vif bytes, pow10) for a scaled quantity; raw = value * 10**pow10.
    codes: the family's runs, unit_pow: power of ten of the author's unit (in the
    family's base unit), samples: example values in the author's unit. Among the VIFs
    that keep every sample whole and in range, the coarsest one not coarser than the
    author's unit wins (else the finest coarser one); primary VIFs before FB/FD ones.
    With a resolution (in the author's unit) the VIF of that resolution is taken."""
    if resolution is not None:
        for primary in (True, False):
            for vbytes, e in _cands(codes, primary):
                p = unit_pow - e
                if _is_whole(resolution, p) and not _is_whole(resolution, p - 1):
                    return vbytes, p
        raise ValueError("no VIF has a resolution of %r" % (resolution,))
    for primary in (True, False):
        below = None
        above = None
        for vbytes, e in _cands(codes, primary):
            p = unit_pow - e
            ok = True
            for s in samples:
                if not _is_whole(s, p) or (code != 0x5 and not _fits(code, scale_value(s, p))):
                    ok = False
                    break
            if not ok:
                continue
            if e <= unit_pow:
                if below is None or e > below[2]:
                    below = (vbytes, p, e)
            elif above is None or e < above[2]:
                above = (vbytes, p, e)
        best = below or above
        if best is not None:
            return best[0], best[1]
    # no exponent makes the value whole: round at the finest one, if it fits there
    vbytes, e = _cands(codes, True)[0] if _cands(codes, True) else _cands(codes, False)[0]
    p = unit_pow - e
    for s in samples:
        if code != 0x5 and not _fits(code, scale_value(s, p)):
            raise ValueError("value %r out of range for %s" % (s, dt.type_name(code)))
    return vbytes, p


def _real32_code(codes, unit_pow):
    """For real32: the VIF whose exponent is closest to the author's unit, primary
    table first."""
    for primary in (True, False):
        best = None
        for vbytes, e in _cands(codes, primary):
            d = e - unit_pow
            if d < 0:
                d = -d
            if best is None or d < best[0]:
                best = (d, vbytes, unit_pow - e)
        if best is not None:
            return best[1], best[2]
    raise ValueError("no VIF for this unit")


def _default_type(value):
    if isinstance(value, str):
        return "text"
    return "int32"


def _widen(code, samples, pow10):
    """int32 too small for the samples: int48, int64."""
    for c in (code, 0x6, 0x7):
        ok = True
        for s in samples:
            if not _fits(c, scale_value(s, pow10)):
                ok = False
        if ok:
            return c
    return code


def make_record(quantity=None, unit=None, value=0, type=None, function="instantaneous",
                storage=0, tariff=0, subunit=0, dif=None, vif=None, vife=None,
                resolution=None, samples=None, name=None):
    """A Record from names (quantity/unit/type/function...) or raw hex (dif, vif, vife).
    samples: values the record will take (for dynamic values; default [value])."""
    if samples is None:
        samples = [] if (callable(value) or hasattr(value, "value")) else [value]
    fcode = function_code(function)
    extra = parse_hex(vife) if vife is not None else b""
    if dif is not None:
        dib = parse_hex(dif)
        if not dib:
            raise ValueError("empty dif")
        if vif is None and (dib[0] & 0x0F) != 0x0F and dib[0] != 0x2F:
            raise ValueError("a raw dif needs a vif")
        if (dib[0] & 0x0F) == 0x0F:  # special functions: no VIF, data taken as written
            head = dib + (parse_hex(vif) if vif is not None else b"") + extra
        else:
            _check_ext("dif", dib, 1, MAX_DIFE)
            head = dib + _ext(parse_hex(vif), extra)
        code = dib[0] & 0x0F
        if dib[0] in (0x0F, 0x1F):
            return TypedRecord(head, 0x0F, value, 0, "bin", name)
        if dib[0] == 0x2F:
            return TypedRecord(head, 0x00, 0, 0, "num", name)
        return _record(head, code, value, _raw_pow(resolution),
                       _raw_kind(type, code, head, value), name)
    # a named quantity (or a raw vif with named DIF parts)
    tname = type
    if vif is not None:
        vbytes = parse_hex(vif)
        if not vbytes:
            raise ValueError("empty vif")
        if tname is None:
            tname = "dst" if _dst_vib(vbytes, value) else _default_type(value)
        code = _type_code(tname)
        if code < 0:
            raise ValueError("unknown type %r" % tname)
        head = build_dib(code, fcode, storage, tariff, subunit) + _ext(vbytes, extra)
        return _record(head, code, value, _raw_pow(resolution), _kind(tname, value), name)
    if quantity is None:
        raise ValueError("a record needs a quantity (or raw dif/vif)")
    qn = quantity.strip().lower() if isinstance(quantity, str) else ""
    if qn == "custom":
        if not unit:
            raise ValueError("a custom quantity needs a unit text")
        u = unit.encode()
        if len(u) > MAX_TEXT_VIF:
            raise ValueError("unit text too long")
        tname = tname or _default_type(value)
        code = _type_code(tname)
        if code < 0:
            raise ValueError("unknown type %r" % tname)
        vb = bytes((0xFC if extra else 0x7C, len(u))) + dt.reverse(u) + _vife_chain(extra)
        _check_ext("vif", vb, 2 + len(u), MAX_VIFE)
        head = build_dib(code, fcode, storage, tariff, subunit) + vb
        p = 0
        if resolution is not None:
            p = _raw_pow(resolution)
        return TypedRecord(head, code, value, p, _kind(tname, value), name)
    found = vt.find_quantity(qn)
    if found is None:
        raise ValueError("unknown quantity %r (known: %s)" % (quantity,
                                                             ", ".join(vt.quantity_names())))
    kind, info = found
    if kind == "plain":
        vbytes, dtype = info
        if unit not in (None, ""):
            raise ValueError("quantity %r has no unit (got %r)" % (quantity, unit))
        tname = tname or dtype
        code = _type_code(tname)
        if code < 0:
            raise ValueError("unknown type %r" % tname)
        head = build_dib(code, fcode, storage, tariff, subunit) + _ext(vbytes, extra)
        return _record(head, code, value, 0, _kind(tname, value), name)
    if unit is None:
        unit = vt.default_unit(kind, info)
    if kind == "timed":
        units, prefix, first = info
        if unit not in units:
            raise ValueError("unknown unit %r (known: %s)"
                             % (unit, ", ".join(vt.unit_names(kind, info))))
        tname = tname or "int32"
        code = dt.type_code(tname)
        if code < 0 or code == 0x0D:
            raise ValueError("unknown or unsuitable type %r" % tname)
        if code not in (0x5,):
            code = _widen(code, samples, 0) if type is None else code
        vbytes = prefix + bytes((first + units.index(unit),))
        head = build_dib(code, fcode, storage, tariff, subunit) + _ext(vbytes, extra)
        return TypedRecord(head, code, value, 0, "num", name)
    # scaled
    fam = None
    upow = 0
    for units, codes in info:
        for u, p in units:
            if u == unit:
                fam = codes
                upow = p
    if fam is None:
        raise ValueError("unknown unit %r (known: %s)"
                         % (unit, ", ".join(vt.unit_names(kind, info))))
    tname = tname or "int32"
    code = dt.type_code(tname)
    if code < 0 or code == 0x0D:
        raise ValueError("unknown or unsuitable type %r for a number (int8..int64, real32, "
                         "bcd2..bcd12)" % tname)
    if code == 0x5:
        vbytes, p = _real32_code(fam, upow)
    else:
        try:
            vbytes, p = choose_code(fam, upow, samples, code, resolution)
        except ValueError:
            if type is not None:
                raise
            code = 0x7
            vbytes, p = choose_code(fam, upow, samples, code, resolution)
        if type is None:
            code = _widen(code, samples, p)
    head = build_dib(code, fcode, storage, tariff, subunit) + _ext(vbytes, extra)
    return TypedRecord(head, code, value, p, "num", name)


def _ext(vbytes, extra):
    """Append VIFE bytes: set the extension bit on the last VIF/VIFE byte. The result is
    checked as the decoder will read it (a plain-text VIF 7C/FC comes with its text)."""
    b = bytearray(vbytes)
    if extra:
        b[len(b) - 1] |= 0x80
    b = bytes(b) + _vife_chain(extra)
    start = 1
    if b and (b[0] & 0x7F) == 0x7C:  # plain-text unit: length and text before the VIFEs
        start = 2 + b[1] if len(b) > 1 else 2
    _check_ext("vif", b, start, MAX_VIFE)
    return b


def _vife_chain(extra):
    """Extra VIFEs with the extension bit set on all but the last, as a chain needs."""
    b = bytearray(extra)
    i = 0
    while i < len(b) - 1:
        b[i] |= 0x80
        i += 1
    return bytes(b)


def ext_end(data, i, end, ext, limit):
    """Walk the extension bytes (DIFEs after a DIF, VIFEs after a VIF) that start at
    data[i]: while `ext` (the byte before has bit 7 set) one more follows. -> the position
    after the last one; -1 when `end` comes first, -2 when more than `limit` follow.
    The codec's one DIF/VIF walker (the runtime's is mbus_core.meter.key_end)."""
    n = 0
    while ext:
        if i >= end:
            return -1
        if n >= limit:
            return -2
        ext = data[i] & 0x80
        i += 1
        n += 1
    return i


def _check_ext(what, b, start, limit):
    """b[0] and its extension bytes from b[start] on, as decode_records reads them: each
    byte with bit 7 set is followed by one more, the chain ends with b, and it has at most
    `limit` extensions (EN 13757-3: 10 DIFEs, 10 VIFEs; the decoder refuses an 11th)."""
    name = "DIFE" if what == "dif" else "VIFE"
    if not b or start > len(b):
        raise ValueError("%s %s is cut short" % (what, dt.hexstr(b)))
    i = ext_end(b, start, len(b), b[0] & 0x80, len(b))
    if i < 0:
        raise ValueError("%s %s: its last byte has the extension bit (80) set, so a "
                         "%s must follow" % (what, dt.hexstr(b), name))
    if i < len(b):
        raise ValueError("%s %s: %02X follows a byte without the extension bit (80)"
                         % (what, dt.hexstr(b), b[i]))
    if i - start > limit:
        raise ValueError("%s %s: %d %ss, EN 13757-3 allows at most %d %ss"
                         % (what, dt.hexstr(b), i - start, name, limit, name))


def _record(head, code, value, pow10, kind, name):
    """A Record; a daylight saving value (type K) goes in as its 4 bytes."""
    if kind == "dst":
        if code != 0x4:
            raise ValueError("daylight saving (type K) needs int32, not %s"
                             % dt.type_name(code))
        if callable(value) or hasattr(value, "value"):
            raise ValueError("a daylight saving value is a constant")
        value, kind = dt.daylight_k_encode(value), "bin"
    return TypedRecord(head, code, value, pow10, kind, name)


def _type_code(tname):
    """Data field code of a type name: the special ones (date, dst...) or a DIF type."""
    code = _special(tname)
    return code if code >= 0 else dt.type_code(tname)


def _special(tname):
    if tname == "date":
        return 0x2
    if tname in ("datetime", "dst"):
        return 0x4
    if tname == "datetime6":
        return 0x6
    if tname == "time":
        return 0x3
    if tname == "binary":
        return 0xD
    return -1


def _kind(tname, value):
    if tname in ("date", "datetime", "time", "dst"):
        return tname
    if tname == "datetime6":
        return "datetime"
    if tname == "binary":
        return "bin"
    if tname in ("text", "var", "lvar"):
        if isinstance(value, str) or (tname == "text"):
            return "text"
        return "num"
    return "num"


def _raw_kind(tname, code, head, value):
    if tname is not None:
        return _kind(tname, value)
    vif = _vif_of(head)
    if code == 0x2 and vif is not None and (vif & 0x7F) == 0x6C:
        return "date"
    if code in (0x4, 0x6) and vif is not None and (vif & 0x7F) == 0x6D:
        return "datetime"
    at = _vif_at(head)
    if code == 0x4 and at >= 0 and _dst_vib(head[at:], value):
        return "dst"
    if code == 0x0D:
        return "text" if isinstance(value, str) else "num"
    return "num"


def _raw_pow(resolution):
    if resolution is None:
        return 0
    p = 0
    r = resolution
    while not _is_whole(r, 0) and p < 12:
        p += 1
        r = r * 10
    return p


def _vif_at(head):
    """The position of the VIF in a record's head, or -1 when it has none."""
    if not head:
        return -1
    return ext_end(head, 1, len(head), head[0] & 0x80, len(head))


def _vif_of(head):
    i = _vif_at(head)
    return head[i] if 0 <= i < len(head) else None


def _dst_vib(vib, value):
    """VIF FD with VIFE 72 (daylight saving, type K) and a value in its text/dict form."""
    return (len(vib) > 1 and vib[0] == 0xFD and (vib[1] & 0x7F) == 0x72
            and isinstance(value, (str, dict)))


# -- decoding --------------------------------------------------------------------------
class Decoded:
    """One decoded record. value: engineering value in `unit` (as libmbus normalises it);
    raw: the number/string as coded; head/data: the bytes."""

    def __init__(self):
        self.dif = 0
        self.dife = b""
        self.vif = None
        self.vife = b""
        self.text_unit = None
        self.data = b""
        self.head = b""
        self.code = 0
        self.function = ""
        self.storage = 0
        self.tariff = 0
        self.subunit = 0
        self.quantity = ""
        self.unit = ""
        self.value = None
        self.raw = None
        self.known = True
        self.special = None  # "filler", "manufacturer", "more"
        self.lvar = None

    def as_dict(self):
        return {"function": self.function, "storage": self.storage, "tariff": self.tariff,
                "subunit": self.subunit, "quantity": self.quantity, "unit": self.unit,
                "value": self.value, "raw": self.raw, "type": self.type_name(),
                "dif": dt.hexstr(bytes((self.dif,)) + self.dife),
                "vif": dt.hexstr(self.head[1 + len(self.dife):]),
                "data": dt.hexstr(self.data), "vife": self.vife_texts()}

    def type_name(self):
        if self.special:
            return self.special
        if self.code == 0x0D and self.lvar is not None:
            return "lvar-" + dt.lvar_length(self.lvar)[0]
        return dt.type_name(self.code)

    def vife_texts(self):
        out = []
        start = 1 if self.vif in (0xFD, 0xFB) else 0
        i = start
        while i < len(self.vife):
            out.append(vt.vife_text(self.vife[i]))
            i += 1
        return out

    def encoded(self):
        if self.lvar is not None:
            return self.head + bytes((self.lvar,)) + self.data
        return self.head + self.data

    def to_record(self):
        """A Record that encodes this record again, from its decoded value where that
        reproduces the bytes, else from the raw data bytes."""
        if self.special == "filler":
            return TypedRecord(self.head, 0x00, 0, 0, "num")
        if self.special:
            return TypedRecord(self.head, 0x0F, self.data, 0, "bin")
        kind = "bin"
        value = self.data
        if self.raw is not None:
            r = self.raw
            if self.code == 0x0D and self.lvar is not None and self.lvar <= 0xBF:
                kind, value = "text", r
            elif self.code == 0x2 and isinstance(r, str):
                kind, value = "date", r
            elif self.code in (0x4, 0x6) and isinstance(r, str):
                kind, value = "datetime", r
            elif self.code == 0x3 and isinstance(r, str):
                kind, value = "time", r
            elif isinstance(r, (int, float)) and self.code != 0x0D:
                kind, value = "num", r
        try:
            rec = TypedRecord(self.head, self.code, value, 0, kind)
            if rec.encode() == self.encoded():
                return rec
        except ValueError:
            pass
        if self.code == 0x0D:
            return _RawRecord(self.encoded())
        return TypedRecord(self.head, self.code, self.data, 0, "bin")


class _RawRecord:
    dynamic = False

    def __init__(self, b):
        self.b = bytes(b)

    def encode(self):
        return self.b


def _value_of(rec):
    """raw value of the data field (number, string or None)."""
    code = rec.code
    d = rec.data
    v = rec.vif
    vm = v & 0x7F if v is not None else None
    fdv = rec.vife[0] & 0x7F if (v == 0xFD and rec.vife) else None
    if code == 0x0:
        return None
    if code == 0x2 and vm == 0x6C:
        return dt.date_g_decode(d)
    if code == 0x4 and (vm == 0x6D or fdv in (0x30, 0x70)):
        return dt.datetime_f_decode(d)
    if code == 0x6 and (vm == 0x6D or fdv in (0x30, 0x70)):
        return dt.datetime_i_decode(d)
    if code == 0x3 and vm == 0x6D:
        return dt.time_j_decode(d)
    if code == 0x4 and fdv == 0x72:
        return dt.daylight_k_decode(d)
    if code in (0x1, 0x2, 0x3, 0x4, 0x6, 0x7):
        return dt.int_decode(d)
    if code == 0x5:
        return dt.real_decode(d)
    if code in (0x9, 0xA, 0xB, 0xC, 0xE):
        if dt.bcd_valid(d):
            return dt.bcd_decode(d)
        return dt.bcd_hex(d)
    if code == 0x0D:
        kind, n = dt.lvar_length(rec.lvar)
        if kind == "text":
            return dt.text_decode(d)
        if kind == "bcd":
            return dt.bcd_decode(d) if dt.bcd_valid(d) else dt.bcd_hex(d)
        if kind == "-bcd":
            return -dt.bcd_decode(d) if dt.bcd_valid(d) else dt.bcd_hex(d)
        return dt.hexstr(d)
    if code == 0x8:
        return None
    return dt.hexstr(d)


def _normalise(rec):
    if rec.text_unit is not None:
        rec.quantity = rec.text_unit
        rec.unit = "-"
        factor = 1
    else:
        info = vt.vif_info(rec.vif, rec.vife)
        if info is None:
            rec.known = False
            if rec.vif in (0xFD, 0xFB):
                rec.quantity = "Unknown (VIF=0x%02X 0x%02X)" % (
                    rec.vif, rec.vife[0] if rec.vife else 0)
            else:
                rec.quantity = "Unknown (VIF=0x%02X)" % rec.vif
            rec.unit = ""
            rec.value = rec.raw
            return
        rec.quantity, rec.unit, factor = info
    r = rec.raw
    if isinstance(r, (int, float)) and not isinstance(r, bool):
        val = r * factor if factor != 1 else r
        val = vt.vife_correct(rec.vif, rec.vife, val)
        rec.value = val
    else:
        rec.value = r


def decode_records(data, start=0, end=-1):
    """Decode the record area `data[start:end]` -> list of Decoded. Raises DecodeError
    (a ValueError) with a libmbus-like message on malformed data."""
    if end < 0:
        end = len(data)
    out = []
    i = start
    while i < end:
        rec = Decoded()
        dif = data[i]
        rec.dif = dif
        if dif == 0x2F:
            rec.special = "filler"
            rec.function = "Idle filler"
            rec.head = bytes((dif,))
            rec.code = 0
            out.append(rec)
            i += 1
            continue
        if dif == 0x0F or dif == 0x1F:
            rec.special = "more" if dif == 0x1F else "manufacturer"
            rec.function = "More records follow" if dif == 0x1F else "Manufacturer specific"
            rec.head = bytes((dif,))
            rec.code = 0x0F
            rec.data = bytes(data[i + 1:end])
            rec.raw = dt.hexstr(rec.data)
            rec.value = rec.raw
            out.append(rec)
            break
        p = i
        i = ext_end(data, p + 1, end, dif & 0x80, MAX_DIFE)
        if i < 0:
            raise DecodeError("Premature end of record at DIF." if i == -1
                              else "Too many DIFE.")
        rec.dife = bytes(data[p + 1:i])
        if i >= end:
            raise DecodeError("Premature end of record at VIF.")
        v = data[i]
        rec.vif = v
        i += 1
        if (v & 0x7F) == 0x7C:
            if i >= end:
                raise DecodeError("Premature end of record at variable length VIF.")
            n = data[i]
            i += 1
            if n > MAX_TEXT_VIF:
                raise DecodeError("Too long variable length VIF.")
            if i + n > end:
                raise DecodeError("Premature end of record at variable length VIF.")
            rec.text_unit = dt.text_decode(data[i:i + n])
            i += n
        q = i
        i = ext_end(data, q, end, v & 0x80, MAX_VIFE)
        if i < 0:
            raise DecodeError("Premature end of record at VIF." if i == -1
                              else "Too many VIFE.")
        rec.vife = bytes(data[q:i])
        code = dif & 0x0F
        rec.code = code
        n = dt.DATA_LEN[code]
        if code == 0x0D:
            if i >= end:
                raise DecodeError("Premature end of record at data.")
            rec.lvar = data[i]
            kind, n = dt.lvar_length(data[i])
            if kind is None:
                raise DecodeError("Reserved LVAR 0x%02X." % data[i])
            rec.head = bytes(data[p:i])
            i += 1
        else:
            rec.head = bytes(data[p:i])
        if i + n > end:
            raise DecodeError("Premature end of record at data.")
        rec.data = bytes(data[i:i + n])
        i += n
        f, s, t, u = dib_fields(dif, rec.dife)
        rec.function = FUNCTION_NAMES[f]
        rec.storage = s
        rec.tariff = t
        rec.subunit = u
        rec.raw = _value_of(rec)
        _normalise(rec)
        out.append(rec)
    return out


def decode_header12(d, pos=0):
    man = d[pos + 4] | (d[pos + 5] << 8)
    ident = dt.bcd_hex(d[pos:pos + 4])
    return {"id": ident, "manufacturer": manufacturer_text(man),
            "manufacturer_code": man, "version": d[pos + 6], "medium": d[pos + 7],
            "medium_name": vt.medium_name(d[pos + 7]), "access": d[pos + 8],
            "status": d[pos + 9], "signature": d[pos + 10] | (d[pos + 11] << 8)}


def decode_user_data(app):
    """Decode application data from the CI byte on -> dict with 'ci', 'header' (or None),
    'records' (list of Decoded), and 'error' (CI 70) or 'fixed' (CI 73)."""
    if not app:
        raise DecodeError("No application data.")
    ci = app[0]
    out = {"ci": ci, "header": None, "records": []}
    if ci == 0x70:
        code = app[1] if len(app) > 1 else 0
        out["error"] = code
        out["error_name"] = vt.error_name(code)
        return out
    if ci == 0x72 or ci == 0x76:
        if len(app) < 13:
            raise DecodeError("Variable header too short.")
        out["header"] = decode_header12(app, 1)
        out["records"] = decode_records(app, 13)
        return out
    if ci == 0x7A:
        if len(app) < 5:
            raise DecodeError("Short header too short.")
        out["header"] = {"access": app[1], "status": app[2],
                         "signature": app[3] | (app[4] << 8)}
        out["records"] = decode_records(app, 5)
        return out
    if ci == 0x78:
        out["records"] = decode_records(app, 1)
        return out
    if ci == 0x73:
        if len(app) != 17:
            raise DecodeError("Invalid length for fixed data.")
        d = app
        medium = ((d[7] & 0xC0) >> 6) | ((d[8] & 0xC0) >> 4)
        status = d[6]
        bcd = not (status & 0x80)
        c1 = d[9:13]
        c2 = d[13:17]
        out["header"] = {"id": dt.bcd_hex(d[1:5]), "access": d[5], "status": status,
                         "medium": medium, "medium_name": vt.FIXED_MEDIA[medium]}
        out["fixed"] = {"unit1": d[7] & 0x3F, "unit2": d[8] & 0x3F,
                        "counter1": dt.bcd_decode(c1) if bcd else dt.int_decode(c1),
                        "counter2": dt.bcd_decode(c2) if bcd else dt.int_decode(c2),
                        "stored": bool(status & 0x40)}
        return out
    raise DecodeError("Unknown control information 0x%.2x" % ci)
