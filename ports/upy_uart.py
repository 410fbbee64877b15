# MicroPython UART adapter: a machine.UART (or anything with the same API) behind the
# LineServer port contract (ports/line.py):
#     readinto(buf) -> n or None, write(buf), flush(), set_baud(rate), close()
#
# The line is 8E1 (machine.UART parity=0 is even). Read timeouts come from the baud rate:
# readinto() waits up to `poll_ms` for the first byte (this paces the run loop), then
# returns once the line stayed quiet for `gap_chars` character times (timeout_char), so a
# frame usually arrives in one chunk. flush() uses UART.flush() where the port has it,
# else polls txdone(), else waits the computed transmit time. An optional TX-enable pin
# (for transceivers that need one) is driven active from the first written byte until the
# last one left the UART.
#
# Importable everywhere: machine.UART is only looked up when no uart object is given
# (the MicroPython unix port has no machine.UART; boards/unix.py passes a pty shim).
try:
    from time import ticks_us, ticks_diff, sleep_ms, sleep_us
except ImportError:  # CPython (host tests of the adapter with a fake UART)
    import time as _time

    def ticks_us():
        return int(_time.monotonic() * 1000000)

    def ticks_diff(a, b):
        return a - b

    def sleep_ms(ms):
        _time.sleep(ms / 1000)

    def sleep_us(us):
        _time.sleep(us / 1000000)

BITS_PER_CHAR = 11   # start + 8 data + parity + stop


def char_us(baud):
    """Time of one 8E1 character on the wire, in microseconds (rounded up)."""
    return (BITS_PER_CHAR * 1000000 + baud - 1) // baud


def char_timeout_ms(baud, gap_chars=2.5):
    """The inter-character timeout for a baud rate: `gap_chars` characters, at least 2 ms
    (the resolution of UART timeouts on most ports is 1 ms)."""
    ms = int(gap_chars * char_us(baud) / 1000 + 0.999)
    return ms if ms > 2 else 2


class UartPort:
    """uart: a ready machine.UART-like object, or None to open machine.UART(uart_id, ...).
    tx, rx: pins passed to machine.UART (a Pin or a number; None: the port's default).
    tx_enable: a machine.Pin driven to `tx_active` while sending (None: not used).
    poll_ms: how long readinto() waits for the first byte."""

    def __init__(self, uart=None, uart_id=0, baud=2400, tx=None, rx=None, tx_enable=None,
                 tx_active=1, poll_ms=20, gap_chars=2.5, rxbuf=512):
        self.uart_id = uart_id
        self.tx = tx
        self.rx = rx
        self.poll_ms = poll_ms
        self.gap_chars = gap_chars
        self.rxbuf = rxbuf
        self.tx_enable = tx_enable
        self.tx_active = 1 if tx_active else 0
        if tx_enable is not None:
            tx_enable.value(1 - self.tx_active)
        self.baud = baud
        self._char_us = char_us(baud)
        self._sent = 0        # bytes written since the last flush
        self._t_write = 0     # ticks_us of the first of them
        if uart is None:
            uart = self._open(baud)
        else:
            self._init(uart, baud)
        self.uart = uart
        self._mode = "flush" if hasattr(uart, "flush") else (
            "txdone" if hasattr(uart, "txdone") else "time")

    # -- opening and configuring -------------------------------------------------------
    def _kw(self, baud):
        kw = {"baudrate": baud, "bits": 8, "parity": 0, "stop": 1,
              "timeout": self.poll_ms, "timeout_char": char_timeout_ms(baud, self.gap_chars)}
        if self.tx is not None:
            kw["tx"] = self.tx
        if self.rx is not None:
            kw["rx"] = self.rx
        return kw

    def _open(self, baud):
        from machine import UART
        kw = self._kw(baud)
        kw["rxbuf"] = self.rxbuf
        try:
            return UART(self.uart_id, **kw)
        except (TypeError, ValueError):
            del kw["rxbuf"]  # ports without a configurable receive buffer
            return UART(self.uart_id, **kw)

    def _init(self, uart, baud):
        kw = self._kw(baud)
        if "tx" in kw:  # the pins were given when the uart was made; keep them
            del kw["tx"]
        if "rx" in kw:
            del kw["rx"]
        uart.init(**kw)

    # -- the port contract ---------------------------------------------------------------
    def readinto(self, buf):
        """Bytes received (the UART waits poll_ms for the first, then until a gap of
        gap_chars characters or a full buffer); None or 0 when the line was quiet."""
        try:
            return self.uart.readinto(buf)
        except OSError:
            # e.g. a framing/parity error reported by the driver: drop it, go on
            return None

    def write(self, data):
        if self._sent == 0:
            if self.tx_enable is not None:
                self.tx_enable.value(self.tx_active)
            self._t_write = ticks_us()
        n = len(data)
        done = 0
        while done < n:
            k = self.uart.write(data if done == 0 else memoryview(data)[done:])
            if k is None:  # some ports return None while the TX buffer is full
                k = 0
            if k == 0:
                sleep_us(self._char_us)
            done += k
        self._sent += n

    def flush(self):
        """Return once every written byte has left the UART (then release TX-enable)."""
        if self._sent == 0:
            return
        u = self.uart
        mode = self._mode
        if mode == "flush":
            u.flush()
        elif mode == "txdone":
            while not u.txdone():
                sleep_us(self._char_us)
        else:
            left = self._sent * self._char_us - ticks_diff(ticks_us(), self._t_write)
            if left > 0:
                sleep_us(left)
        if self.tx_enable is not None:
            if mode != "time":
                # the FIFO is empty; let the stop bit of the last character go out
                sleep_us(self._char_us)
            self.tx_enable.value(1 - self.tx_active)
        self._sent = 0

    def set_baud(self, rate):
        if rate == self.baud:
            return
        self.flush()
        self.baud = rate
        self._char_us = char_us(rate)
        self._init(self.uart, rate)

    def close(self):
        if self.tx_enable is not None:
            self.tx_enable.value(1 - self.tx_active)
        deinit = getattr(self.uart, "deinit", None)
        if deinit is not None:
            deinit()
