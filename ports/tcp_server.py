# M-Bus over TCP: many clients at once, one thread (a poller), one shared bus of meters.
#
# What a real M-Bus/TCP gateway (a level converter behind a serial device server) does:
# every TCP connection is a byte pipe onto the SAME physical bus. So here
#   - each client has its own line state: its own frame parser (a half frame from one
#     client never mixes with another client's bytes), its own idle gap, its own replies;
#   - the meters and their state (primary address, secondary selection, FCB, multi-telegram
#     cursor, access number) are shared, as they are on one wire: a master that changes an
#     address over one connection changes it for all, and two masters that interleave
#     multi-telegram readouts (or selections) of the same meter disturb each other just as
#     two masters on one bus would. A gateway answers each request on the connection it
#     came from, which is what we do.
# Each client is served by the shared run loop (ports/line.py: LineServer) with a port
# that reads from its socket and a frame parser of its own; the reply delay defaults to
# 0 over TCP. Nothing polls: the poller (ports/poller.py) waits until a socket is ready or
# the next deadline (a client's half frame or idle timeout, on_tick), and stop() wakes it
# up (a socket pair).
import logging
import socket
import struct
import time
from time import monotonic, monotonic_ns

from mbus_core.frame import FrameParser
from mbus_ports.line import LineServer
from mbus_ports.poller import Poller, READ_ANY, WRITE

log = logging.getLogger("mbus-slave")

MAX_PENDING = 65536   # reply bytes a client may leave unread before we drop it
# A TCP stream may split a frame with pauses no serial line has (Nagle, a WAN, a busy
# client): a half frame is only dropped after this much silence from its client.
TCP_IDLE_MS = 500
TICK_EVERY_S = 5.0     # on_tick's period when it does not say when it wants to run again
TICK_MAX_S = 60.0      # ... and the longest it may ask for
_WAKE = "wake"         # the poller's data of the wake-up socket
_GONE = "gone"


def parse_tcp_device(spec):
    """"tcp:PORT", "tcp:HOST:PORT", "tcp:[V6]:PORT" -> (host, port). Raises ValueError."""
    if not spec.startswith("tcp:"):
        raise ValueError("not a tcp: device")
    rest = spec[4:]
    if rest.startswith("["):
        end = rest.find("]")
        if end < 0 or rest[end + 1:end + 2] != ":":
            raise ValueError("bad TCP address %r (want tcp:[IPV6]:PORT)" % spec)
        host, port = rest[1:end], rest[end + 2:]
    elif ":" in rest:
        host, port = rest.rsplit(":", 1)
        if ":" in host:
            raise ValueError("bad TCP address %r (write IPv6 hosts in brackets: "
                             "tcp:[::1]:PORT)" % spec)
    else:
        host, port = "127.0.0.1", rest
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError("bad TCP port %r in %r (want 0..65535)" % (port, spec))
    if not host:
        raise ValueError("empty host in %r" % spec)
    return host, int(port)


class SocketPort:
    """The LineServer port contract over one non-blocking client socket."""

    writes_at_once = True   # what the socket does not take waits in .out, never in flush

    def __init__(self, sock):
        self.sock = sock
        self.eof = False
        self.out = bytearray()

    def readinto(self, buf):
        if self.eof:
            return 0
        try:
            n = self.sock.recv_into(buf)
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError:   # reset by peer and the like: the client is gone
            self.eof = True
            return 0
        if n == 0:
            self.eof = True
            return 0
        return n

    def write(self, data):
        if not self.out and not self.eof:
            try:  # the usual case: the socket takes the whole reply at once
                n = self.sock.send(data)
            except (BlockingIOError, InterruptedError):
                n = 0
            except OSError:
                self.eof = True
                return
            if n == len(data):
                return
            data = data[n:]
        self.out += data
        self.send_pending()

    def send_pending(self):
        while self.out and not self.eof:
            try:
                n = self.sock.send(self.out)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.eof = True
                return
            del self.out[:n]

    def flush(self):
        pass

    def set_baud(self, rate):
        pass  # no line speed on TCP

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class _Client:
    __slots__ = ("sock", "peer", "line", "port", "io", "want_write", "frames", "last_frame")

    def __init__(self, sock, peer, line, port):
        self.sock = sock
        self.peer = peer
        self.line = line
        self.port = port      # what the line writes to (PacedTcpServer wraps it)
        self.io = port        # the SocketPort itself: its eof and unsent bytes
        self.want_write = False
        # The idle timeout counts from the last valid frame, not the last byte: a client
        # that trickles bytes or floods noise without ever completing a frame is idle too.
        self.frames = 0
        self.last_frame = time.monotonic()

    def idle_for(self, now):
        frames = self.line.parser.frames
        if frames != self.frames:
            self.frames = frames
            self.last_frame = now
        return now - self.last_frame


def _peer_trace(outer, peer):
    """A client line's trace: the server's trace, told which client it is."""
    def trace(direction, data):
        outer(direction, data, peer)
    return trace


def _peer_text(addr):
    host, port = addr[0], addr[1]
    if ":" in host:
        return "[%s]:%d" % (host, port)
    return "%s:%d" % (host, port)


class TcpServer:
    """Serve `bus` (an mbus_core.bus.Bus) to many TCP clients.

    trace: callable(direction, data, peer_text) or None.
    """

    def __init__(self, bus, host="127.0.0.1", port=0, max_clients=32, idle_timeout=300.0,
                 reply_delay_ms=0, trace=None, baud=2400, faults=None):
        self.bus = bus
        self.max_clients = max_clients
        self.idle_timeout = idle_timeout
        self.reply_delay_ms = reply_delay_ms
        self.faults = faults  # fault injection (ports/faults.py), shared by all clients
        # fault idle-close:S: a gateway that resets connections idle for S seconds
        self.reset_idle = faults.idle_close() if faults is not None else 0
        if self.reset_idle:
            self.idle_timeout = self.reset_idle
        self.trace = trace
        self.baud = baud
        self._after_reply = None
        # callable() for periodic housekeeping, returning None (call again in
        # TICK_EVERY_S) or the milliseconds until it wants to run again (LineServer's)
        self.on_tick = None
        # callable() after every poll, between frames (live control's queued changes)
        self.between_frames = None
        self.running = True
        self._due = 0.0           # time.monotonic() of the next housekeeping (None: none)
        self._tick_at = 0.0
        self.clients = {}
        self.accepted = 0
        self.refused = 0
        infos = socket.getaddrinfo(host, port, 0, socket.SOCK_STREAM, 0, socket.AI_PASSIVE)
        family, stype, proto, _, addr = infos[0]
        sock = socket.socket(family, stype, proto)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6 and host in ("::", "[::]"):
                try:  # [::] means every address, IPv4 too where the system allows it
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
                except OSError:
                    pass
            sock.bind(addr)
            sock.listen(64)
        except OSError:
            sock.close()
            raise
        sock.setblocking(False)
        self.sock = sock
        self.address = sock.getsockname()[:2]
        self.poller = Poller()
        self.poller.register(sock, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._wake_w.setblocking(False)
        self.poller.register(self._wake_r, _WAKE)

    @property
    def after_reply(self):
        """callable() after a reply went out: every client's LineServer calls it
        directly (set here, it is set on them all)."""
        return self._after_reply

    @after_reply.setter
    def after_reply(self, fn):
        self._after_reply = fn
        for c in self.clients.values():
            c.line.after_reply = fn

    @property
    def host(self):
        return self.address[0]

    @property
    def port(self):
        return self.address[1]

    def listen_text(self):
        return _peer_text(self.address)

    def serve_forever(self, tick=None):
        """Serve until stop(); `tick`: the longest wait in seconds (None: until the next
        deadline or socket event)."""
        while self.running:
            self.poll(tick)

    def stop(self):
        """Stop serve_forever (safe from a signal handler): also ends a client's reply
        delay that is under way."""
        self.running = False
        for c in list(self.clients.values()):
            c.line.stop()
        try:
            self._wake_w.send(b"\0")
        except OSError:   # full (a wake-up is pending anyway) or closed
            pass

    def wake_fd(self):
        """The descriptor whose write ends a wait (for signal.set_wakeup_fd)."""
        return self._wake_w.fileno()

    def wake(self):
        """End a wait under way (from another thread): poll runs between_frames."""
        try:
            self._wake_w.send(b"\0")
        except OSError:   # full (a wake-up is pending anyway) or closed
            pass

    def poll(self, timeout=None):
        """Wait for the sockets, at most `timeout` seconds (None: no limit of the
        caller's) and never beyond the next deadline; serve what came and the deadlines
        that passed."""
        due = self._due
        if due is not None:
            wait = due - monotonic()
            if timeout is None or wait < timeout:
                timeout = wait if wait > 0 else 0
        try:
            events = self.poller.wait(timeout)
        except InterruptedError:
            events = ()
        # when these events came: one clock read for all of them, in the lines' ticks_us
        now_us = monotonic_ns() // 1000
        now = now_us / 1e6
        data = self.poller.data
        for fd, mask in events:
            c = data.get(fd, _GONE)
            if c.__class__ is not _Client:
                self._other(c)      # the listening socket, the wake-up, a client gone
                continue
            if mask & WRITE:
                c.port.send_pending()
            if mask & READ_ANY:
                # read here, not through the port and LineServer.step: a request costs
                # one recv and Python calls only where the line answers it
                line = c.line
                try:
                    n = c.sock.recv_into(line.rx)
                except (BlockingIOError, InterruptedError):
                    n = -1
                except OSError:   # reset by peer and the like: the client is gone
                    n = 0
                if n > 0:
                    line.receive(line.rx, n, now_us)
                    p = line.parser
                    if p.frames != c.frames:   # a valid frame: the idle timeout restarts
                        c.frames = p.frames
                        c.last_frame = now
                    # a half frame: its idle gap is a deadline (when the last bytes
                    # completed a frame, the parser hunts again with nothing pending)
                    if not p.kind and p.receiving():
                        self._deadline(now + line.idle_ms / 1000)
                elif n == 0:
                    c.io.eof = True
            io = c.io
            if io.eof or io.out or c.want_write:
                self._after_io(c)
        if self._due is not None and now >= self._due:
            self._housekeeping()
        if self.between_frames is not None:
            self.between_frames()

    def _other(self, what):
        """An event that is no client's: a connection to accept, a wake-up to drain."""
        if what is None:
            self._accept()
        elif what is _WAKE:
            try:
                self._wake_r.recv(64)
            except OSError:
                pass
        # else _GONE: a client closed earlier in this round

    def _deadline(self, t):
        if self._due is None or t < self._due:
            self._due = t

    def _after_io(self, c):
        port = c.io
        if port.eof:
            self._close(c, "disconnected")
            return
        if len(port.out) > MAX_PENDING:
            self._close(c, "not reading its replies; dropped")
            return
        want = bool(port.out)
        if want != c.want_write:
            c.want_write = want
            self.poller.modify(c.sock, c, want)

    def _housekeeping(self):
        # Half frames and idle clients are a matter of 0.5 s and more: done when the
        # earliest of them is due (self._due), off the path of every request; then the
        # next such deadline is worked out.
        now = time.monotonic()
        self._due = None
        for c in list(self.clients.values()):
            line = c.line
            if line.parser.receiving():
                line.step(False)     # reads nothing new; drops a half frame after the gap
                self._after_io(c)
                if c.sock.fileno() < 0:
                    continue
                if line.parser.receiving():
                    t = line.timeout_ms()
                    self._deadline(now + (t if t is not None else line.idle_ms) / 1000)
            if self.idle_timeout:
                idle = c.idle_for(now)
                if idle > self.idle_timeout and self.reset_idle:
                    self._reset(c)
                elif idle > self.idle_timeout:
                    self._close(c, "no valid frame for %g s; closed" % self.idle_timeout)
                else:
                    self._deadline(now + self.idle_timeout - idle + 0.001)
        if self.on_tick is not None:
            if now >= self._tick_at:
                ms = self.on_tick()
                s = TICK_EVERY_S if ms is None else min(max(ms / 1000, 0.001), TICK_MAX_S)
                self._tick_at = now + s
            self._deadline(self._tick_at)

    def _reset(self, c):
        """Fault idle-close: the connection reset (RST, no FIN), as idle-timeout gateways
        drop it; the master learns it on its next read or write."""
        try:
            c.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        except OSError:
            pass
        f = self.faults.has("idle-close")
        if f is not None:
            self.faults._say(f, "gateway resets client %s after %g s idle" % (c.peer,
                                                                            f.value))
        self._close(c, "reset after %g s idle (fault idle-close)" % self.reset_idle)

    def _accept(self):
        try:
            sock, addr = self.sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as e:
            log.warning("accept failed: %s", e)
            return
        peer = _peer_text(addr)
        if len(self.clients) >= self.max_clients:
            self.refused += 1
            log.warning("client %s refused: %d clients connected (--max-clients)",
                        peer, len(self.clients))
            try:
                sock.close()
            except OSError:
                pass
            return
        sock.setblocking(False)
        try:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        except OSError:
            pass
        port = SocketPort(sock)
        trace = None if self.trace is None else _peer_trace(self.trace, peer)
        # the client's own parser: a half frame from one never mixes with another's bytes
        line = LineServer(self.bus, port, baud=self.baud,
                          reply_delay_ms=self.reply_delay_ms, idle_ms=TCP_IDLE_MS,
                          baud_fallback_ms=0, trace=trace, faults=self.faults,
                          parser=FrameParser())
        line.after_reply = self._after_reply
        line.running = self.running   # accepted while stopping: no reply delay either
        line.on_baud = lambda rate, peer=peer: log.info(
            "client %s: baud rate switched to %d (no effect on TCP)", peer, rate)
        c = _Client(sock, peer, line, port)
        self.clients[sock.fileno()] = c
        self.poller.register(sock, c)
        if self.idle_timeout:
            self._deadline(c.last_frame + self.idle_timeout + 0.001)
        self.accepted += 1
        log.info("client %s connected (%d connected)", peer, len(self.clients))

    def _close(self, c, why):
        fd = c.sock.fileno()
        if fd >= 0:
            self.poller.unregister(c.sock)
            self.clients.pop(fd, None)
        half = " (a half frame dropped)" if c.line.parser.receiving() else ""
        c.port.close()
        log.info("client %s %s after %d requests%s", c.peer, why, c.line.requests, half)

    def close(self):
        for c in list(self.clients.values()):
            self._close(c, "closed at shutdown")
        for sock in (self.sock, self._wake_r):
            self.poller.unregister(sock)
        self.sock.close()
        self._wake_r.close()
        self._wake_w.close()
        self.poller.close()
