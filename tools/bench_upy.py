# Core cost per request, and on MicroPython the heap figures. Runs on both runtimes:
#     micropython tools/bench_upy.py [N]       (tools/bench.py runs it and reads the result)
# Prints one line "BENCH {json}" with microseconds per request for a REQ_UD2 with a toggled
# FCB (a fresh telegram) and a repeat (same FCB), for meters of 1, 10 and 50 records and for
# a bus of 1 vs 250 meters; on MicroPython also the heap allocated per request in steady
# state and the heap a 10-record meter takes.
import sys

try:
    from time import ticks_us, ticks_diff
except ImportError:  # CPython
    from time import perf_counter_ns as _ns

    def ticks_us():
        return _ns() // 1000

    def ticks_diff(a, b):
        return a - b

if __name__ == "__main__":
    _here = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
    sys.path.insert(0, _here + "/..")

from mbus_core.bus import Bus
from mbus_core.meter import Meter


def short(c, a):
    return bytes((0x10, c, a, (c + a) & 0xFF, 0x16))


def records(n):
    """n constant records of the kinds a heat meter has: energy, volume, power, flow,
    temperatures, date; 6 to 7 bytes each."""
    kinds = ((0x04, 0x06), (0x04, 0x13), (0x04, 0x2B), (0x04, 0x3B), (0x02, 0x5B),
             (0x02, 0x5F), (0x04, 0x6D))
    out = []
    for i in range(n):
        dif, vif = kinds[i % len(kinds)]
        size = 4 if dif == 0x04 else 2
        v = 1000 + 37 * i
        body = [dif | (0x40 if i >= len(kinds) else 0), vif]
        for k in range(size):
            body.append((v >> (8 * k)) & 0xFF)
        out.append(bytes(body))
    return out


def meter(address, nrec, ident=None):
    return Meter(address=address, id=ident if ident is not None else 10000000 + address,
                 manufacturer="TST", medium=4, records=records(nrec))


def _loop(bus, a, b, n):
    """n requests, a and b alternating; returns microseconds per request."""
    half = n // 2
    t0 = ticks_us()
    for _ in range(half):
        bus.feed(a, 0, 5)
        bus.feed(b, 0, 5)
    return ticks_diff(ticks_us(), t0) / (2 * half)


def cost(bus, address, repeat, n, rounds=3):
    """Best of `rounds` runs of n requests (the minimum: least disturbed by the OS)."""
    a = short(0x7B if repeat else 0x5B, address)
    b = short(0x7B, address)
    _loop(bus, a, b, 20)  # warm up: lays the telegrams out
    best = None
    for _ in range(rounds):
        us = _loop(bus, a, b, n)
        if best is None or us < best:
            best = us
    return best


class Canned:
    """The floor of a slave: parse the request, copy a ready telegram, patch its access
    number and checksum; nothing else."""

    def __init__(self, telegram):
        from mbus_core.frame import FrameParser
        self.parser = FrameParser()
        self.telegram = telegram
        self.tx = bytearray(261)
        self.access = 0
        self.base = sum(telegram[4:-2]) - telegram[15]

    def feed(self, data, start, end):
        pos = self.parser.feed(data, start, end)
        if self.parser.kind:
            t = self.telegram
            n = len(t)
            self.tx[0:n] = t
            a = self.access
            self.tx[15] = a
            self.tx[n - 2] = (self.base + a) & 0xFF
            self.access = (a + 1) & 0xFF
        return pos


def core_costs(n):
    out = {}
    for nrec in (1, 10, 50):
        bus = Bus([meter(1, nrec)])
        out["fresh_%d" % nrec] = cost(bus, 1, False, n)
        out["repeat_%d" % nrec] = cost(bus, 1, True, n)
        bus.feed(short(0x5B, 1), 0, 5)
        canned = Canned(bytes(bus.reply[:bus.reply_len]))
        out["canned_%d" % nrec] = cost(canned, 1, False, n)
    bus1 = Bus([meter(1, 10)])
    out["bus_1"] = cost(bus1, 1, False, n)
    bus250 = Bus([meter(a, 10) for a in range(1, 251)])
    out["bus_250"] = cost(bus250, 125, False, n)
    out["bus_250_last"] = cost(bus250, 250, False, n)
    return out


def _allocated(bus, a, b, n):
    """Heap bytes allocated by n requests with the collector off."""
    import gc
    gc.collect()
    gc.disable()
    try:
        m0 = gc.mem_alloc()
        _loop(bus, a, b, n)
        return gc.mem_alloc() - m0
    finally:
        gc.enable()


def heap_figures(n):
    """MicroPython only: bytes allocated per request in steady state (gc disabled, so
    nothing is collected in between; the difference between n and 2n requests, so the
    harness's own few bytes cancel out), and the heap a 10-record meter takes."""
    import gc
    out = {}
    gc.collect()
    m0 = gc.mem_alloc()
    empty = Bus([])
    gc.collect()
    out["empty_bus_heap"] = gc.mem_alloc() - m0
    del empty
    gc.collect()
    m0 = gc.mem_alloc()
    m = meter(1, 10)
    gc.collect()
    m1 = gc.mem_alloc()
    bus = Bus([m])
    a = short(0x5B, 1)
    b = short(0x7B, 1)
    bus.feed(a, 0, 5)   # the first readout lays the telegrams out
    gc.collect()
    m2 = gc.mem_alloc()
    out["meter10_heap"] = m1 - m0
    out["meter10_bus_heap"] = m2 - m0
    _loop(bus, a, b, 20)
    big = Bus([meter(x, 10) for x in range(1, 251)])
    c = short(0x5B, 125)
    d = short(0x7B, 125)
    _loop(big, c, d, 20)
    gc.collect()
    out["bus250_heap"] = gc.mem_alloc() - m2
    for key, which, x, y in (("alloc_per_request", bus, a, b),
                             ("alloc_per_request_bus250", big, c, d),
                             ("alloc_per_repeat", bus, b, b)):
        one = _allocated(which, x, y, n)
        two = _allocated(which, x, y, 2 * n)
        out[key] = (two - one) / n
    out["heap_free"] = gc.mem_free()
    return out


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    n = int(argv[0]) if argv else 2000
    out = {"runtime": sys.implementation.name, "n": n}
    res = core_costs(n)
    for k in res:
        out[k] = res[k]
    if sys.implementation.name == "micropython":
        res = heap_figures(n)
        for k in res:
            out[k] = res[k]
    import json
    print("BENCH " + json.dumps(out))
    return out


if __name__ == "__main__":
    main()
