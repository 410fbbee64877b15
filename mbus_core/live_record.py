# One record at run time: head bytes + a value source -> the encoded record. Kept apart
# from the codec's tables (records.py, vif.py, units.py) so that a board can drop those
# once its meters are built and keep only this small module.
from mbus_core import datatypes as dt


def _shown(text):
    """The start of a text for a one-line message."""
    line = text.split("\n")[0]
    return repr(line if len(line) <= 40 and "\n" not in text else line[:40] + "...")


def parse_hex(text):
    """'04 13 ..' / '0413..' / bytes -> bytes; ValueError on anything else."""
    if isinstance(text, (bytes, bytearray)):
        return bytes(text)
    if isinstance(text, int):
        if not 0 <= text <= 255:
            raise ValueError("byte %d out of range" % text)
        return bytes((text,))
    digits = []
    pos = 0
    for ch in text:
        pos += 1
        if ch in " \t\r\n,:":
            continue
        o = ord(ch)
        if 48 <= o <= 57 or 65 <= o <= 70 or 97 <= o <= 102:
            digits.append(ch)
        else:
            raise ValueError("malformed hex %s (bad character %r at character %d)"
                             % (_shown(text), ch, pos))
    if len(digits) % 2:
        raise ValueError("malformed hex %s (odd number of digits)" % _shown(text))
    out = bytearray(len(digits) // 2)
    i = 0
    while i < len(out):
        out[i] = int(digits[2 * i] + digits[2 * i + 1], 16)
        i += 1
    return bytes(out)



# -- values -> data bytes --------------------------------------------------------------
def _round(x):
    if isinstance(x, int):
        return x
    if x != x or x in (float("inf"), float("-inf")):
        raise ValueError("value is not a number")
    return int(x + 0.5) if x >= 0 else -int(-x + 0.5)


def scale_value(value, pow10):
    """value * 10**pow10 rounded to an int (exact for ints)."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        if pow10 >= 0:
            return value * 10 ** pow10
        return _round(value / (10 ** -pow10))
    if not isinstance(value, float):
        raise ValueError("value %r is not a number" % (value,))
    if pow10 >= 0:
        return _round(value * 10 ** pow10)
    return _round(value / (10 ** -pow10))


def encode_data(code, kind, value, pow10=0):
    """The data field bytes for a value. kind: 'num', 'date', 'datetime', 'time', 'text',
    'bin' (bytes or hex, sent as they are), 'lbcd' (LVAR BCD number)."""
    if kind == "bin":
        if not isinstance(value, (str, bytes, bytearray)):
            raise ValueError("binary data is hex text")
        raw = parse_hex(value)
        if code == 0x0D:
            return bytes((_lvar_binary(len(raw)),)) + raw
        n = dt.DATA_LEN[code]
        if code not in (0x0F,) and len(raw) != n:
            raise ValueError("%d bytes given, the data field takes %d" % (len(raw), n))
        return raw
    if kind == "text":
        if code != 0x0D:
            raise ValueError("text needs the variable length type (DIF data field D)")
        return dt.text_encode(value if isinstance(value, str) else str(value))
    if kind == "date":
        if code != 0x2:
            raise ValueError("a date (type G) needs int16")
        return dt.date_g_encode(value)
    if kind == "datetime":
        if code == 0x4:
            return dt.datetime_f_encode(value)
        if code == 0x6:
            return dt.datetime_i_encode(value)
        raise ValueError("a date-time needs int32 (type F) or int48 (type I)")
    if kind == "time":
        if code != 0x3:
            raise ValueError("a time (type J) needs int24")
        return dt.time_j_encode(value)
    # numbers
    if code == 0x0:
        return b""
    if code == 0x5:
        v = float(value) * (10.0 ** pow10) if pow10 else float(value)
        return dt.real_encode(v)
    raw = scale_value(value, pow10)
    if code in (0x1, 0x2, 0x3, 0x4, 0x6, 0x7):
        return dt.int_encode(raw, dt.DATA_LEN[code])
    if code in (0x9, 0xA, 0xB, 0xC, 0xE):
        return dt.bcd_encode(raw, dt.DATA_LEN[code])
    if code == 0x0D:  # LVAR BCD number
        n = 1
        a = raw if raw >= 0 else -raw
        while a >= 10 ** (2 * n):
            n += 1
        if n > 15:
            raise ValueError("number too long for LVAR BCD")
        return bytes(((0xC0 if raw >= 0 else 0xD0) + n,)) + dt.bcd_encode(a, n)
    raise ValueError("data field %X cannot carry a number" % code)


def _lvar_binary(n):
    """The LVAR byte of n bytes of binary data (EN 13757-3): E0h + n for 0..15 bytes,
    F0h..FAh for 16..56 bytes in steps of 4."""
    if n <= 15:
        return 0xE0 + n
    if n <= 56 and n % 4 == 0:
        return 0xEC + n // 4
    raise ValueError("%d bytes of binary data: an LVAR holds 0..15, or 16..56 in steps "
                     "of 4" % n)


def wrap_range(code):
    """(lo, hi) a counter of data field `code` counts in before it wraps, or None (real32,
    LVAR, dates: no register to wrap). BCD: its digits, the top nibble F for the sign."""
    if code in (0x1, 0x2, 0x3, 0x4, 0x6, 0x7):
        return dt.int_range(dt.DATA_LEN[code])
    if code in (0x9, 0xA, 0xB, 0xC, 0xE):
        n = 2 * dt.DATA_LEN[code]
        return 1 - 10 ** (n - 1), 10 ** n - 1
    return None


def wrap(raw, lo, hi):
    """Past hi a counter goes on from 0, as an odometer or a meter's register does (int8:
    127 + 1 -> 0; bcd8: 99999999 + 1 -> 0); one running down past lo likewise."""
    if raw > hi:
        return raw % (hi + 1)
    if raw < lo:
        return -((-raw) % (1 - lo))
    return raw


class Record:
    """One record: `head` (DIF..VIFE bytes, incl. a plain-text unit), data field `code`,
    and a value: a constant, a callable, or an object with .value() (a generator).
    Numbers are sent as round(value * 10**pow10)."""

    def __init__(self, head, code, value=0, pow10=0, kind="num", name=None):
        self.head = bytes(head)
        self.code = code
        self.kind = kind
        self.pow10 = pow10
        self.name = name
        self.source = value
        self.dynamic = callable(value) or hasattr(value, "value")
        # a counter (a source with .wraps) goes on from 0 past the range of its type, as
        # a meter's register does, instead of vanishing from the readout
        self.range = wrap_range(code) if kind == "num" and getattr(value, "wraps", 0) \
            else None
        self.wrapped = 0  # 1: it has wrapped, 2: wrap_notes() has reported it
        if not self.dynamic:
            self.encode()  # fail early on a constant that does not fit
        elif hasattr(value, "samples"):
            # generators: check their range, do not advance (a wrapping counter's start)
            samples = value.samples()
            for v in samples[:1] if self.range is not None else samples:
                encode_data(code, kind, v, pow10)

    def current(self):
        src = self.source
        if hasattr(src, "value"):
            return src.value()
        if callable(src):
            return src()
        return src

    def encode(self):
        if self.range is None:
            return self.head + encode_data(self.code, self.kind, self.current(), self.pow10)
        raw = scale_value(self.current(), self.pow10)
        lo, hi = self.range
        if not lo <= raw <= hi:
            raw = wrap(raw, lo, hi)
            if not self.wrapped:
                self.wrapped = 1
                _NEWLY_WRAPPED[0] = 1
        return self.head + encode_data(self.code, "num", raw)


# set when a counter wraps for the first time: wrap_notes() looks only then (it runs after
# every reply)
_NEWLY_WRAPPED = bytearray(1)


def meter_where(index, name):
    """How messages name a meter: 'meter 1' or 'meter 1 ("heat-1")' (index from 0)."""
    if name:
        return 'meter %d ("%s")' % (index + 1, name)
    return "meter %d" % (index + 1)


def wrap_notes(meters):
    """One line for each counter that wrapped since the last call, naming meter and record
    like the load errors; each counter once. The core does not log: a host logs these
    after a readout. Allocates nothing while there is nothing to report (returns ())."""
    out = ()
    if not _NEWLY_WRAPPED[0]:
        return out
    _NEWLY_WRAPPED[0] = 0
    i = 0
    while i < len(meters):
        recs = meters[i].records
        j = 0
        while j < len(recs):
            rec = recs[j]
            if getattr(rec, "wrapped", 0) == 1:
                rec.wrapped = 2
                out += ("%s: record %d: the %s counter left its range %d..%d and went on "
                        "from 0 (wrapped, as a register does)"
                        % (meter_where(i, meters[i].name), j + 1, dt.type_name(rec.code),
                           rec.range[0], rec.range[1]),)
            j += 1
        i += 1
    return out
