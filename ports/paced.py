# Baud-rate-faithful reply timing for the host (--wire-timing): on a pty or over TCP a
# reply arrives at once, whatever the baud rate, so a master's byte and frame timeouts are
# never exercised. PacedPort wraps a LineServer port and lets every reply byte leave when
# the last bit of its character would have left a real UART: 11 bit times per character
# at 8E1 (start, 8 data, parity, stop), 10 at 8N1, one more per extra stop bit. A 261-byte
# telegram at 2400 baud 8E1 thus takes 1.2 s, as on a bus.
#
# Nothing blocks: write() schedules the bytes, pump() writes those that are due. On a pty
# the LineServer loop pumps through wait() (the next due byte is a deadline: the port's
# wait ends in time for it) and readinto(); over TCP, PacedTcpServer pumps every client
# from its poll loop and wakes up in time for the next byte. Replies never overlap: one
# Wire per line (per server over TCP, since every TCP connection is a pipe onto the same
# bus), so a second reply starts when the first has left. After a baud switch (CI
# B8..BF) set_baud() paces what is written next at the new rate; the acknowledgement
# already scheduled keeps the old one. Host only (CPython): the MicroPython UART keeps the
# line rate itself.
import collections
import logging
import time

from mbus_ports.tcp_server import TcpServer

log = logging.getLogger("mbus-slave")

MAX_PENDING = 8192     # reply bytes a port may have scheduled; more replies are dropped
MIN_WAIT_S = 0.001     # the loop's shortest wait for the next byte (no busy polling)


def char_bits(parity="E", stopbits=1, databits=8):
    """Bit times one character takes on the wire: start, data, parity, stop bits."""
    return 1 + databits + (0 if parity in (None, "N") else 1) + stopbits


def format_text(baud, parity="E", stopbits=1):
    return "%d baud 8%s%d, %d bits per character" % (baud, parity or "N", stopbits,
                                                     char_bits(parity, stopbits))


class Wire:
    """When the line is free again (time.monotonic() seconds)."""

    def __init__(self):
        self.free_at = 0.0


class PacedPort:
    """A LineServer port whose writes leave at the line rate. Everything else (readinto,
    set_baud, close, and attributes such as .name) goes to the wrapped port."""

    def __init__(self, port, baud, parity="E", stopbits=1, wire=None, clock=time.monotonic,
                 max_pending=MAX_PENDING):
        self.port = port
        self.baud = baud
        self.bits = char_bits(parity, stopbits)
        self.wire = wire if wire is not None else Wire()
        self.clock = clock
        self.max_pending = max_pending
        self.segments = collections.deque()   # [start, char_s, data, bytes written]
        self.pending = 0
        self.overruns = 0                      # replies dropped: max_pending reached

    def __getattr__(self, name):   # only for what this class does not have itself
        return getattr(self.port, name)

    def char_s(self):
        return self.bits / self.baud

    def write(self, data):
        data = bytes(data)
        if not data:
            return
        if self.pending + len(data) > self.max_pending:
            self.overruns += 1
            log.debug("wire timing: %d reply bytes still to send; a %d-byte reply dropped",
                      self.pending, len(data))
            return
        now = self.clock()
        start = max(now, self.wire.free_at)
        cs = self.char_s()
        self.wire.free_at = start + cs * len(data)
        self.segments.append([start, cs, data, 0])
        self.pending += len(data)
        self.pump(now)

    def pump(self, now=None):
        """Write the bytes that are due; return when the next one is (None: none left)."""
        if now is None:
            now = self.clock()
        segs = self.segments
        while segs:
            seg = segs[0]
            start, cs, data, sent = seg
            due = min(len(data), int((now - start) / cs + 1e-9)) if now > start else 0
            if due > sent:
                self.port.write(memoryview(data)[sent:due])
                self.pending -= due - sent
                seg[3] = sent = due
            if sent < len(data):
                return start + cs * (sent + 1)
            segs.popleft()
        return None

    def busy(self):
        return bool(self.segments)

    def wait(self, timeout_ms):
        """The wrapped port's wait(), ended in time for the next byte due (a deadline of
        its own); returns at once where the wrapped port cannot wait (readinto does)."""
        nxt = self.pump()
        wait = getattr(self.port, "wait", None)
        if wait is None:
            return
        if nxt is not None:
            ms = max(MIN_WAIT_S, nxt - self.clock()) * 1000
            if timeout_ms is None or ms < timeout_ms:
                timeout_ms = ms
        wait(timeout_ms)
        self.pump()

    def readinto(self, buf):
        nxt = self.pump()
        port = self.port
        wait = getattr(port, "read_timeout", None)
        if nxt is None or wait is None:
            n = port.readinto(buf)
        else:   # wake up in time for the next byte
            port.read_timeout = max(MIN_WAIT_S, min(wait, nxt - self.clock()))
            try:
                n = port.readinto(buf)
            finally:
                port.read_timeout = wait
        self.pump()
        return n

    def flush(self):
        """Does not wait: the bytes leave as they fall due."""
        self.port.flush()

    def set_baud(self, rate):
        self.baud = rate
        self.port.set_baud(rate)

    def close(self):
        self.segments.clear()
        self.pending = 0
        self.port.close()


class PacedTcpServer(TcpServer):
    """TcpServer whose clients' replies are paced on one shared wire. The poll loop
    drains the schedules by time, so a paced reply never holds up reading from the other
    clients; their replies wait for the bus, as behind a gateway on one wire."""

    def __init__(self, *args, **kw):
        self.parity = kw.pop("parity", "E")
        self.stopbits = kw.pop("stopbits", 1)
        TcpServer.__init__(self, *args, **kw)
        self.wire = Wire()

    def _accept(self):
        known = set(self.clients)
        TcpServer._accept(self)
        for fd, c in self.clients.items():
            if fd in known:
                continue
            c.port = c.line.port = PacedPort(c.port, c.line.baud, self.parity,
                                             self.stopbits, self.wire)
            c.line.on_baud = lambda rate, peer=c.peer: log.info(
                "client %s: baud rate switched to %d (replies paced at it)", peer, rate)

    def poll(self, timeout=None):
        nxt = self._pump()
        if nxt is not None:
            wait = max(MIN_WAIT_S, nxt - time.monotonic())
            if timeout is None or wait < timeout:
                timeout = wait
        TcpServer.poll(self, timeout)
        self._pump()

    def _pump(self):
        nxt = None
        now = time.monotonic()
        for c in list(self.clients.values()):
            if not c.port.busy():
                continue
            t = c.port.pump(now)
            self._after_io(c)    # what the socket did not take; a client that went away
            if t is not None and (nxt is None or t < nxt):
                nxt = t
        return nxt
