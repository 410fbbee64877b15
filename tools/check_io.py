# mbus-check: the master's line. Opens a serial port, a pty, a pyserial URL or tcp:HOST:PORT
# once (reopening an 8E1 pty may fail on recent kernels, see ports/pty_port.py), sends a
# request and collects what comes back with the time of every chunk, measured from the end
# of the request's write (after flush), as a master sees it.
import os
import stat
import termios
import time

import serial

READ_SLICE = 0.005   # pyserial read timeout: fixed at open (changing it reconfigures a tty)
PTY_MAJORS = range(136, 144)   # Linux Unix98 pty slaves (/dev/pts/N)
CHAR_BITS = 11       # 8E1: start, 8 data, parity, stop
MAX_CHARS = 300      # more than the longest frame (261) and the garbage behind it
STARTS = (0xE5, 0x10, 0x68)   # the first byte of every M-Bus frame
# A real master's character timeout: a pause this long inside a frame ends the frame for
# it. pyMeterBus's inter_byte_timeout() (meterbus/auxiliary.py) is the tightest we know;
# libmbus's (VTIME in mbus-serial.c: 300 ms at 2400 baud, 200 ms at 9600) is longer at
# every rate. EN 13757-2 itself (FT 1.2 of EN 60870-5-1) admits no pause at all.
MASTER_PAUSE_MS = {300: 120, 600: 600, 1200: 400, 2400: 200, 4800: 200, 9600: 100,
                   19200: 100, 38400: 100}


class LineError(Exception):
    """The device cannot be opened or went away: one line for the user."""


def url_of(device):
    """tcp:HOST:PORT (or tcp:PORT, meaning 127.0.0.1) as a pyserial socket:// URL."""
    if not device.startswith("tcp:"):
        return device
    rest = device[4:]
    host, sep, port = rest.rpartition(":")
    if not port.isdigit():
        raise LineError("%s: want tcp:HOST:PORT" % device)
    return "socket://%s:%s" % (host if sep and host else "127.0.0.1", port)


def line_kind(device):
    """"net" (TCP, pyserial URLs: a gateway decouples the timing), "pty" (bytes arrive at
    once, no parity, no speed) or "serial" (a real UART)."""
    if device.startswith("tcp:") or "://" in device:
        return "net"
    path = os.path.realpath(device)
    if path.startswith("/dev/pts/"):
        return "pty"
    try:
        st = os.stat(path)
    except OSError:
        return "serial"   # opening it will say what is wrong
    if stat.S_ISCHR(st.st_mode) and os.major(st.st_rdev) in PTY_MAJORS:
        return "pty"
    return "serial"


def master_pause_ms(baud):
    """The character timeout of the tightest master we know at this rate (ms)."""
    return MASTER_PAUSE_MS.get(baud, 100)


def frame_start(data):
    """The offset of the first frame start byte in data (what a master that resyncs on a
    start byte takes for the reply), or -1 when there is none."""
    for i, b in enumerate(data):
        if b in STARTS:
            return i
    return -1


def echo_length(data, sent, whole=False):
    """How many leading bytes of data are the request coming back (a level converter's
    echo): len(sent) for a whole echo, len(data) while one may still be arriving (not
    with whole), else 0."""
    if not sent:
        return 0
    if data[:len(sent)] == sent:
        return len(sent)
    if not whole and len(data) < len(sent) and sent.startswith(data):
        return len(data)
    return 0


def frame_size(data):
    """Size of the frame that starts data: 0 not known yet, -1 not a frame start."""
    b = data[0]
    if b == 0xE5:
        return 1
    if b == 0x10:
        return 5
    if b == 0x68:
        return data[1] + 6 if len(data) >= 2 else 0
    return -1


def park_pty(path):
    """Set a pty's speed to 50 baud before pyserial opens it at 8E1: the open then changes
    the speed and goes through. Linux ptys drop the parity bit, and an 8E1 tcsetattr that
    changes nothing the pty keeps fails with EINVAL on some C libraries (a second run on
    the same pty; see ports/pty_port.py). A pty's speed means nothing to its bytes."""
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        attrs = termios.tcgetattr(fd)
        cbaud = getattr(termios, "CBAUD", 0)
        if cbaud:   # Linux keeps the speed in c_cflag too
            attrs[2] = (attrs[2] & ~cbaud) | termios.B50
        attrs[4] = attrs[5] = termios.B50
        termios.tcsetattr(fd, termios.TCSANOW, attrs)
    finally:
        os.close(fd)


class Exchange:
    """One request and what came back: data (the reply, after any echo of the request),
    echo, the time in ms after the end of the request of the reply frame's first byte
    (None: nothing came), chunks as (ms, bytes) over echo and data, bytes with parity
    errors."""

    def __init__(self, label, sent, baud):
        self.label = label
        self.sent = bytes(sent)
        self.baud = baud
        self.data = b""
        self.echo = b""
        self.first_ms = None
        # how much longer the write took than the request's own time on the wire: the
        # master may have been descheduled there, so the request may have ended that much
        # before first_ms counts from (a reply is only called early beyond this doubt)
        self.doubt_ms = 0.0
        self.chunks = []
        # per chunk: when a read last found the line empty before it (ms), or None
        self.quiet = []
        self.parity_errors = []

    def received_text(self):
        echo = "%s (the request's echo), then " % hexs(self.echo) if self.echo else ""
        if not self.data:
            return echo + "nothing"
        what = "frame start" if frame_start(self.data) > 0 else "first byte"
        return "%s%s   (%s after %.1f ms)" % (echo, hexs(self.data), what, self.first_ms)

    def time_at(self, offset):
        """When the byte at offset (of echo + data) arrived: its chunk's time in ms."""
        pos = 0
        for ms, n in self.chunks:
            pos += n
            if offset < pos:
                return ms
        return self.chunks[-1][0] if self.chunks else None

    def pauses(self, char_ms):
        """[(ms, after, size)]: the pauses inside the reply frame, each after byte `after`
        of its `size`. Where the reader saw the line empty (quiet) the pause is at least
        that quiet time's end minus the previous chunk's arrival minus one character (the
        byte that ended it was on the wire meanwhile): a reader that was descheduled
        only shortens it. Without that record (a stand-in line), from the chunk times."""
        start = frame_start(self.data)
        if start < 0 or not self.chunks:
            return []
        size = frame_size(self.data[start:])
        size = size if size > 0 else len(self.data) - start
        first = len(self.echo) + start
        out = []
        pos = self.chunks[0][1]
        for i in range(1, len(self.chunks)):
            after = pos - first
            t_prev = self.chunks[i - 1][0]
            ms, n = self.chunks[i]
            pos += n
            if not 0 < after < size:
                continue
            if len(self.quiet) == len(self.chunks):
                q = self.quiet[i]
                gap = 0.0 if q is None else q - t_prev - char_ms
            else:
                gap = ms - t_prev - n * char_ms
            if gap > 0:
                out.append((gap, after, size))
        return out

    def max_gap_ms(self, char_ms):
        """The longest pause between reply characters beyond their own time on the wire."""
        return max([p[0] for p in self.pauses(char_ms)] or [0.0])

    def as_dict(self):
        out = {"label": self.label, "sent": hexs(self.sent), "received": hexs(self.data),
               "first_byte_ms": None if self.first_ms is None else round(self.first_ms, 2),
               "baud": self.baud}
        if self.echo:
            out["echo"] = hexs(self.echo)
        return out


def hexs(data):
    return " ".join("%02X" % b for b in data)


class MarkDecoder:
    """Undo PARMRK (termios): FF 00 X is X received with a parity or framing error, FF FF a
    plain FF. Lets a real serial port report which reply bytes broke 8E1."""

    def __init__(self):
        self.pending = b""

    def feed(self, chunk):
        data = self.pending + chunk
        out = bytearray()
        errors = []
        i = 0
        while i < len(data):
            rest = len(data) - i
            if data[i] != 0xFF:
                out.append(data[i])
                i += 1
            elif rest < 2 or (data[i + 1] == 0 and rest < 3):
                break   # an escape cut by the chunk: wait for its rest
            elif data[i + 1] == 0:
                errors.append(len(out))
                out.append(data[i + 2])
                i += 3
            else:   # FF FF: a plain FF (anything else cannot come from the kernel)
                out.append(0xFF)
                i += 2
        self.pending = data[i:]
        return bytes(out), errors


class Line:
    def __init__(self, device, baud=2400, trace=None):
        self.device = device
        self.kind = line_kind(device)
        self.baud = baud
        self.trace = trace
        self.marks = MarkDecoder() if self.kind == "serial" else None
        try:
            if self.kind == "pty":
                park_pty(device)
            self.ser = serial.serial_for_url(url_of(device), baudrate=baud, bytesize=8,
                                             parity=serial.PARITY_EVEN, stopbits=1,
                                             timeout=READ_SLICE)
        except (serial.SerialException, OSError, ValueError, termios.error) as e:
            raise LineError("cannot open %s: %s" % (device, _reason(e)))
        self._mark_parity_errors()

    def char_s(self):
        return CHAR_BITS / float(self.baud)

    def close(self):
        try:
            self.ser.close()
        except Exception:   # closing a port that went away: nothing left to do
            pass

    def set_baud(self, rate):
        try:
            self.ser.baudrate = rate   # on a pty: a speed the pty keeps but does not carry
        except (serial.SerialException, OSError, ValueError, termios.error) as e:
            raise LineError("%s: cannot switch to %d baud: %s" % (self.device, rate,
                                                                  _reason(e)))
        self.baud = rate
        self._mark_parity_errors()

    def _mark_parity_errors(self):
        """Real serial: have the kernel mark reply bytes with parity errors (pyserial
        clears INPCK, so an 8N1 meter would otherwise go unnoticed)."""
        if self.kind != "serial":
            return
        try:
            fd = self.ser.fileno()
            attrs = termios.tcgetattr(fd)
            attrs[0] = (attrs[0] | termios.INPCK | termios.PARMRK) & ~(
                termios.IGNPAR | termios.ISTRIP)
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
        except (termios.error, OSError, AttributeError, serial.SerialException):
            self.marks = None   # not a tty after all: take the bytes as they come

    def exchange(self, frame, label, wait, parity=serial.PARITY_EVEN):
        """Send frame; collect the reply (wait: seconds for its first byte)."""
        try:
            self.ser.reset_input_buffer()
            start = time.monotonic()
            self._write(frame, parity)
            t0 = time.monotonic()
            x = Exchange(label, frame, self.baud)
            wire = len(frame) * self.char_s() if self.kind == "serial" else 0.0
            x.doubt_ms = max(0.0, (t0 - start - wire) * 1000)
            return self._receive(x, t0, wait)
        except (serial.SerialException, OSError, termios.error) as e:
            hint = ""
            if self.kind == "net" and ("reset by peer" in _reason(e)
                                       or "Broken pipe" in _reason(e)):
                hint = " (the gateway dropped the connection: an inactivity timeout?)"
            raise LineError("%s: %s%s" % (self.device, _reason(e), hint))

    def exchange_bad_parity(self, frame, label, wait):
        """Real serial only: send frame with mark parity (a stop bit to an 8N1 meter, a
        parity error to an 8E1 one on every byte of even weight), then back to 8E1."""
        return self.exchange(frame, label, wait, serial.PARITY_MARK)

    def _write(self, frame, parity):
        if parity == serial.PARITY_EVEN:
            self.ser.write(frame)
            self.ser.flush()
            return
        try:
            self.ser.parity = parity
        except ValueError:   # no mark parity here (CMSPAR is Linux): odd is wrong as well
            self.ser.parity = serial.PARITY_ODD
        try:
            self.ser.write(frame)
            self.ser.flush()   # on the wire before the parity changes back
        finally:
            self.ser.parity = serial.PARITY_EVEN
            self._mark_parity_errors()

    def _receive(self, x, t0, wait):
        if self.trace:
            self.trace("SEND", x.sent, None)
        raw = bytearray()
        # anything behind a complete frame: a pty or a TCP gateway hands it over with the
        # frame; a USB serial adapter may hold it back for its latency timer (~16 ms)
        tail = 3 * self.char_s() + 0.02 if self.kind == "serial" else 0.01
        gap = max(0.1, 5 * self.char_s())          # bytes that began no frame: done
        # a frame that stopped short: wait twice the tightest master's character timeout,
        # so that a pause that breaks that master is measured, not cut at its start
        stall = max(gap, 2 * master_pause_ms(self.baud) / 1000.0)
        # a meter that never stops talking: give up after the longest frame's time
        hard = t0 + wait + MAX_CHARS * self.char_s() + 2 * stall
        last = t0
        quiet = None
        if self.marks is not None:
            self.marks.pending = b""
        while True:
            now = time.monotonic()
            state = _progress(raw, x.sent)
            if state in ("waiting", "noise"):   # no frame begun yet: the reply may come
                if now - t0 >= wait and now - last >= (tail if state == "waiting" else gap):
                    break
            elif now - last >= (tail if state == "complete" else stall):
                break
            if now > hard:
                break
            chunk = self.ser.read(self.ser.in_waiting or 1)
            if not chunk:
                quiet = (time.monotonic() - t0) * 1000   # the line was empty till now
                continue
            last = time.monotonic()
            if self.marks is not None:
                chunk, errors = self.marks.feed(chunk)
                x.parity_errors += [len(raw) + e for e in errors]
            x.chunks.append(((last - t0) * 1000, len(chunk)))
            x.quiet.append(quiet)
            quiet = None
            raw += chunk
        self._settle(x, bytes(raw))
        if self.trace:
            self.trace("RECV", x.echo + x.data, x.first_ms)
        return x

    @staticmethod
    def _settle(x, raw):
        """Split what came into the echo and the reply; time the reply's frame start."""
        n = echo_length(raw, x.sent, whole=True)
        x.echo, x.data = raw[:n], raw[n:]
        x.parity_errors = [p - n for p in x.parity_errors if p >= n]
        if x.data:
            start = max(0, frame_start(x.data))
            x.first_ms = x.time_at(n + start)


def _progress(raw, sent):
    """Where a reply stands: "waiting" (nothing, or only the request's echo), "noise"
    (bytes, but no frame start among them), "partial" (a frame begun) or "complete" (a
    whole frame after any echo and noise)."""
    n = echo_length(raw, sent)
    body = raw[n:]
    if not body:
        return "waiting"
    start = frame_start(body)
    if start < 0:
        return "noise"
    size = frame_size(body[start:])
    return "complete" if 0 < size <= len(body) - start else "partial"


def _reason(e):
    """The short reason of a pyserial/OS error."""
    if isinstance(e, termios.error) and len(e.args) == 2:
        return str(e.args[1])
    text = getattr(e, "strerror", None) or str(e)
    return text.splitlines()[0] if text else type(e).__name__
