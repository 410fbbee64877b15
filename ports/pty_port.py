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
import errno
import os
import select
import termios
import tty

PARK_SPEED = getattr(termios, "B50", 1)
_CBAUD = getattr(termios, "CBAUD", 0)


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
    def __init__(self, link=None, read_timeout=0.005):
        self.master, self.slave = os.openpty()
        self.name = os.ttyname(self.slave)
        tty.setraw(self.slave, termios.TCSANOW)  # no echo, no line editing, 8 bits
        self._park_speed()
        os.set_blocking(self.master, False)
        self.read_timeout = read_timeout
        self.baud = 0
        self.link = None
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

    def _park_speed(self):
        try:
            attrs = termios.tcgetattr(self.slave)
            if attrs[4] == PARK_SPEED and attrs[5] == PARK_SPEED:
                return
            if _CBAUD:  # Linux keeps the speed in c_cflag too
                attrs[2] = (attrs[2] & ~_CBAUD) | PARK_SPEED
            attrs[4] = attrs[5] = PARK_SPEED
            termios.tcsetattr(self.slave, termios.TCSANOW, attrs)
        except (termios.error, OSError):
            pass

    def readinto(self, buf):
        self._park_speed()
        try:
            r, _, _ = select.select((self.master,), (), (), self.read_timeout)
        except InterruptedError:
            return 0
        if not r:
            return 0
        try:
            data = os.read(self.master, len(buf))
        except BlockingIOError:
            return 0
        except OSError as e:
            if e.errno == errno.EIO:  # no slave side open (cannot happen while we hold it)
                select.select((), (), (), self.read_timeout)
                return 0
            raise
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
