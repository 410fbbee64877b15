# One record at run time: head bytes + a value source -> the encoded record. Kept apart
# from the codec (mbus_core.codec) so that a board keeps only this small module and the
# number encoders (mbus_core.fields). Records of dates, text or binary data are the
# codec's (codec.records.TypedRecord); a board gets them as constant bytes.
from mbus_core.fields import DATA_LEN, INT_CODES, BCD_CODES, number_field, scale_value


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
        # a meter's register does, instead of vanishing from the readout: (lo, hi) it
        # counts in; None for other sources and for real32 and LVAR (no register to wrap)
        self.range = None
        if kind == "num" and getattr(value, "wraps", 0):
            n = 8 * DATA_LEN[code]
            if code in INT_CODES:
                self.range = (-1 << (n - 1), (1 << (n - 1)) - 1)
            elif code in BCD_CODES:   # its digits, the top nibble F for the sign
                n //= 4
                self.range = (1 - 10 ** (n - 1), 10 ** n - 1)
        self.wrapped = 0  # 1: it has wrapped, 2: notes.wrap_notes() has reported it
        if not self.dynamic:
            self.encode()  # fail early on a constant that does not fit
        # a generator's range is checked where meters are loaded (compiled.check_source)

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
            # past hi a counter goes on from 0, as an odometer or a meter's register does
            # (int8: 127 + 1 -> 0; bcd8: 99999999 + 1 -> 0); one running down past lo
            # likewise
            raw = raw % (hi + 1) if raw > hi else -((-raw) % (1 - lo))
            if not self.wrapped:
                self.wrapped = 1
                NEWLY_WRAPPED[0] = 1
        return self.head + number_field(self.code, raw)


# set when a counter wraps for the first time: mbus_core.notes.wrap_notes() looks only
# then (a host calls it after every reply; a board loads that module only when this is set)
NEWLY_WRAPPED = bytearray(1)
