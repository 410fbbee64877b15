# EN 13757-2 link layer: an incremental frame parser and frame writers.
#
# Frames:  E5 (single character ACK)
#          short    10 C A CS 16
#          control  68 03 03 68 C A CI CS 16
#          long     68 L L 68 C A CI data CS 16    (L = 3 + len(data), CS = sum(C..data) & 0xFF)
#
# The parser is fed any chunk size. It keeps the bytes of the frame being received in a
# preallocated buffer, checks both L fields, L >= 3, the checksum and the stop byte, and on
# anything invalid drops the frame's start byte and hunts again through the bytes it already
# holds, so a valid frame hidden behind noise is still found. Nothing here allocates once the
# parser exists.
from struct import pack_into

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

ACK = const(0xE5)
SHORT_START = const(0x10)
LONG_START = const(0x68)
STOP = const(0x16)

MAX_FRAME = const(261)  # 68 L L 68 + L (max 255) + CS 16

# C field of a slave's reply: RSP_UD, with ACD set while class 1 data (an alarm) waits
RSP_UD = const(0x08)
ACD = const(0x20)

# Frame kinds reported by FrameParser.kind
SHORT = const(1)
CONTROL = const(2)
LONG = const(3)

# Parser states
_HUNT = const(0)
_SHORT = const(1)
_LONG_HEAD = const(2)
_LONG_BODY = const(3)


class FrameParser:
    """Incremental M-Bus frame parser.

    feed(data, start, end) consumes bytes until a frame is complete or the data is used
    up and returns the position reached (feed again while ``pending``). When a frame is complete, ``kind`` is SHORT,
    CONTROL or LONG and ``c``, ``a``, ``ci`` and ``data_start``/``data_end`` (offsets of
    the user data in ``buf``) describe it, until the next call to feed().
    """

    def __init__(self):
        self.buf = bytearray(MAX_FRAME)
        # bytes of a failed frame that still have to be searched for a frame start
        self._rescan = bytearray(MAX_FRAME)
        self._rs_pos = 0
        self._rs_len = 0
        self._n = 0
        self._need = 0
        self._state = _HUNT
        self.kind = 0
        self.c = 0
        self.a = 0
        self.ci = -1
        self.data_start = 0
        self.data_end = 0
        self.frames = 0  # valid frames seen
        self.errors = 0  # frames dropped as invalid

    def idle(self):
        """The line went idle: a half-received frame is dropped."""
        if self._state != _HUNT or self._rs_len:
            self.errors += 1
        self._state = _HUNT
        self._n = 0
        self._rs_pos = self._rs_len = 0

    def receiving(self):
        """True while part of a frame has been received."""
        return self._state != _HUNT or self._rs_pos < self._rs_len

    def has_pending(self):
        """True while bytes already received wait to be searched for a frame: feed()
        returned a frame before it reached them. Call feed() again (with no new data if
        need be) until this is False, or a frame behind a broken one waits for the next
        byte and is lost when the line goes idle."""
        return self._rs_pos < self._rs_len

    def feed(self, data, start=0, end=-1):
        if end < 0:
            end = len(data)
        self.kind = 0
        if self._state == _HUNT and not self._rs_len and end - start >= 5 \
                and data[start] == SHORT_START and data[start + 4] == STOP:
            # the hot path: a master's REQ_UD2 arrives whole; taken in one step when
            # valid (what five _step() calls would do), else byte by byte below
            c = data[start + 1]
            a = data[start + 2]
            cs = data[start + 3]
            if cs == (c + a) & 0xFF:
                buf = self.buf
                buf[0] = SHORT_START
                buf[1] = c
                buf[2] = a
                buf[3] = cs
                buf[4] = STOP
                self.kind = SHORT
                self.c = c
                self.a = a
                self.ci = -1
                self.data_start = self.data_end = 3
                self.frames += 1
                return start + 5
        rs = self._rescan
        pos = start
        while True:
            # Bytes put back by a failed frame come first: they arrived earlier.
            while self._rs_pos < self._rs_len:
                b = rs[self._rs_pos]
                self._rs_pos += 1
                if self._step(b):
                    return pos
            self._rs_pos = self._rs_len = 0
            if pos >= end:
                return pos
            b = data[pos]
            pos += 1
            if self._step(b):
                return pos

    def _step(self, b):
        """Take one byte; True when it completed a valid frame."""
        state = self._state
        if state == _HUNT:
            if b == SHORT_START:
                self._state = _SHORT
            elif b == LONG_START:
                self._state = _LONG_HEAD
            else:
                return False  # noise, or an E5 from another slave
            self.buf[0] = b
            self._n = 1
            return False
        buf = self.buf
        n = self._n
        buf[n] = b
        n += 1
        self._n = n
        if state == _SHORT:
            if n < 5:
                return False
            if b == STOP and buf[3] == (buf[1] + buf[2]) & 0xFF:
                self.kind = SHORT
                self.c = buf[1]
                self.a = buf[2]
                self.ci = -1
                self.data_start = self.data_end = 3
                return self._done()
            return self._fail()
        if state == _LONG_HEAD:
            if n == 2:
                if b < 3:
                    return self._fail()
            elif n == 3:
                if b != buf[1]:
                    return self._fail()
            elif n == 4:
                if b != LONG_START:
                    return self._fail()
                self._need = buf[1] + 6
                self._state = _LONG_BODY
            return False
        # _LONG_BODY
        if n < self._need:
            return False
        length = buf[1]
        if b != STOP:
            return self._fail()
        cs = 0
        i = 4
        last = 4 + length
        while i < last:
            cs += buf[i]
            i += 1
        if cs & 0xFF != buf[last]:
            return self._fail()
        self.kind = CONTROL if length == 3 else LONG
        self.c = buf[4]
        self.a = buf[5]
        self.ci = buf[6]
        self.data_start = 7
        self.data_end = last
        return self._done()

    def _done(self):
        self._state = _HUNT
        self._n = 0
        self.frames += 1
        return True

    def _fail(self):
        """Drop the start byte of the broken frame and hunt again through the rest."""
        self.errors += 1
        n = self._n
        rs = self._rescan
        # Unread rescan bytes (if any) follow the bytes of this frame.
        tail = self._rs_len - self._rs_pos
        if tail:
            # This frame was read from the rescan bytes themselves (n <= _rs_pos), so the
            # unread tail moves down to sit behind the n - 1 bytes put back in front.
            i = 0
            while i < tail:
                rs[n - 1 + i] = rs[self._rs_pos + i]
                i += 1
        i = 1
        while i < n:
            rs[i - 1] = self.buf[i]
            i += 1
        self._rs_pos = 0
        self._rs_len = n - 1 + tail
        self._state = _HUNT
        self._n = 0
        return False


def checksum(buf, start, end):
    cs = 0
    i = start
    while i < end:
        cs += buf[i]
        i += 1
    return cs & 0xFF


def write_ack(buf):
    buf[0] = ACK
    return 1


def write_long_header(buf, c, a, ci, data_len):
    """Write 68 L L 68 C A CI; the caller puts data_len bytes at offset 7, then calls
    finish_long(). Returns the offset of the user data (7)."""
    length = data_len + 3
    pack_into("<7B", buf, 0, LONG_START, length, length, LONG_START, c, a, ci)
    return 7


def finish_long(buf):
    """Set checksum and stop byte of the long/control frame in buf; return its size."""
    last = 4 + buf[1]
    buf[last] = checksum(buf, 4, last)
    buf[last + 1] = STOP
    return last + 2
