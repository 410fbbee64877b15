# A virtual serial port for the shared run loop: a pseudo terminal whose slave side
# (/dev/pts/N) an M-Bus master opens as if it were a serial device (POSIX only).
#
# We keep our own descriptor of the slave side open for the whole run, so a master can
# close and reopen /dev/pts/N as often as it likes: the pty never hangs up, reads on the
# master side never see EIO (tolerated anyway), and the raw mode we set stays in place.
# Baud rate, parity and stop bits mean nothing on a pty; set_baud only records the rate.
#
# Parity: Linux ptys cannot carry it (pty_set_termios clears PARENB and forces CS8), and
# some C libraries' tcsetattr() (Debian 12's glibc 2.36-9+deb12u14; upstream glibc and
# musl only make the TCSETS ioctl, which always succeeds) read the settings back and fail
# with EINVAL when nothing changed while PARENB did not stick. So a master that opens the pty at 2400 8E1 (pyserial, libmbus) succeeds only when
# its settings change something the pty keeps, such as the speed. We therefore park the
# pty's speed at 50 baud (no M-Bus master uses it) whenever a master has set another:
# every open and every reconfiguration at a real M-Bus speed then changes the speed and
# goes through. Not so two identical 8E1 settings in a row (libmbus's open at 2400, then
# its -b 2400 some 10 us later): no slave can re-park in between (measured: under 10 % of
# such pairs succeed even when woken by TIOCPKT/EXTPROC packet mode), so the README prints
# libmbus's commands without -b.
#
# Nothing polls: the run loop blocks in wait() until the master side has bytes, stop()
# wakes it up (a pipe), or the loop's next deadline. A master's new settings wake it up
# too: the pty master is in packet mode (TIOCPKT) and the slave side has EXTPROC set, so
# every tcsetattr() on /dev/pts/N shows on our side as a TIOCPKT_IOCTL status byte
# (Linux; checked at start). We re-park PARK_DELAY_MS after that, not at once: glibc's
# tcsetattr reads the settings back right after setting them, and a park in between (a
# woken slave may preempt the master on its CPU) would fail the master's open. Where
# packet mode gives no such events (other systems), the speed is looked at on every read
# and once every CHECK_EVERY_MS while idle.
import errno
import fcntl
import os
import select
import struct
import sys
import termios
import time
import tty

from mbus_ports.waiter import Waiter

PARK_SPEED = getattr(termios, "B50", 1)
_CBAUD = getattr(termios, "CBAUD", 0)
TIOCPKT = getattr(termios, "TIOCPKT", None)
TIOCPKT_IOCTL = 64     # not in Python's termios module; Linux's value
# Python's termios module lacks EXTPROC; Linux's value (asm-generic/termbits.h)
EXTPROC = getattr(termios, "EXTPROC", 0o200000 if sys.platform.startswith("linux") else 0)
PARK_DELAY_MS = 2      # re-park this long after a master changed the settings
CHECK_EVERY_MS = 1000  # without packet-mode events: how often an idle pty is checked


def link_problem(path):
    """None when a link to the pty can be made at `path` (nothing there, or an old
    symlink); else what is wrong, in a few words (checked before the pty is opened)."""
    if os.path.lexists(path) and not os.path.islink(path):
        return "exists and is not a symlink (not replaced)"
    folder = os.path.dirname(path) or "."
    if not os.path.isdir(folder):
        return "folder %s does not exist" % folder
    if not os.access(folder, os.W_OK | os.X_OK):
        return "folder %s is not writable" % folder
    return None


class PtyPort:
    def __init__(self, link=None):
        self.master, self.slave = os.openpty()
        self._waiter = None
        self.link = None
        try:
            self.name = os.ttyname(self.slave)
            tty.setraw(self.slave, termios.TCSANOW)  # no echo, no line editing, 8 bits
            os.set_blocking(self.master, False)
            self._extproc = 0
            self.events = self._packet_mode()   # a master's new settings wake us up
            self._park_speed()
            self._waiter = Waiter(self.master)
        except OSError:
            self.close()
            raise
        self._park_at = None    # monotonic ms when to re-park (a master set its speed)
        self._check_at = 0      # without events: when to look at the speed next
        self.baud = 0
        self.dropped = 0   # reply bytes nobody read (the pty buffer was full)
        if link:
            try:
                self.make_link(link)
            except OSError:
                self.close()
                raise

    def make_link(self, path):
        """A stable name for the pty: a symlink at `path` (replacing an old symlink,
        never a regular file)."""
        if os.path.islink(path):
            os.unlink(path)
        elif os.path.exists(path):
            raise OSError(errno.EEXIST, "exists and is not a symlink (not replaced)", path)
        os.symlink(self.name, path)
        self.link = path

    def _packet_mode(self):
        """Packet mode on the master side, EXTPROC on the slave side: True when a change
        of the slave side's settings then shows as a TIOCPKT_IOCTL status (else both are
        undone and False)."""
        if TIOCPKT is None or not EXTPROC:
            return False
        try:
            fcntl.ioctl(self.master, TIOCPKT, struct.pack("i", 1))
        except OSError:
            return False
        self._extproc = EXTPROC
        self._park_speed()      # a change of the settings, with EXTPROC set
        seen = False
        while True:
            try:
                data = os.read(self.master, 64)
            except OSError:    # BlockingIOError: nothing (more)
                break
            if not data:
                break
            if data[0] & TIOCPKT_IOCTL:
                seen = True
        if not seen:
            self._extproc = 0
            try:
                fcntl.ioctl(self.master, TIOCPKT, struct.pack("i", 0))
                attrs = termios.tcgetattr(self.slave)
                attrs[3] &= ~EXTPROC
                termios.tcsetattr(self.slave, termios.TCSANOW, attrs)
            except (termios.error, OSError):
                pass
        return seen

    def _park_speed(self):
        try:
            attrs = termios.tcgetattr(self.slave)
            ext = self._extproc
            if attrs[4] == PARK_SPEED and attrs[5] == PARK_SPEED and attrs[3] & ext == ext:
                return
            if _CBAUD:  # Linux keeps the speed in c_cflag too
                attrs[2] = (attrs[2] & ~_CBAUD) | PARK_SPEED
            attrs[4] = attrs[5] = PARK_SPEED
            attrs[3] |= ext
            termios.tcsetattr(self.slave, termios.TCSANOW, attrs)
        except (termios.error, OSError):
            pass

    def wait(self, timeout_ms):
        """Block until the master side has something for us, wake() was called, or
        timeout_ms passed (None: no deadline of the caller's)."""
        now = _ms()
        due = self._park_at
        if not self.events:   # no events: look at the speed now and then
            if now >= self._check_at:
                self._park_speed()
                self._check_at = now + CHECK_EVERY_MS
            if due is None or self._check_at < due:
                due = self._check_at
        if due is not None:
            if due <= now:
                self._park_at = None
                self._park_speed()
                return
            if timeout_ms is None or due - now < timeout_ms:
                timeout_ms = due - now
        ev = self._waiter.wait(timeout_ms)
        if ev and not ev & select.POLLIN:   # POLLHUP: no slave side open (we hold one)
            time.sleep(0.02)
        if self._park_at is not None and _ms() >= self._park_at:
            self._park_at = None
            self._park_speed()

    def wake(self):
        self._waiter.wake()

    def wake_fd(self):
        return self._waiter.wake_fd()

    def readinto(self, buf):
        """What the master side has now (never waits: wait() does)."""
        try:
            data = os.read(self.master, len(buf) + 1 if self.events else len(buf))
        except (BlockingIOError, InterruptedError):
            return 0
        except OSError as e:
            if e.errno == errno.EIO:  # no slave side open (cannot happen while we hold it)
                return 0
            raise
        if not data:
            return 0
        if self.events:
            if data[0]:   # a status byte, no data: the settings changed, or a flush
                if self._park_at is None:
                    self._park_at = _ms() + PARK_DELAY_MS
                return 0
            n = len(data) - 1
            buf[:n] = memoryview(data)[1:]
            return n
        self._park_speed()   # no events: look at the speed whenever a master talks
        n = len(data)
        buf[:n] = data
        return n

    def write(self, data):
        data = memoryview(bytes(data))
        retried = False
        while len(data):
            try:
                n = os.write(self.master, data)
                data = data[n:]
            except BlockingIOError:
                if retried:
                    self.dropped += len(data)
                    return
                # Nobody has read our earlier replies (the master closed the device):
                # throw the stale bytes away and try once more.
                termios.tcflush(self.slave, termios.TCIFLUSH)
                retried = True
            except OSError as e:
                if e.errno == errno.EIO:
                    self.dropped += len(data)
                    return
                raise

    def flush(self):
        pass

    def set_baud(self, rate):
        self.baud = rate

    def close(self):
        if self.link:
            try:
                if os.path.islink(self.link) and os.readlink(self.link) == self.name:
                    os.unlink(self.link)
            except OSError:
                pass
            self.link = None
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass
        self.master = self.slave = -1
        if self._waiter is not None:
            self._waiter.close()


def _ms():
    return time.monotonic_ns() // 1000000
