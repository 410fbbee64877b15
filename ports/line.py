# The run loop shared by every port that carries one M-Bus line (a UART, a pyserial port,
# a pty, one TCP client): read, feed the core, detect the idle gap, wait the reply delay,
# write, flush, switch the baud rate when a master asks. Runs on CPython and MicroPython.
#
# A port is any object with
#     readinto(buf) -> int or None   bytes read (may wait up to a short timeout; 0/None: none)
#     write(buf)                     send bytes (a bytearray/memoryview slice)
#     flush()                        wait until they are on the wire (may do nothing)
#     set_baud(rate)                 change the line speed (may do nothing)
try:
    from time import ticks_ms, ticks_diff, ticks_add, sleep_ms
except ImportError:  # CPython
    import time as _time

    def ticks_ms():
        return int(_time.monotonic() * 1000)

    def ticks_diff(a, b):
        return a - b

    def ticks_add(a, b):
        return a + b

    def sleep_ms(ms):
        if ms > 0:
            _time.sleep(ms / 1000)

# EN 13757-2: a slave replies no earlier than 11 bit times and no later than
# 330 bit times + 50 ms after the end of the request.
MIN_DELAY_BITS = 11
MAX_DELAY_BITS = 330
BITS_PER_CHAR = 11     # 8E1: start + 8 data + parity + stop
IDLE_CHARS = 3         # a gap of this many characters ends (drops) a half frame
WAIT_SLICE_MS = 50     # the reply delay is slept in slices of this, checking stop()


def bit_ms(baud, bits):
    return bits * 1000 / baud


def reply_window_ms(baud):
    """(earliest, latest) reply start after the request, in milliseconds."""
    return bit_ms(baud, MIN_DELAY_BITS), bit_ms(baud, MAX_DELAY_BITS) + 50


def default_reply_delay_ms(baud):
    """Comfortably inside the window: 22 bit times, at least 2 ms (what scheduling
    jitter on a PC needs), never beyond the window."""
    lo, hi = reply_window_ms(baud)
    d = bit_ms(baud, 2 * MIN_DELAY_BITS)
    if d < 2:
        d = 2
    if d < lo:
        d = lo
    return int(d + 0.999) if d < hi else int(hi)


class LineServer:
    """Serve one line: `bus` is an mbus_core.bus.Bus, `port` the byte pipe.

    reply_delay_ms: None for the default inside the EN 13757-2 window.
    idle_ms: gap that drops a half-received frame (None: 3 characters, at least 20 ms,
             since a PC and a pty deliver bytes in bursts).
    baud_fallback_ms: after a baud switch, go back to the old rate when no valid frame
             arrives within this time (0: never).
    trace: callable(direction, data) called with "RECV"/"SEND" and each frame's bytes.
    faults: optional object with .apply(line, reply, n, delay_ms) -> (data, n, delay_ms)
             (fault injection; see ports/faults.py).
    """

    def __init__(self, bus, port, baud=2400, reply_delay_ms=None, idle_ms=None,
                 baud_fallback_ms=60000, trace=None, faults=None, rx_size=256):
        self.bus = bus
        self.port = port
        self.trace = trace
        self.faults = faults
        self.fixed_delay = reply_delay_ms
        self.fixed_idle = idle_ms
        self.baud_fallback_ms = baud_fallback_ms
        self.rx = bytearray(rx_size)
        self.running = True
        self.requests = 0
        self.replies = 0
        self._last_rx = ticks_ms()
        self._fallback_baud = 0
        self._fallback_at = 0
        self._frames_at_switch = 0
        self.on_baud = None   # callable(rate) after the line switched
        # callable() after each request's reply has gone out: where a port persists what
        # a master changed, so that a slow write never delays the reply
        self.after_reply = None
        self.on_tick = None   # callable() once per loop turn (periodic housekeeping)
        self._apply_baud(baud)

    def _apply_baud(self, baud):
        self.baud = baud
        self.reply_delay_ms = (self.fixed_delay if self.fixed_delay is not None
                               else default_reply_delay_ms(baud))
        idle = bit_ms(baud, IDLE_CHARS * BITS_PER_CHAR)
        self.idle_ms = self.fixed_idle if self.fixed_idle is not None else max(20, int(idle + 1))

    def serve_forever(self):
        while self.running:
            self.step()

    def stop(self):
        self.running = False

    def step(self):
        """Read once (the port's read timeout paces the loop) and act on what came."""
        n = self.port.readinto(self.rx)
        now = ticks_ms()
        if n:
            self._last_rx = now
            self.receive(self.rx, n)
        elif self.bus.parser.busy and ticks_diff(now, self._last_rx) >= self.idle_ms:
            self.bus.idle()
        if self._fallback_baud and ticks_diff(now, self._fallback_at) >= 0:
            if self.bus.parser.frames == self._frames_at_switch:
                self.switch_baud(self._fallback_baud, fallback=False)
            self._fallback_baud = 0
        if self.on_tick is not None:
            self.on_tick()

    def receive(self, data, n):
        """Feed n received bytes; answer every complete frame."""
        bus = self.bus
        parser = bus.parser
        pos = 0
        while pos < n or parser.pending:   # pending: frames behind a broken one
            pos = bus.feed(data, pos, n)
            if bus.parser.kind:
                self.requests += 1
                if self.trace is not None:
                    p = bus.parser
                    size = 5 if p.kind == 1 else p.buf[1] + 6
                    self.trace("RECV", bytes(p.buf[:size]))
            if bus.reply_len:
                self._reply(bus.reply, bus.reply_len)
            if bus.new_baud:
                self.switch_baud(bus.new_baud)
            if self.after_reply is not None and bus.parser.kind:
                self.after_reply()

    def _reply(self, buf, n):
        delay = self.reply_delay_ms
        data = buf
        if self.faults is not None:
            data, n, delay = self.faults.apply(self, buf, n, delay)
            if not n:
                return
        if delay > 0:
            # in slices: stop() (from a signal handler) ends even a long wait at once
            while self.running:
                wait = delay - ticks_diff(ticks_ms(), self._last_rx)
                if wait < 1:
                    break
                sleep_ms(int(wait) if wait < WAIT_SLICE_MS else WAIT_SLICE_MS)
            if not self.running:
                return   # stopping: no reply after the stop
        out = memoryview(data)[:n]
        self.port.write(out)
        self.port.flush()
        self.replies += 1
        if self.trace is not None:
            self.trace("SEND", bytes(out))

    def switch_baud(self, rate, fallback=True):
        old = self.baud
        if rate == old:
            return
        self.port.set_baud(rate)
        self._apply_baud(rate)
        if fallback and self.baud_fallback_ms:
            self._fallback_baud = old
            self._fallback_at = ticks_add(ticks_ms(), self.baud_fallback_ms)
            self._frames_at_switch = self.bus.parser.frames
        if self.on_baud is not None:
            self.on_baud(rate)
