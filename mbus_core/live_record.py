# One record at run time: head bytes + a value source -> the encoded record. Kept apart
# from the codec (mbus_core.codec) so that a board keeps only this small module and the
# number encoders (mbus_core.fields). Records of dates, text or binary data are the
# codec's (codec.records.TypedRecord); a board gets them as constant bytes.
from mbus_core.fields import DATA_LEN, INT_CODES, BCD_CODES, int_range, number_field, \
    scale_value, type_name


def wrap_range(code):
    """(lo, hi) a counter of data field `code` counts in before it wraps, or None (real32,
    LVAR, dates: no register to wrap). BCD: its digits, the top nibble F for the sign."""
    if code in INT_CODES:
        return int_range(DATA_LEN[code])
    if code in BCD_CODES:
        n = 2 * DATA_LEN[code]
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
    Numbers are sent as round(value * 10**pow10). `kind` is "num" here; the codec's
    TypedRecord sends the other kinds."""

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
                self.field(v)

    def current(self):
        src = self.source
        if hasattr(src, "value"):
            return src.value()
        if callable(src):
            return src()
        return src

    def field(self, value):
        """The data field bytes of a value of this record."""
        if self.kind != "num":
            raise ValueError("a %s record is sent as constant bytes here" % self.kind)
        return number_field(self.code, value, self.pow10)

    def encode(self):
        if self.range is None:
            return self.head + self.field(self.current())
        raw = scale_value(self.current(), self.pow10)
        lo, hi = self.range
        if not lo <= raw <= hi:
            raw = wrap(raw, lo, hi)
            if not self.wrapped:
                self.wrapped = 1
                _NEWLY_WRAPPED[0] = 1
        return self.head + number_field(self.code, raw)


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
                        % (meter_where(i, meters[i].name), j + 1, type_name(rec.code),
                           rec.range[0], rec.range[1]),)
            j += 1
        i += 1
    return out
