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


class UartPort:
    """uart: a ready machine.UART-like object, or None to open machine.UART(uart_id, ...).
    tx, rx: pins passed to machine.UART (a Pin or a number; None: the port's default).
    tx_enable: a machine.Pin driven to `tx_active` while sending (None: not used).
    poll_ms: how long readinto() waits for the first byte."""

    def __init__(self, uart=None, uart_id=0, baud=2400, tx=None, rx=None, tx_enable=None,
                 tx_active=1, poll_ms=20, gap_chars=2.5, rxbuf=512):
        self.poll_ms = poll_ms
        self.gap_chars = gap_chars
        self.tx_enable = tx_enable
        self.tx_active = 1 if tx_active else 0
        if tx_enable is not None:
            tx_enable.value(1 - self.tx_active)
        self._sent = 0        # bytes written since the last flush
        self._t_write = 0     # ticks_us of the first of them
        uart = self._setup(baud, uart, uart_id, tx, rx, rxbuf)
        self.uart = uart
        self._mode = "flush" if hasattr(uart, "flush") else (
            "txdone" if hasattr(uart, "txdone") else "time")

    def _setup(self, baud, uart, uart_id=0, tx=None, rx=None, rxbuf=0):
        """8E1 at `baud`, the read timeouts for it: `uart` set up again (its pins kept),
        or (None) machine.UART(uart_id) opened on the pins tx, rx (None: the port's
        default) with a receive buffer of rxbuf bytes where the port takes one. The
        inter-character timeout is gap_chars characters, at least 2 ms (the resolution
        of UART timeouts on most ports is 1 ms)."""
        self.baud = baud
        # one 8E1 character (start + 8 data + parity + stop bits) in microseconds,
        # rounded up
        self._char_us = (11 * 1000000 + baud - 1) // baud
        ms = int(self.gap_chars * self._char_us / 1000 + 0.999)
        kw = {"baudrate": baud, "bits": 8, "parity": 0, "stop": 1,
              "timeout": self.poll_ms, "timeout_char": ms if ms > 2 else 2}
        if uart is not None:
            uart.init(**kw)
            return uart
        from machine import UART
        if tx is not None:
            kw["tx"] = tx
        if rx is not None:
            kw["rx"] = rx
        try:
            return UART(uart_id, rxbuf=rxbuf, **kw)
        except (TypeError, ValueError):   # ports without a configurable receive buffer
            return UART(uart_id, **kw)

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
        self._setup(rate, self.uart)

    def close(self):
        if self.tx_enable is not None:
            self.tx_enable.value(1 - self.tx_active)
        deinit = getattr(self.uart, "deinit", None)
        if deinit is not None:
            deinit()
