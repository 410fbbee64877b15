# Frames built whole, as bytes or into a buffer: what tests and tools send and expect (a
# master's requests, a meter's replies). The runtime writes its replies in place
# (mbus_core.frame, Meter.write_rsp_ud); a board never loads this.
from mbus_core.frame import (MAX_FRAME, SHORT, SHORT_START, STOP, finish_long,
                             write_long_header)


def write_short(buf, c, a):
    buf[0] = SHORT_START
    buf[1] = c
    buf[2] = a
    buf[3] = (c + a) & 0xFF
    buf[4] = STOP
    return 5


def write_long(buf, c, a, ci, data=b""):
    """Build a complete control (no data) or long frame in buf; return its size."""
    n = len(data)
    if n > 252:
        raise ValueError("user data longer than 252 bytes")
    write_long_header(buf, c, a, ci, n)
    i = 0
    while i < n:
        buf[7 + i] = data[i]
        i += 1
    return finish_long(buf)


def build(kind, c, a, ci=0, data=b""):
    """Convenience for tests and tools: a frame as bytes."""
    buf = bytearray(MAX_FRAME)
    if kind == SHORT:
        n = write_short(buf, c, a)
    else:
        n = write_long(buf, c, a, ci, data)
    return bytes(buf[:n])
