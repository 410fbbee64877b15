# Helpers shared by the core tests (CPython and MicroPython alike).
from mbus_core import frame
from mbus_core.codec import frame_build
from mbus_core.bus import Bus
from mbus_core.meter import Meter


def raises(exc, fn, *args, **kw):
    """Call fn; the message of the `exc` it must raise."""
    try:
        fn(*args, **kw)
    except exc as e:
        return str(e)
    raise AssertionError("%s not raised" % exc.__name__)


def h(text):
    """'10 5B 03' -> bytes"""
    return bytes.fromhex(text.replace(" ", ""))


def hexs(data):
    return " ".join("%02X" % b for b in data)


def short(c, a):
    return frame_build.build(frame.SHORT, c, a)


def long(c, a, ci, data=b""):
    return frame_build.build(frame.LONG, c, a, ci, data)


class Lcg:
    """Deterministic pseudo-random numbers, the same on both runtimes."""

    def __init__(self, seed=1):
        self.state = seed & 0x7FFFFFFF or 1

    def next(self, n):
        self.state = (self.state * 1103515245 + 12345) & 0x7FFFFFFF
        return (self.state >> 8) % n

    def bytes(self, n):
        return bytes(self.next(256) for _ in range(n))


def replies(bus, data, chunks=None):
    """Feed data (in the given chunk sizes, or whole) and collect every reply."""
    out = []
    pos = 0
    total = len(data)
    k = 0
    while pos < total:
        size = total - pos if chunks is None else chunks[k % len(chunks)]
        k += 1
        end = pos + size if pos + size < total else total
        p = pos
        while p < end or bus.parser.has_pending():
            p = bus.feed(data, p, end)
            if bus.reply_len:
                out.append(bytes(bus.reply[:bus.reply_len]))
        pos = end
    return out


def feed_cuts(bus, data, cuts):
    """Feed data split at the given cut points (any numbers; taken modulo the length);
    return every reply as bytes."""
    out = []
    points = sorted(set(c % (len(data) + 1) for c in cuts)) + [len(data)]
    start = 0
    for end in points:
        pos = start
        while pos < end or bus.parser.has_pending():
            pos = bus.feed(data, pos, end)
            if bus.reply_len:
                out.append(bytes(bus.reply[:bus.reply_len]))
        start = max(start, end)
    return out


def demo_meter(**kw):
    """The meter of the libmbus traces: address 3, ID 12345678, TST, version 1, medium 0."""
    args = {"address": 3, "id": 12345678, "manufacturer": "TST", "version": 1, "medium": 0,
            "records": [h("02 FD 49 D2 04"), h("02 16 C8 01")]}
    for k in kw:
        args[k] = kw[k]
    return Meter(**args)


def demo_bus(**kw):
    return Bus([demo_meter(**kw)])


def many_records_meter(n=40, **kw):
    """A meter whose records need several telegrams: n records of 6 bytes."""
    recs = []
    for i in range(n):
        v = 1000 + i
        recs.append(bytes((0x04, 0x13, v & 0xFF, (v >> 8) & 0xFF, 0, 0)))
    kw["records"] = recs
    return demo_meter(**kw)


class ChunkPort:
    """A LineServer port that hands out the given chunks of bytes, one per read, and
    keeps what is written."""

    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.written = []

    def readinto(self, buf):
        if not self.chunks:
            return 0
        d = self.chunks.pop(0)
        for i in range(len(d)):
            buf[i] = d[i]
        return len(d)

    def write(self, d):
        self.written.append(bytes(d))

    def flush(self):
        pass

    def set_baud(self, r):
        pass
