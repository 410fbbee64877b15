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
    """One request and what came back: data, the first byte's time in ms after the end of
    the request (None: nothing came), chunks as (ms, bytes), bytes with parity errors."""

    def __init__(self, label, sent, baud):
        self.label = label
        self.sent = bytes(sent)
        self.baud = baud
        self.data = b""
        self.first_ms = None
        # how much longer the write took than the request's own time on the wire: the
        # master may have been descheduled there, so the request may have ended that much
        # before first_ms counts from (a reply is only called early beyond this doubt)
        self.doubt_ms = 0.0
        self.chunks = []
        self.parity_errors = []

    def received_text(self):
        if not self.data:
            return "nothing"
        return "%s   (first byte after %.1f ms)" % (hexs(self.data), self.first_ms)

    def max_gap_ms(self, char_ms):
        """The longest pause between reply characters beyond their own time on the wire."""
        worst = 0.0
        for (t0, _), (t1, n) in zip(self.chunks, self.chunks[1:]):
            worst = max(worst, t1 - t0 - n * char_ms)
        return worst

    def as_dict(self):
        return {"label": self.label, "sent": hexs(self.sent), "received": hexs(self.data),
                "first_byte_ms": None if self.first_ms is None else round(self.first_ms, 2),
                "baud": self.baud}


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
            raise LineError("%s: %s" % (self.device, _reason(e)))

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
        data = bytearray()
        gap = max(0.1, 5 * self.char_s())          # a reply that stopped short
        # anything behind a complete frame: a pty or a TCP gateway hands it over with the
        # frame; a USB serial adapter may hold it back for its latency timer (~16 ms)
        tail = 3 * self.char_s() + 0.02 if self.kind == "serial" else 0.01
        # a meter that never stops talking: give up after the longest frame's time
        hard = t0 + wait + MAX_CHARS * self.char_s() + 0.5
        last = t0
        if self.marks is not None:
            self.marks.pending = b""
        while True:
            now = time.monotonic()
            size = frame_size(data) if data else 0
            if not data:
                if now - t0 >= wait:
                    break
            elif now - last >= (tail if 0 < size <= len(data) else gap) or now > hard:
                break
            chunk = self.ser.read(self.ser.in_waiting or 1)
            if not chunk:
                continue
            last = time.monotonic()
            if self.marks is not None:
                chunk, errors = self.marks.feed(chunk)
                x.parity_errors += [len(data) + e for e in errors]
            if x.first_ms is None:
                x.first_ms = (last - t0) * 1000
            x.chunks.append(((last - t0) * 1000, len(chunk)))
            data += chunk
        x.data = bytes(data)
        if self.trace:
            self.trace("RECV", x.data, x.first_ms)
        return x


def _reason(e):
    """The short reason of a pyserial/OS error."""
    if isinstance(e, termios.error) and len(e.args) == 2:
        return str(e.args[1])
    text = getattr(e, "strerror", None) or str(e)
    return text.splitlines()[0] if text else type(e).__name__
