# The run loop shared by every port that carries one M-Bus line (a UART, a pyserial port,
# a pty, one TCP client): read, feed the core, detect the idle gap, wait the reply delay,
# write, flush, switch the baud rate when a master asks. Runs on CPython and MicroPython.
#
# A port is any object with
#     readinto(buf) -> int or None   bytes read (may wait up to a short timeout; 0/None: none)
#     write(buf)                     send bytes (a bytearray/memoryview slice)
#     flush()                        wait until they are on the wire (may do nothing)
#     set_baud(rate)                 change the line speed (may do nothing)
# and optionally
#     wait(timeout_ms)               return once bytes can be read, wake() was called or
#                                    timeout_ms passed (None: no deadline); the loop then
#                                    blocks there instead of polling, and readinto() need
#                                    not wait at all
#     wake()                         make a wait() under way (or the next one) return
#                                    at once (stop() calls it, also from a signal handler)
#     wake_fd()                      a file descriptor whose write does what wake() does
#                                    (the CLI's signal.set_wakeup_fd; None: none)
#     writes_at_once = True          write() hands the bytes over at once and flush()
#                                    does nothing (a socket): after a reply without a
#                                    delay the loop calls neither flush() nor the clock
try:
    from time import ticks_ms, ticks_us, ticks_diff, ticks_add, sleep_ms, sleep_us
except ImportError:  # CPython
    from mbus_ports.ticks import ticks_ms, ticks_us, ticks_diff, ticks_add, sleep_ms, \
        sleep_us

# EN 13757-2: a slave replies no earlier than 11 bit times and no later than
# 330 bit times + 50 ms after the end of the request.
MIN_DELAY_BITS = 11
MAX_DELAY_BITS = 330
BITS_PER_CHAR = 11     # 8E1: start + 8 data + parity + stop
IDLE_CHARS = 3         # a gap of this many characters ends (drops) a half frame
WAIT_SLICE_MS = 50     # the reply delay is slept in slices of this, checking stop()
WAIT_SLICE_US = WAIT_SLICE_MS * 1000
TICK_EVERY_MS = 5000   # on_tick's period when it does not say when it wants to run again
TICK_MAX_MS = 60000    # ... and the longest it may ask for


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
    parser: this line's FrameParser (default: the bus's own). A TCP gateway's clients
             each have one, feeding the same meters (Bus.feed_line).
    """

    def __init__(self, bus, port, baud=2400, reply_delay_ms=None, idle_ms=None,
                 baud_fallback_ms=60000, trace=None, faults=None, rx_size=256,
                 parser=None):
        self.bus = bus
        self.parser = bus.parser if parser is None else parser
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
        self._view_buf = None   # the reply buffer whose views _view() keeps
        self._views = {}
        self._out_of = None     # the last reply: (buffer, length) -> what was written
        self._out_n = 0
        self._out = None
        # the port blocks in wait() until a byte or the next deadline (else its readinto
        # paces the loop); wake() ends such a wait (stop())
        self.waits = hasattr(port, "wait")
        self._at_once = getattr(port, "writes_at_once", False)
        self._wake = getattr(port, "wake", None)
        self._rx_us = ticks_us()   # when the last bytes came (the reply delay counts from)
        self._active_us = self._rx_us   # the last bytes in or out (quiet_ms())
        self._fallback_baud = 0
        self._fallback_at = 0
        self._frames_at_switch = 0
        self.on_baud = None   # callable(rate) after the line switched
        # callable() after each request's reply has gone out: where a port persists what
        # a master changed, so that a slow write never delays the reply
        self.after_reply = None
        # callable() for periodic housekeeping, returning None (call again in tick_every_ms)
        # or the milliseconds until it wants to run again (at most TICK_MAX_MS)
        self.on_tick = None
        self.tick_every_ms = TICK_EVERY_MS
        self._tick_at = ticks_ms()
        # callable() after every step, between two frames (never during a reply): where
        # live control applies its queued changes (ports/control_ops.py); wake() runs it
        # promptly on an idle line
        self.between_frames = None
        self._apply_baud(baud)

    def _apply_baud(self, baud):
        self.baud = baud
        self.reply_delay_ms = (self.fixed_delay if self.fixed_delay is not None
                               else default_reply_delay_ms(baud))
        self.reply_delay_us = int(self.reply_delay_ms * 1000)
        idle = bit_ms(baud, IDLE_CHARS * BITS_PER_CHAR)
        self.idle_ms = self.fixed_idle if self.fixed_idle is not None else max(20, int(idle + 1))
        self.idle_us = int(self.idle_ms * 1000)

    def serve_forever(self):
        while self.running:
            self.step()

    def stop(self):
        """Stop serve_forever and a reply delay under way (safe from a signal handler)."""
        self.running = False
        if self._wake is not None:
            self._wake()

    def wake(self):
        """End a wait() under way (from another thread): the loop steps at once and runs
        between_frames."""
        if self._wake is not None:
            self._wake()

    def quiet_ms(self):
        """Milliseconds since the last bytes came or the last reply went out (right for
        up to half the ticks_us() period: about 9 minutes on MicroPython)."""
        return ticks_diff(ticks_us(), self._active_us) // 1000

    def tick_soon(self):
        """Have on_tick run at the end of this step or the next (from the line's own
        callbacks: a port has something to do between frames)."""
        self._tick_at = ticks_ms()

    def timeout_ms(self):
        """Milliseconds until the next deadline (a half frame's idle gap, the baud
        fallback, on_tick), rounded up; None when there is none. Small ints only."""
        t = -1
        if self.parser.receiving():
            t = (self.idle_us - ticks_diff(ticks_us(), self._rx_us) + 999) // 1000
            if t < 0:
                t = 0
        if self._fallback_baud or self.on_tick is not None:
            now = ticks_ms()
            if self._fallback_baud:
                d = ticks_diff(self._fallback_at, now)
                if t < 0 or d < t:
                    t = d if d > 0 else 0
            if self.on_tick is not None:
                d = ticks_diff(self._tick_at, now)
                if t < 0 or d < t:
                    t = d if d > 0 else 0
        return None if t < 0 else t

    def step(self, wait=True):
        """Wait for bytes or the next deadline (when the port has wait(); else its
        readinto's own timeout paces the loop), read once, act on what came and on the
        deadlines that passed. wait=False: read at once (the caller knows bytes are
        there)."""
        port = self.port
        if wait and self.waits:
            port.wait(self.timeout_ms())
        n = port.readinto(self.rx)
        if n:
            self.receive(self.rx, n, ticks_us())
        elif self.parser.receiving() and ticks_diff(ticks_us(), self._rx_us) >= self.idle_us:
            self.parser.idle()
        if self._fallback_baud or self.on_tick is not None:
            now = ticks_ms()
            if self._fallback_baud and ticks_diff(now, self._fallback_at) >= 0:
                if self.parser.frames == self._frames_at_switch:
                    self.switch_baud(self._fallback_baud, fallback=False)
                self._fallback_baud = 0
            if self.on_tick is not None and ticks_diff(now, self._tick_at) >= 0:
                ms = self.on_tick()
                if ms is None:
                    ms = self.tick_every_ms
                elif ms > TICK_MAX_MS:
                    ms = TICK_MAX_MS
                elif ms < 1:
                    ms = 1
                self._tick_at = ticks_add(now, int(ms))
        if self.between_frames is not None:
            self.between_frames()

    def receive(self, data, n, t_us=None):
        """Feed n bytes received at t_us (ticks_us(); None: keep the time noted
        before); answer every complete frame. A caller that reads for the line
        (TcpServer: it knows which socket has bytes and when they came) calls this
        directly, and step(False) for the deadlines."""
        if t_us is not None:
            self._rx_us = t_us
            self._active_us = t_us
        bus = self.bus
        parser = self.parser
        if self.faults is not None and self.faults.echoes:
            self.faults.heard(self, data, n)   # an echoing level converter
        pos = 0
        while pos < n or parser.has_pending():   # pending: frames behind a broken one
            pos = bus.feed_line(parser, data, pos, n)
            if not parser.kind:
                continue   # noise, a broken frame or part of one: nothing to answer
            self.requests = (self.requests + 1) & 0x3FFFFFFF   # small ints on 32-bit boards
            if self.trace is not None:
                size = 5 if parser.kind == 1 else parser.buf[1] + 6
                self.trace("RECV", bytes(parser.buf[:size]))
            if bus.reply_len:
                self._reply(bus.reply, bus.reply_len)
            if bus.new_baud:
                self.switch_baud(bus.new_baud)
            if self.after_reply is not None:
                self.after_reply()

    def _reply(self, buf, n):
        delay = self.reply_delay_us
        data = buf
        if self.faults is not None:
            data, n, ms = self.faults.apply(self, buf, n, self.reply_delay_ms)
            if not n:
                return
            if ms != self.reply_delay_ms:
                delay = int(ms * 1000)
        if delay > 0:
            # timed in microseconds from the request's last bytes; slept in slices, so
            # that stop() (from a signal handler or a thread) ends even a long wait at once
            while self.running:
                wait = delay - ticks_diff(ticks_us(), self._rx_us)
                if wait <= 0:
                    break
                if wait > WAIT_SLICE_US:
                    sleep_ms(WAIT_SLICE_MS)
                else:
                    sleep_us(wait)
            if not self.running:
                return   # stopping: no reply after the stop
        if data is self._out_of and n == self._out_n:
            out = self._out     # the same reply buffer and length as last time
        else:
            out = self._out = self._view(data, n)
            self._out_of = data
            self._out_n = n
        if self.faults is not None and self.faults.shaping:
            self.faults.send(self, out)    # pauses inside the reply (line faults)
            self._active_us = ticks_us()
        elif delay <= 0 and self._at_once:
            # a socket took it right after the request came: no flush() that does
            # nothing, no clock read for a time known already
            self.port.write(out)
            self._active_us = self._rx_us
        else:
            self.port.write(out)
            self.port.flush()
            self._active_us = ticks_us()
        self.replies = (self.replies + 1) & 0x3FFFFFFF   # small ints on 32-bit boards
        if self.trace is not None:
            self.trace("SEND", bytes(out))

    def _view(self, data, n):
        """data[:n] without a copy. A memoryview is a heap object: made anew for every
        reply, it was an allocation per request (seen on a Pico with the heap locked), so
        a whole buffer (a slave's E5) goes as it is, and the views of the last partly
        sent buffer (a slave's telegram buffer) are kept, one per length. (On a bus, a
        reply from another meter than the last makes its view anew.)"""
        if n == len(data):
            return data
        if data is not self._view_buf:
            self._view_buf = data
            self._views = {}
        v = self._views.get(n)
        if v is None:
            v = self._views[n] = memoryview(data)[:n]
        return v

    def switch_baud(self, rate, fallback=True):
        old = self.baud
        if rate == old:
            return
        self.port.set_baud(rate)
        self._apply_baud(rate)
        if fallback and self.baud_fallback_ms:
            self._fallback_baud = old
            self._fallback_at = ticks_add(ticks_ms(), self.baud_fallback_ms)
            self._frames_at_switch = self.parser.frames
        if self.on_baud is not None:
            self.on_baud(rate)
