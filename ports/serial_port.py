# A pyserial port for the shared run loop (ports/line.py): any device path or pyserial URL
# (serial_for_url: "/dev/ttyAMA0", "COM3", "loop://", "socket://host:port", "rfc2217://...").
# M-Bus is 8E1 by default; parity and stop bits can be overridden. The baud rate can be
# switched while running (a master's CI B8..BF request, via LineServer.switch_baud).
#
# A local device (a posix serial.Serial: the Pi Hat's /dev/ttyAMA0, a USB adapter) has a
# file descriptor: the run loop then blocks in wait() (poll on it and on a wake-up pipe)
# until bytes come or its next deadline, and readinto() never waits. A URL (socket://,
# rfc2217://, loop://) has none: there readinto() waits up to read_timeout for the first
# byte, which paces the loop as before.
import os
import select

import serial

from mbus_ports.waiter import Waiter

PARITIES = {"N": serial.PARITY_NONE, "E": serial.PARITY_EVEN, "O": serial.PARITY_ODD,
            "M": serial.PARITY_MARK, "S": serial.PARITY_SPACE}
STOPBITS = {1: serial.STOPBITS_ONE, 1.5: serial.STOPBITS_ONE_POINT_FIVE,
            2: serial.STOPBITS_TWO}


class SerialPort:
    """readinto/write/flush/set_baud/close over a pyserial port.

    read_timeout: seconds one readinto() waits for the first byte where the port has no
    file descriptor to wait on (a URL); it paces the run loop (idle-gap detection, baud
    fallback), so keep it well below the idle gap.
    """

    def __init__(self, url, baud=2400, parity="E", stopbits=1, read_timeout=0.005,
                 exclusive=True):
        if parity not in PARITIES:
            raise ValueError("parity must be one of N, E, O, M, S")
        if stopbits not in STOPBITS:
            raise ValueError("stop bits must be 1, 1.5 or 2")
        self.url = url
        kw = dict(baudrate=baud, bytesize=serial.EIGHTBITS, parity=PARITIES[parity],
                  stopbits=STOPBITS[stopbits], timeout=read_timeout, write_timeout=5,
                  do_not_open=True)
        self.ser = serial.serial_for_url(url, **kw)
        if exclusive and "://" not in url:
            try:
                self.ser.exclusive = True  # POSIX: flock, so two slaves never share a tty
            except (ValueError, AttributeError):
                pass
        local = (isinstance(self.ser, serial.Serial) and os.name == "posix"
                 and hasattr(select, "poll"))
        if local:
            # reads never wait: wait() does (set before opening: a change later is one
            # more tcsetattr, which a pty refuses when it changes nothing it keeps)
            self.ser.timeout = 0
        self.ser.open()
        self.baud = baud
        self.waiter = Waiter(self.ser.fileno()) if local else None

    def wait(self, timeout_ms):
        """Block until bytes can be read, wake() was called, or timeout_ms passed (None:
        no deadline). Returns at once without a file descriptor (readinto waits)."""
        if self.waiter is not None:
            self.waiter.wait(timeout_ms)

    def wake(self):
        if self.waiter is not None:
            self.waiter.wake()

    def wake_fd(self):
        return self.waiter.wake_fd() if self.waiter is not None else None

    def readinto(self, buf):
        ser = self.ser
        if self.waiter is not None:   # never waits; pyserial raises on a device gone away
            data = ser.read(len(buf))
            n = len(data)
            buf[:n] = data
            return n
        first = ser.read(1)
        if not first:
            return 0
        buf[0] = first[0]
        n = 1
        try:
            waiting = ser.in_waiting
        except (OSError, serial.SerialException, NotImplementedError):
            waiting = 0
        if waiting:
            more = ser.read(min(waiting, len(buf) - 1))
            m = len(more)
            buf[1:1 + m] = more
            n += m
        return n

    def write(self, data):
        self.ser.write(bytes(data))

    def flush(self):
        self.ser.flush()

    def set_baud(self, rate):
        self.ser.baudrate = rate
        self.baud = rate

    def close(self):
        try:
            self.ser.close()
        except Exception:
            pass
        if self.waiter is not None:
            self.waiter.close()
