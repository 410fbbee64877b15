# Collisions as a wire shows them (set_wire_collisions(bus)): where meters answer at once
# with replies of different lengths, the later one starts a few bits after the first (two
# meters never start on the same bit), the line carries the AND of the bit streams (a 0
# from anyone wins), and a level converter's UART samples each character from its start
# bit: framing and parity errors, garbage bytes. Host-side test equipment; a board that
# never switches it on never loads this module.
from mbus_core.frame import MAX_FRAME


class WireReceiver:
    """What a UART receives from overlapping replies; counts its framing and parity
    errors."""

    def __init__(self):
        self.a = bytearray(MAX_FRAME)
        self.framing_errors = 0
        self.parity_errors = 0

    def overlap(self, bus, other, n):
        """bus.reply so far and `other` on one wire, received by a UART, into bus.tx (no
        allocation)."""
        a = self.a
        m = bus.reply_len
        src = bus.reply
        for i in range(m):
            a[i] = src[i]
        skew = 0 if m == n else WIRE_SKEW_BITS
        end = 11 * m
        if 11 * n + skew > end:
            end = 11 * n + skew
        tx = bus.tx
        cap = len(tx)
        out = 0
        pos = 0
        while pos < end and out < cap:
            if _level(a, m, other, n, skew, pos):
                pos += 1      # idle line: wait for a start bit
                continue
            data = 0
            ones = 0
            for j in range(8):
                if _level(a, m, other, n, skew, pos + 1 + j):
                    data |= 1 << j
                    ones += 1
            if _level(a, m, other, n, skew, pos + 9) != ones & 1:
                self.parity_errors += 1
            if not _level(a, m, other, n, skew, pos + 10):
                self.framing_errors += 1
            tx[out] = data    # the UART hands on what it sampled, errors or not
            out += 1
            pos += 11
        bus.reply = tx
        bus.reply_len = out


WIRE_SKEW_BITS = 5   # how far a second meter's reply lags the first one (half a character)


def _bit(buf, n, pos):
    """Line level at bit `pos` of a reply of n characters at 8E1 (idle: 1)."""
    if pos < 0 or pos >= 11 * n:
        return 1
    i = pos // 11
    b = pos - 11 * i
    if b == 0:
        return 0                      # start bit
    if b <= 8:
        return (buf[i] >> (b - 1)) & 1
    if b == 10:
        return 1                      # stop bit
    v = buf[i]                        # even parity bit
    p = 0
    while v:
        p ^= v & 1
        v >>= 1
    return p


def _level(a, m, b, n, skew, pos):
    return _bit(a, m, pos) & _bit(b, n, pos - skew)


def set_wire_collisions(bus, on=True):
    """Overlapping replies of different lengths on `bus` as a UART receives them: the
    later one starts WIRE_SKEW_BITS after the first (two meters never start a reply on the
    same bit), the line carries the AND of the bit streams, and the UART samples each
    character at its start bit: framing and parity errors, garbage bytes. Replies of the
    same length stay bit-aligned (the plain AND, parity checked). bus.wire.framing_errors and
    .parity_errors count what the UART saw. (Not a Bus method: a board that never asks
    for it keeps neither this module nor the code that loads it.)"""
    bus.wire = None
    if on:
        bus.wire = WireReceiver()
        if bus.tx is None:
            bus.tx = bytearray(MAX_FRAME + 1)
