# MicroPython's time.ticks_* and sleep_* for CPython (ports/line.py and the firmware use
# them on both runtimes; a board never loads this module). Plain integers: no wrap.
import time as _time

_ns = _time.monotonic_ns


def ticks_ms():
    return _ns() // 1000000


def ticks_us():
    return _ns() // 1000


def ticks_diff(a, b):
    return a - b


def ticks_add(a, b):
    return a + b


def sleep_ms(ms):
    if ms > 0:
        _time.sleep(ms / 1000)


def sleep_us(us):
    if us > 0:
        _time.sleep(us / 1000000)
