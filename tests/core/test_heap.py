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


def _serve(bus, sizes, total):
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


def _check(bus):
    total = [0]
    sizes = None
    _serve(bus, sizes, total)  # warm up: first readout lays the telegrams out
    _serve(bus, sizes, total)
    before = total[0]
    if LOCK:
        micropython.heap_lock()
    try:
        for _ in range(20):
            _serve(bus, sizes, total)
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
