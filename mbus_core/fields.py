# Data fields of numbers, as a meter serves them (EN 13757-3 types B and A, real32 type H):
# what the runtime needs to send a live value. The codec (mbus_core.codec.datatypes) has
# the decoders and the other types (dates, text, type K); a board never loads it.
import struct

# DIF data field code -> length in bytes (0x0D: variable, from the LVAR byte)
DATA_LEN = (0, 1, 2, 3, 4, 4, 6, 8, 0, 1, 2, 3, 4, 0, 6, 8)
INT_CODES = (0x1, 0x2, 0x3, 0x4, 0x6, 0x7)
BCD_CODES = (0x9, 0xA, 0xB, 0xC, 0xE)
REAL32_MAX = 3.4028234663852886e38  # the largest finite single-precision float
_INF = float("inf")


def int_encode(value, n):
    """int -> n bytes, two's complement, little endian (shifts and masks only: no
    integer past the small-int range on a 32-bit board)."""
    top = value >> (8 * n - 1)   # 0 or -1 when it fits
    if top and top != -1:
        raise ValueError("%d does not fit in int%d" % (value, 8 * n))
    out = bytearray(n)
    i = 0
    while i < n:
        out[i] = value & 0xFF
        value >>= 8
        i += 1
    return bytes(out)


def bcd_encode(value, n):
    """int -> n BCD bytes; negative numbers carry an F in the top nibble."""
    neg = value < 0
    if neg:
        value = -value
        limit = 10 ** (2 * n - 1)
    else:
        limit = 10 ** (2 * n)
    if value >= limit:
        raise ValueError("%d does not fit in %d BCD digits" % (-value if neg else value,
                                                              2 * n - (1 if neg else 0)))
    out = bytearray(n)
    i = 0
    while i < n:
        lo = value % 10
        value //= 10
        hi = value % 10
        value //= 10
        out[i] = (hi << 4) | lo
        i += 1
    if neg:
        out[n - 1] = (out[n - 1] & 0x0F) | 0xF0
    return bytes(out)


def lvar_length(lvar):
    """LVAR byte -> (kind, data length) with kind 'text', 'bcd', '-bcd', 'bin'; or
    (None, 0) when reserved."""
    if lvar <= 0xBF:
        return "text", lvar
    if lvar <= 0xCF:
        return "bcd", lvar - 0xC0
    if lvar <= 0xDF:
        return "-bcd", lvar - 0xD0
    if lvar <= 0xEF:
        return "bin", lvar - 0xE0
    if lvar <= 0xFA:
        return "bin", 4 * (lvar - 0xEC)
    return None, 0


# -- values -> data bytes --------------------------------------------------------------
def scale_value(value, pow10):
    """value * 10**pow10 rounded to an int (exact for ints); scale_value(x, 0) rounds."""
    if isinstance(value, bool):
        value = int(value)
    if isinstance(value, int):
        if pow10 >= 0:
            return value * 10 ** pow10
    elif not isinstance(value, float):
        raise ValueError("value %r is not a number" % (value,))
    x = value * 10 ** pow10 if pow10 >= 0 else value / (10 ** -pow10)
    if x != x or abs(x) == _INF:
        raise ValueError("value is not a number")
    return int(x + 0.5) if x >= 0 else -int(-x + 0.5)


def number_field(code, value, pow10=0):
    """The data field bytes of a number: round(value * 10**pow10) (real32: the value
    times 10**pow10 as it is)."""
    if code == 0x0:
        return b""
    if code == 0x5:
        v = float(value) * (10.0 ** pow10) if pow10 else float(value)
        # CPython's struct raises OverflowError beyond the range, MicroPython's sends inf:
        # check it here, so both say the same. NaN and +-inf are sent as they are.
        if not -REAL32_MAX <= v <= REAL32_MAX and v == v and abs(v) != _INF:
            raise ValueError("%r does not fit in real32" % (v,))
        return struct.pack("<f", v)
    raw = scale_value(value, pow10)
    if code in INT_CODES:
        return int_encode(raw, DATA_LEN[code])
    if code in BCD_CODES:
        return bcd_encode(raw, DATA_LEN[code])
    if code == 0x0D:  # LVAR BCD number
        n = 1
        a = raw if raw >= 0 else -raw
        while a >= 10 ** (2 * n):
            n += 1
        if n > 15:
            raise ValueError("number too long for LVAR BCD")
        return bytes(((0xC0 if raw >= 0 else 0xD0) + n,)) + bcd_encode(a, n)
    raise ValueError("data field %X cannot carry a number" % code)
