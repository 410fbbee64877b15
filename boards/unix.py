# The MicroPython unix port as a board: runs the exact firmware loop of a real board
# (mbus_ports.upy_firmware) with a machine.UART stand-in over a pseudo-terminal.
#
# The unix port has no machine.UART and no ffi/ioctl to open a pty itself, so the launcher
# (tools/upy-sim, CPython) creates the pty pair, keeps the slave side (/dev/pts/N, where the
# M-Bus master connects) open and passes the master side's file descriptor to MicroPython,
# which opens it with open(fd). Settings come from environment variables:
#   MBUS_UART_FD   the pty master's file descriptor (or MBUS_UART_PATH: a tty to open)
#   MBUS_METER     meter file (JSON; default ./meter.json), MBUS_STATE state file
#   MBUS_BAUD      start baud rate (2400), MBUS_ADDR / MBUS_ID override the first meter
#   MBUS_HOOK      module with setup(meters, board) (value callbacks); default "sensors"
#   MBUS_MEM       1: print the memory report after start and every MBUS_MEM_EVERY requests
import os
import select
import time

from mbus_ports.upy_uart import UartPort

NAME = "unix"


def _env(name, default=None):
    v = os.getenv(name)
    return default if v is None or v == "" else v


def _env_int(name, default):
    v = _env(name)
    return default if v is None else int(v)


BAUD = _env_int("MBUS_BAUD", 2400)
meter_path = _env("MBUS_METER", "meter.json")
state_path = _env("MBUS_STATE", "mbus_state.json")
led = None

config = {"hook": _env("MBUS_HOOK", "sensors"),
          "mem_report": _env_int("MBUS_MEM", 0),
          "mem_every": _env_int("MBUS_MEM_EVERY", 0)}
if _env("MBUS_ADDR") is not None:
    config["address"] = int(_env("MBUS_ADDR"))
if _env("MBUS_ID") is not None:
    config["id"] = int(_env("MBUS_ID"))
if _env("MBUS_READINGS_MIN") is not None:   # tests: save the readings this often
    config["readings_min"] = float(_env("MBUS_READINGS_MIN"))


class PtyUART:
    """The part of machine.UART that mbus_ports.upy_uart uses, over a pty master (or any
    tty) file descriptor: init(), readinto(buf[, nbytes]) with timeout/timeout_char,
    write(), flush(), any(), deinit()."""

    def __init__(self, fd=None, path=None, baudrate=2400, timeout=20, timeout_char=10):
        if fd is not None:
            self.f = open(fd, "r+b")
            self.fd = fd
        else:
            self.f = open(path, "r+b")
            self.fd = self.f.fileno() if hasattr(self.f, "fileno") else None
        try:
            import termios
            termios.setraw(self.fd if self.fd is not None else self.f)
        except Exception:
            pass  # raw mode is a convenience; the launcher set it already
        self.poll = select.poll()
        self.poll.register(self.f, select.POLLIN)
        self.one = bytearray(1)
        self.init(baudrate=baudrate, timeout=timeout, timeout_char=timeout_char)

    def init(self, baudrate=None, bits=8, parity=0, stop=1, timeout=None, timeout_char=None,
             **kw):
        if bits != 8 or parity != 0 or stop != 1:
            raise ValueError("the pty shim is 8E1 only")
        if baudrate is not None:
            self.baudrate = baudrate
        if timeout is not None:
            self.timeout = timeout
        if timeout_char is not None:
            self.timeout_char = timeout_char

    def _wait(self, ms):
        """True when a byte can be read within ms."""
        ev = self.poll.poll(ms)
        if not ev:
            return False
        if ev[0][1] & select.POLLIN:
            return True
        # POLLHUP/POLLERR: nobody on the other side; behave like a quiet line
        time.sleep_ms(ms)
        return False

    def any(self):
        return 1 if self._wait(0) else 0

    def readinto(self, buf, nbytes=None):
        size = len(buf) if nbytes is None else nbytes
        if not self._wait(self.timeout):
            return None
        mv = memoryview(buf)
        n = 0
        while n < size:
            try:
                k = self.f.readinto(mv[n:size])
            except OSError:
                k = None
            if not k:
                if n:
                    break
                return None
            n += k
            if n < size and not self._wait(self.timeout_char):
                break
        return n

    def write(self, data):
        mv = memoryview(data)
        n = len(mv)
        done = 0
        tries = 0
        while done < n and tries < 50:
            try:
                k = self.f.write(mv[done:])
            except OSError:
                k = None
            if not k:
                tries += 1
                time.sleep_ms(1)  # pty buffer full: a real line would lose the bytes
                continue
            done += k
        return n

    def flush(self):
        pass  # a pty has no transmit FIFO: written bytes are already with the reader

    def deinit(self):
        try:
            self.f.close()
        except OSError:
            pass


def make_port(baud):
    fd = _env("MBUS_UART_FD")
    if fd is not None:
        uart = PtyUART(fd=int(fd), baudrate=baud)
    else:
        uart = PtyUART(path=_env("MBUS_UART_PATH", "/dev/tty"), baudrate=baud)
    return UartPort(uart=uart, baud=baud, poll_ms=20)


def wdt():
    return None  # no watchdog on the unix port
