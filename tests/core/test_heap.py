# On MicroPython: once warmed up, the request/response path allocates nothing.
# (CPython has no heap lock; there these tests only check the replies.)
import sys
from mbus_core.bus import Bus
from mbus_testutil import h, demo_meter, many_records_meter

try:
    import micropython
    LOCK = hasattr(micropython, "heap_lock") and sys.implementation.name == "micropython"
except ImportError:
    LOCK = False

NKE = h("10 40 03 43 16")
REQ_A = h("10 5B 03 5E 16")
REQ_B = h("10 7B 03 7E 16")
NKE_253 = h("10 40 FD 3D 16")
SELECT = h("68 0B 0B 68 73 FD 52 78 56 34 12 FF FF FF FF D2 16")
REQ_253 = h("10 5B FD 58 16")
# built once: a tuple written inline in the loop would be allocated on every pass
REQUESTS = (NKE, REQ_A, REQ_B, REQ_B, NKE_253, SELECT, REQ_253, NKE_253)


def _serve(bus, total):
    # The requests are fed whole and byte by byte; replies are read without copying.
    for data in REQUESTS:
        n = len(data)
        pos = 0
        while pos < n:
            pos = bus.feed(data, pos, n)
            total[0] += bus.reply_len
        for i in range(n):
            bus.feed(data, i, i + 1)
            total[0] += bus.reply_len
        bus.idle()


def _check(bus, serve=_serve, rounds=20):
    total = [0]
    serve(bus, total)  # warm up: first readout lays the telegrams out
    serve(bus, total)
    before = total[0]
    if LOCK:
        micropython.heap_lock()
    try:
        for _ in range(rounds):
            serve(bus, total)
    finally:
        if LOCK:
            micropython.heap_unlock()
    assert total[0] > before  # replies were produced under the lock


def test_heap_locked_single_telegram_meter():
    _check(Bus([demo_meter()]))


def test_heap_locked_multi_telegram_meter():
    _check(Bus([many_records_meter(60)]))


def test_heap_locked_bus_of_meters():
    from mbus_core.meter import Meter
    ms = [demo_meter()] + [Meter(address=10 + i, id=20000000 + i) for i in range(20)]
    _check(Bus(ms))


def test_heap_lock_really_locks():
    # The lock must be able to fail, or the tests above prove nothing.
    if not LOCK:
        return
    micropython.heap_lock()
    try:
        bytearray(100)
        failed = False
    except MemoryError:
        failed = True
    finally:
        micropython.heap_unlock()
    assert failed


# -- 32-bit targets: IDs up to 99999999, every request type, 250 meters ----------------
def _frames():
    from mbus_core import frame
    from mbus_core.codec import frame_build
    from mbus_core.meter import manufacturer_code

    def long(c, a, ci, data=b""):
        return frame_build.build(frame.LONG, c, a, ci, data)
    man = manufacturer_code(0x7FFE)
    sel = h("99 99 99 99") + bytes((man & 0xFF, man >> 8)) + h("FF FF")
    return (h("10 40 01 41 16"), h("10 7B 01 7C 16"), h("10 7B 01 7C 16"),
            h("10 5B 01 5C 16"), h("10 7A 01 7B 16"), h("10 5A 01 5B 16"),
            long(0x73, 0xFD, 0x52, sel), h("10 7B FD 78 16"), h("10 40 FD 3D 16"),
            long(0x53, 1, 0x51, h("01 7A FA")), long(0x73, 250, 0x51, h("01 7A 01")),
            long(0x53, 1, 0x51, h("0C 79 98 99 99 99")),
            long(0x73, 1, 0x51, h("0C 79 99 99 99 99")),
            long(0x53, 1, 0x50), long(0x53, 1, 0xBB), long(0x53, 1, 0x33),
            h("10 5B FE 59 16"), h("10 5B FF 5A 16"), h("10 40 FE 3E 16"))


BIG_FRAMES = None
ALARM = h("02 FD 17 01 00")


def _big_bus():
    from mbus_core.meter import Meter
    ms = [Meter(address=1 + i % 250, id=99999999 - i, manufacturer=0x7FFE - i,
                version=255, medium=255, records=[h("0C 13 99 99 99 99"), h("02 FD 49 D2 04")],
                fabrication=99999999 - i)
          for i in range(250)]
    return Bus(ms)


def _serve_big(bus, total):
    _serve_all(bus, BIG_FRAMES, total)


def _serve_all(bus, frames, total):
    for data in frames:
        bus.slaves[0].meter.alarm = ALARM
        n = len(data)
        pos = 0
        while pos < n or bus.parser.has_pending():
            pos = bus.feed(data, pos, n)
            total[0] += bus.reply_len
        bus.idle()


def test_heap_locked_large_ids_every_request_type():
    global BIG_FRAMES
    if BIG_FRAMES is None:
        BIG_FRAMES = _frames()
    bus = _big_bus()
    _check(bus, _serve_big, 3)
    assert bus.slaves[0].meter.address == 1 and bus.slaves[0].meter.id == 99999999


def test_no_integer_on_the_hot_path_passes_2_to_the_30():
    # 32-bit MicroPython keeps ints below 2^30 unboxed; a larger one is a heap object.
    # CPython can watch every local of the core while it serves (sys.settrace).
    if sys.implementation.name != "cpython":
        return
    bus = _big_bus()
    frames = _frames()
    _serve_all(bus, frames, [0])   # warm up (telegram layout may use what it likes)
    big = []

    def tracer(frame, event, arg):
        if "mbus_core" not in frame.f_code.co_filename:
            return tracer
        values = list(frame.f_locals.items())
        if event == "return":
            values.append(("return value", arg))
        for name, v in values:
            if type(v) is int and not -(1 << 30) <= v < (1 << 30):
                big.append((frame.f_code.co_name, name, v))
        return tracer
    sys.settrace(tracer)
    try:
        _serve_all(bus, frames, [0])
    finally:
        sys.settrace(None)
    assert big == [], big[:5]


def test_no_descriptors_on_the_classes_a_request_writes_to():
    # A property (any descriptor) on a class makes MicroPython look the class up on every
    # attribute store to its instances: about four times the cost of a plain store, a
    # dozen times per request. FrameParser, Slave and Bus keep none.
    from mbus_core.frame import FrameParser
    from mbus_core.slave import Slave
    for cls in (FrameParser, Slave, Bus):
        props = [name for name in dir(cls) if isinstance(getattr(cls, name), property)]
        assert props == [], (cls.__name__, props)
