# EN 13757-3 data field codings: integers (type B), BCD (type A, negative with a top
# nibble F), real32 (type H), LVAR strings/numbers, dates G, date-times F and I, time J,
# daylight saving K.
# Pure functions on bytes; they run unchanged on CPython and MicroPython.
import struct

# the number encoders a board needs too live in the runtime
from mbus_core.fields import (DATA_LEN, REAL32_MAX, int_encode, bcd_encode,  # noqa: F401
                              lvar_length, scale_value, number_field)


def int_range(n):
    """(lo, hi) of an n-byte signed integer."""
    half = 1 << (8 * n - 1)
    return -half, half - 1


def real_encode(value):
    """A float -> real32 (type H) bytes; ValueError beyond its range."""
    return number_field(0x5, value)


# names of the data field codes, as a meter author writes them
TYPE_CODES = (("none", 0x0), ("int8", 0x1), ("int16", 0x2), ("int24", 0x3), ("int32", 0x4),
              ("real32", 0x5), ("int48", 0x6), ("int64", 0x7), ("bcd2", 0x9),
              ("bcd4", 0xA), ("bcd6", 0xB), ("bcd8", 0xC), ("bcd12", 0xE),
              ("text", 0xD), ("lvar", 0xD), ("var", 0xD))


def type_code(name):
    for n, c in TYPE_CODES:
        if n == name:
            return c
    return -1


def type_name(code):
    for n, c in TYPE_CODES:
        if c == code:
            return n
    return "special"


def hexstr(data):
    out = []
    for b in data:
        out.append("%02X" % b)
    return " ".join(out)


def reverse(data):
    n = len(data)
    out = bytearray(n)
    i = 0
    while i < n:
        out[i] = data[n - 1 - i]
        i += 1
    return bytes(out)


# -- integers (type B, two's complement, little endian) --------------------------------
def int_decode(data):
    n = len(data)
    v = 0
    i = n - 1
    while i >= 0:
        v = (v << 8) | data[i]
        i -= 1
    if n and data[n - 1] & 0x80:
        v -= 1 << (8 * n)
    return v


def uint_decode(data):
    v = 0
    i = len(data) - 1
    while i >= 0:
        v = (v << 8) | data[i]
        i -= 1
    return v


# -- BCD (type A) ------------------------------------------------------------------------
def bcd_valid(data):
    """True when every nibble is a decimal digit (the top one may be F: negative)."""
    n = len(data)
    i = 0
    while i < n:
        b = data[i]
        lo = b & 0x0F
        hi = b >> 4
        if lo > 9:
            return False
        if hi > 9 and not (i == n - 1 and hi == 0xF):
            return False
        i += 1
    return True


def bcd_decode(data):
    """BCD bytes (little endian) -> int; a top nibble F means negative. Invalid digits
    (A-E) are read like libmbus does (nibble value), use bcd_valid() to tell."""
    n = len(data)
    v = 0
    neg = False
    i = n - 1
    while i >= 0:
        b = data[i]
        if i == n - 1 and (b >> 4) == 0xF:
            neg = True
            v = b & 0x0F
        else:
            v = v * 10 + (b >> 4)
            v = v * 10 + (b & 0x0F)
        i -= 1
    return -v if neg else v


def bcd_hex(data):
    """BCD bytes shown as their hex digits, most significant first (libmbus style)."""
    out = []
    i = len(data) - 1
    while i >= 0:
        out.append("%02X" % data[i])
        i -= 1
    return "".join(out)


# -- real32 (type H) ---------------------------------------------------------------------
def real_decode(data):
    return struct.unpack("<f", bytes(data))[0]


# -- dates and times -------------------------------------------------------------------
def _year(y):
    return 2000 + y if y < 81 else 1900 + y


def date_g_decode(d):
    day = d[0] & 0x1F
    month = d[1] & 0x0F
    year = ((d[0] & 0xE0) >> 5) | ((d[1] & 0xF0) >> 1)
    return "%04d-%02d-%02d" % (_year(year), month, day)


def datetime_f_decode(d):
    """4 bytes, type F. The 'invalid' bit (0x80 of the minute byte) gives all zeros,
    as libmbus shows it."""
    if d[0] & 0x80:
        return "1900-01-00T00:00:00Z"
    minute = d[0] & 0x3F
    hour = d[1] & 0x1F
    day = d[2] & 0x1F
    month = d[3] & 0x0F
    year = ((d[2] & 0xE0) >> 5) | ((d[3] & 0xF0) >> 1)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (_year(year), month, day, hour, minute, 0)


def datetime_i_decode(d):
    """6 bytes, type I (seconds resolution)."""
    if d[1] & 0x80:
        return "1900-01-00T00:00:00Z"
    sec = d[0] & 0x3F
    minute = d[1] & 0x3F
    hour = d[2] & 0x1F
    day = d[3] & 0x1F
    month = d[4] & 0x0F
    year = ((d[3] & 0xE0) >> 5) | ((d[4] & 0xF0) >> 1)
    return "%04d-%02d-%02dT%02d:%02d:%02dZ" % (_year(year), month, day, hour, minute, sec)


def time_j_decode(d):
    """3 bytes, type J: seconds, minutes, hours."""
    return "%02d:%02d:%02d" % (d[2] & 0x1F, d[1] & 0x3F, d[0] & 0x3F)


def _num(text, start, end):
    s = text[start:end]
    if len(s) != end - start:
        raise ValueError("bad date/time %r" % text)
    v = 0
    for ch in s:
        o = ord(ch) - 48
        if o < 0 or o > 9:
            raise ValueError("bad date/time %r" % text)
        v = v * 10 + o
    return v


def parse_datetime(value):
    """'YYYY-MM-DD', 'YYYY-MM-DDTHH:MM[:SS][Z]' or a tuple (y, m, d[, H, M[, S]]) ->
    (y, m, d, H, M, S)."""
    if isinstance(value, (tuple, list)):
        v = list(value) + [0, 0, 0]
        if len(value) < 3:
            raise ValueError("date needs (year, month, day)")
        y, mo, d, h, mi, s = v[0], v[1], v[2], v[3], v[4], v[5]
    elif isinstance(value, str):
        t = value.strip()
        if t.endswith("Z"):
            t = t[:-1]
        y = _num(t, 0, 4)
        if t[4:5] != "-" or t[7:8] != "-":
            raise ValueError("bad date %r (want YYYY-MM-DD)" % value)
        mo = _num(t, 5, 7)
        d = _num(t, 8, 10)
        h = mi = s = 0
        if len(t) > 10:
            if t[10:11] not in ("T", " ") or t[13:14] != ":":
                raise ValueError("bad date-time %r (want YYYY-MM-DDTHH:MM:SS)" % value)
            h = _num(t, 11, 13)
            mi = _num(t, 14, 16)
            if len(t) > 16:
                if t[16:17] != ":":
                    raise ValueError("bad date-time %r" % value)
                s = _num(t, 17, 19)
                if len(t) > 19:
                    raise ValueError("bad date-time %r" % value)
    else:
        raise ValueError("a date is a string 'YYYY-MM-DD[THH:MM:SS]'")
    if not (1981 <= y <= 2080 and 0 <= mo <= 12 and 0 <= d <= 31 and 0 <= h <= 23
            and 0 <= mi <= 59 and 0 <= s <= 59):
        raise ValueError("date/time out of range: %r" % (value,))
    if mo and d > days_in_month(mo, y):  # 0 stays allowed: "not given" in types F/G
        raise ValueError("no such date: %r (%04d-%02d has %d days)"
                         % (value, y, mo, days_in_month(mo, y)))
    return y, mo, d, h, mi, s


def days_in_month(month, year=2000):
    """Days of a month 1..12; without a year February has 29 (for dates that repeat)."""
    if month == 2:
        leap = year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)
        return 29 if leap else 28
    return 30 if month in (4, 6, 9, 11) else 31


def _y7(y):
    return y - 2000 if y >= 2000 else y - 1900


def date_g_encode(value):
    y, mo, d, h, mi, s = parse_datetime(value)
    yy = _y7(y)
    return bytes(((d & 0x1F) | ((yy & 0x07) << 5), (mo & 0x0F) | ((yy & 0x78) << 1)))


def datetime_f_encode(value):
    y, mo, d, h, mi, s = parse_datetime(value)
    yy = _y7(y)
    return bytes((mi & 0x3F, h & 0x1F, (d & 0x1F) | ((yy & 0x07) << 5),
                  (mo & 0x0F) | ((yy & 0x78) << 1)))


def datetime_i_encode(value):
    y, mo, d, h, mi, s = parse_datetime(value)
    yy = _y7(y)
    return bytes((s & 0x3F, mi & 0x3F, h & 0x1F, (d & 0x1F) | ((yy & 0x07) << 5),
                  (mo & 0x0F) | ((yy & 0x78) << 1), 0))


def time_j_encode(value):
    if isinstance(value, str):
        t = value.strip()
        if len(t) == 5:
            t = t + ":00"
        if len(t) != 8 or t[2] != ":" or t[5] != ":":
            raise ValueError("bad time %r (want HH:MM:SS)" % value)
        h, mi, s = _num(t, 0, 2), _num(t, 3, 5), _num(t, 6, 8)
    else:
        h, mi, s = value[0], value[1], value[2]
    if not (0 <= h <= 23 and 0 <= mi <= 59 and 0 <= s <= 59):
        raise ValueError("time out of range: %r" % (value,))
    return bytes((s, mi, h))


# -- daylight saving (type K, 32 bits) -------------------------------------------------
# EN 13757-3 Annex A type K, as read by libmburs (types/date.rs, TypeKDST) and EnergyICT
# (mbus DataRecordTypeK); bits of the 32-bit little-endian value:
#   [0..4] hour DST begins   [5..7] GMT deviation, low 3 bits
#   [8..12] day DST begins   [13..14] GMT deviation, high 2 bits   [15] DST enabled
#   [16..20] day DST ends    [21..22] DST deviation in hours   [23] its sign (1: +)
#   [24..27] month DST begins   [28..31] month DST ends
# Decoded as {"begin": "MM-DD HH:00", "end": "MM-DD", "deviation_h", "gmt_deviation_h",
# "enabled"}; meter files write it as text: "MM-DD HH:00 MM-DD +1h [gmt+N] [off]".
DST_KEYS = ("begin", "end", "deviation_h", "gmt_deviation_h", "enabled")


def daylight_k_decode(d):
    """4 bytes (type K) -> dict. Out-of-range fields are shown as they are."""
    dev = (d[2] >> 5) & 3
    return {"begin": "%02d-%02d %02d:00" % (d[3] & 0x0F, d[1] & 0x1F, d[0] & 0x1F),
            "end": "%02d-%02d" % (d[3] >> 4, d[2] & 0x1F),
            "deviation_h": dev if d[2] & 0x80 else -dev,
            "gmt_deviation_h": (d[0] >> 5) | (((d[1] >> 5) & 3) << 3),
            "enabled": bool(d[1] & 0x80)}


def _month_day(text, what):
    if not isinstance(text, str) or len(text) != 5 or text[2] != "-":
        raise ValueError("bad daylight saving %s %r (want MM-DD)" % (what, text))
    m = _num(text, 0, 2)
    d = _num(text, 3, 5)
    if not (1 <= m <= 12 and 1 <= d <= days_in_month(m)):
        raise ValueError("daylight saving %s out of range: %r" % (what, text))
    return m, d


def _small_int(v, lo, hi, what):
    if not isinstance(v, int) or isinstance(v, bool) or v < lo or v > hi:
        raise ValueError("daylight saving %s must be an integer %d..%d, not %r"
                         % (what, lo, hi, v))
    return v


def daylight_k_parse(text):
    """'MM-DD HH:00 MM-DD [+Nh] [gmt+N] [off]' -> dict (as daylight_k_decode gives)."""
    t = text.split()
    if len(t) < 3:
        raise ValueError("bad daylight saving %r (want 'MM-DD HH:00 MM-DD +1h')" % text)
    out = {"begin": t[0] + " " + t[1], "end": t[2], "deviation_h": 1, "gmt_deviation_h": 0,
           "enabled": True}
    for tok in t[3:]:
        if tok == "off":
            out["enabled"] = False
        elif tok[:4] == "gmt+" and len(tok) > 4:
            out["gmt_deviation_h"] = _num(tok, 4, len(tok))
        elif tok[:1] in ("+", "-") and len(tok.rstrip("h")) > 1:
            v = _num(tok, 1, len(tok.rstrip("h")))
            out["deviation_h"] = -v if tok[0] == "-" else v
        else:
            raise ValueError("bad daylight saving %r: %r (want +Nh, gmt+N or off)"
                             % (text, tok))
    return out


def daylight_k_text(k):
    """dict -> the text form daylight_k_parse reads."""
    dev = k["deviation_h"]
    out = "%s %s %s%dh" % (k["begin"], k["end"], "-" if dev < 0 else "+", abs(dev))
    if k["gmt_deviation_h"]:
        out += " gmt+%d" % k["gmt_deviation_h"]
    if not k["enabled"]:
        out += " off"
    return out


def daylight_k_encode(value):
    """A dict (as decoded) or the text form -> 4 bytes (type K)."""
    if isinstance(value, str):
        value = daylight_k_parse(value)
    if not isinstance(value, dict):
        raise ValueError("a daylight saving value is text 'MM-DD HH:00 MM-DD +1h' "
                         "(or a dict with %s)" % ", ".join(DST_KEYS))
    for key in value:
        if key not in DST_KEYS:
            raise ValueError("unknown daylight saving key %r (known: %s)"
                             % (key, ", ".join(DST_KEYS)))
    begin = value.get("begin")
    if not isinstance(begin, str) or len(begin) < 8 or begin[5:6] != " ":
        raise ValueError("bad daylight saving begin %r (want MM-DD HH:00)" % (begin,))
    bm, bd = _month_day(begin[:5], "begin")
    if len(begin) == 11 and begin[8:] == ":00":
        begin = begin[:8]
    if len(begin) != 8:
        raise ValueError("bad daylight saving begin %r (whole hours: MM-DD HH:00)" % begin)
    bh = _small_int(_num(begin, 6, 8), 0, 23, "begin hour")
    em, ed = _month_day(value.get("end"), "end")
    dev = _small_int(value.get("deviation_h", 1), -3, 3, "deviation_h")
    gmt = _small_int(value.get("gmt_deviation_h", 0), 0, 31, "gmt_deviation_h")
    on = value.get("enabled", True)
    if not isinstance(on, bool):
        raise ValueError("daylight saving enabled must be true or false")
    return bytes((bh | ((gmt & 7) << 5),
                  bd | ((gmt >> 3) << 5) | (0x80 if on else 0),
                  ed | ((dev if dev > 0 else -dev) << 5) | (0x80 if dev > 0 else 0),
                  bm | (em << 4)))


# -- LVAR (variable length) ------------------------------------------------------------
def text_encode(text):
    """ASCII text -> LVAR + bytes, last character first (as meters send it)."""
    raw = text.encode() if isinstance(text, str) else bytes(text)
    if len(raw) > 0xBF:
        raise ValueError("text longer than 191 bytes")
    return bytes((len(raw),)) + reverse(raw)


def text_decode(data):
    out = []
    i = len(data) - 1
    while i >= 0:
        out.append(chr(data[i]))
        i -= 1
    return "".join(out)


# -- hex text, and values of every kind -> data bytes ----------------------------
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


def encode_data(code, kind, value, pow10=0):
    """The data field bytes for a value. kind: 'num', 'date', 'datetime', 'time', 'text',
    'bin' (bytes or hex, sent as they are), 'lbcd' (LVAR BCD number)."""
    if kind == "bin":
        if not isinstance(value, (str, bytes, bytearray)):
            raise ValueError("binary data is hex text")
        raw = parse_hex(value)
        if code == 0x0D:
            return bytes((_lvar_binary(len(raw)),)) + raw
        n = DATA_LEN[code]
        if code not in (0x0F,) and len(raw) != n:
            raise ValueError("%d bytes given, the data field takes %d" % (len(raw), n))
        return raw
    if kind == "text":
        if code != 0x0D:
            raise ValueError("text needs the variable length type (DIF data field D)")
        return text_encode(value if isinstance(value, str) else str(value))
    if kind == "date":
        if code != 0x2:
            raise ValueError("a date (type G) needs int16")
        return date_g_encode(value)
    if kind == "datetime":
        if code == 0x4:
            return datetime_f_encode(value)
        if code == 0x6:
            return datetime_i_encode(value)
        raise ValueError("a date-time needs int32 (type F) or int48 (type I)")
    if kind == "time":
        if code != 0x3:
            raise ValueError("a time (type J) needs int24")
        return time_j_encode(value)
    return number_field(code, value, pow10)


def _lvar_binary(n):
    """The LVAR byte of n bytes of binary data (EN 13757-3): E0h + n for 0..15 bytes,
    F0h..FAh for 16..56 bytes in steps of 4."""
    if n <= 15:
        return 0xE0 + n
    if n <= 56 and n % 4 == 0:
        return 0xEC + n // 4
    raise ValueError("%d bytes of binary data: an LVAR holds 0..15, or 16..56 in steps "
                     "of 4" % n)
