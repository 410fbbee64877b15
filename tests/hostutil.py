"""Helpers for the end-to-end tests of the CPython host: start `python -m mbus_ports` as a
subprocess, find the pty or TCP port it prints, and talk to it as a master with pymeterbus
over pyserial (a pty at 2400 8E1, or socket://127.0.0.1:PORT)."""
import os
import queue
import signal
import subprocess
import sys
import threading
import time

import serial

import meterbus

from mbus_tools.check_io import frame_size
from mbus_ports.testing import stop_process, wait_parked

START_TIMEOUT = 30     # seconds for the slave to start and print its device
REPLY_TIMEOUT = 3      # seconds a master waits for an expected reply
SILENCE_TIMEOUT = 0.5  # seconds a master waits where no reply is expected
READ_SLICE = 0.05      # the pyserial read timeout; recv() loops up to its deadline


def frame_hex(text):
    return bytes.fromhex(text.replace(" ", ""))


def short(c, a):
    return bytes((0x10, c, a, (c + a) & 0xFF, 0x16))


def long_frame(c, a, ci, data=b""):
    body = bytes((c, a, ci)) + bytes(data)
    ln = len(body)
    return bytes((0x68, ln, ln, 0x68)) + body + bytes((sum(body) & 0xFF, 0x16))


class SlaveProcess:
    """`python -m mbus_ports ARGS` in the background; stdout lines are collected by a
    thread, stderr goes to a file (read it with .log())."""

    def __init__(self, args, tmp_path, env=None):
        self.args = list(args)
        self.errpath = str(tmp_path / ("slave-stderr-%d.log" % id(self)))
        self.lines = queue.Queue()
        self.seen = []
        e = dict(os.environ)
        e["PYTHONUNBUFFERED"] = "1"
        if env:
            e.update(env)
        self._err = open(self.errpath, "w")
        self.proc = subprocess.Popen([sys.executable, "-m", "mbus_ports"] + self.args,
                                     stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._err, env=e)
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        for raw in self.proc.stdout:
            self.lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self.lines.put(None)

    def wait_line(self, prefix, timeout=START_TIMEOUT):
        """The first stdout line starting with `prefix` (AssertionError on EOF/timeout)."""
        for line in self.seen:
            if line.startswith(prefix):
                return line
        while True:
            try:
                line = self.lines.get(timeout=timeout)
            except queue.Empty:
                raise AssertionError("no %r line from the slave; stderr:\n%s"
                                     % (prefix, self.log()))
            if line is None:
                raise AssertionError("slave exited (%s) before %r; stderr:\n%s"
                                     % (self.proc.poll(), prefix, self.log()))
            self.seen.append(line)
            if line.startswith(prefix):
                return line

    def log(self):
        try:
            with open(self.errpath) as f:
                return f.read()
        except OSError:
            return ""

    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Send `sig`, wait for the exit; returns the exit status (kills on timeout)."""
        stop_process(self.proc, sig, timeout)
        self._reader.join(timeout=5)
        self.proc.stdout.close()
        self._err.close()
        return self.proc.returncode


class PtySlave(SlaveProcess):
    def __init__(self, args, tmp_path, env=None):
        SlaveProcess.__init__(self, ["--device", "pty"] + list(args), tmp_path, env)
        try:
            line = self.wait_line("Point your M-Bus master at ")
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        self.path = line[len("Point your M-Bus master at "):]

    def master(self, baud=2400):
        wait_parked(self.path)
        return serial.Serial(self.path, baud, bytesize=8, parity=serial.PARITY_EVEN,
                             stopbits=1, timeout=READ_SLICE)


class TcpSlave(SlaveProcess):
    def __init__(self, args, tmp_path, device="tcp:0", env=None):
        SlaveProcess.__init__(self, ["--device", device] + list(args), tmp_path, env)
        try:
            line = self.wait_line("Listening on ")
        except BaseException:
            self.stop(signal.SIGKILL)
            raise
        hostport = line[len("Listening on "):]
        host, port = hostport.rsplit(":", 1)
        self.host = host.strip("[]")
        self.port = int(port)

    def url(self):
        host = self.host if ":" not in self.host else "[%s]" % self.host
        return "socket://%s:%d" % (host, self.port)

    def master(self):
        return serial.serial_for_url(self.url(), timeout=READ_SLICE)


def run_cli(args, timeout=30):
    """Run the CLI to completion (for argument errors)."""
    return subprocess.run([sys.executable, "-m", "mbus_ports"] + list(args),
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout)


def usage_error(args, timeout=10):
    """The one stderr line of a CLI run that must refuse `args` with status 2 at once
    (AssertionError when it starts serving instead, or says more)."""
    try:
        out = run_cli(args, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise AssertionError("mbus-slave %s started instead of refusing" % (args,))
    assert out.returncode == 2, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("mbus-slave: error: "), out.stderr
    return lines[0]


# -- a master, with pymeterbus ----------------------------------------------------------
def recv(ser, timeout=None):
    """One frame as bytes; None when nothing came before the deadline; False for a
    broken frame (bad start, checksum or stop byte: several slaves answering at once).

    The port's own read timeout stays as it was opened (changing it makes pyserial
    reconfigure the tty, which a pty refuses for 8E1 on recent Linux kernels)."""
    deadline = time.monotonic() + (REPLY_TIMEOUT if timeout is None else timeout)
    data = b""
    while time.monotonic() < deadline:
        chunk = ser.read(1)
        if not chunk:
            if data:
                break   # the reply stopped before the frame was complete
            continue
        data += chunk
        size = frame_size(data)
        if size < 0:
            break
        if size and len(data) >= size:
            break
    if not data:
        return None
    size = frame_size(data)
    if size <= 0 or len(data) < size:
        return False
    data = data[:size]
    if size == 1:
        return data
    body = data[1:3] if size == 5 else data[4:-2]
    if data[-1] != 0x16 or sum(body) & 0xFF != data[-2]:
        return False
    if size > 5 and (data[1] != data[2] or data[3] != 0x68):
        return False
    return data


def ping(ser, address, timeout=None):
    """SND_NKE; True when the slave acknowledged with E5."""
    ser.reset_input_buffer()
    meterbus.send_ping_frame(ser, address)
    return recv(ser, timeout) == b"\xe5"


def send(ser, frame):
    ser.reset_input_buffer()
    ser.write(frame)


def req_ud2(ser, address, fcb=None, timeout=None):
    """REQ_UD2: 5B (FCV set, FCB 0: what libmbus and pyMeterBus always send), or with
    the given FCB; returns (telegram decoded by pymeterbus, raw bytes). The telegram is
    None for replies pymeterbus cannot decode (CI 70 application errors)."""
    c = 0x5B
    if fcb is not None:
        c = 0x5B | (0x20 if fcb else 0)
    send(ser, short(c, address))
    data = recv(ser, timeout)
    assert data, "no RSP_UD from address %d (got %r)" % (address, data)
    assert len(data) > 1, "E5 instead of an RSP_UD from address %d" % address
    if data[6] == 0x70:
        return None, data
    return meterbus.load(data), data


def select(ser, secondary, timeout=None):
    """Secondary selection with pymeterbus ("12345678FFFFFFFF"); True on E5."""
    ser.reset_input_buffer()
    meterbus.send_select_frame(ser, secondary)
    return recv(ser, timeout) == b"\xe5"


def values(telegram):
    return [r.value for r in telegram.records]


def ident(telegram):
    """The ID of a CI 72 telegram as an 8-digit string."""
    return "".join("%02X" % b for b in telegram.body.bodyHeader.id_nr)


def micropython_exe():
    """The MicroPython unix port the test extras install (fails the test without it)."""
    import pytest
    import shutil
    upy = shutil.which("micropython") or shutil.which(
        "micropython", path=os.path.dirname(sys.executable))
    if not upy:
        pytest.fail("micropython is not installed: pip install -e '.[test]'")
    return upy


def use_poller(kind, monkeypatch):
    """Make mbus_ports.poller use `kind` ("epoll", "poll" or "select") by hiding the ones
    it prefers; skip the test where this machine has no such call."""
    import select
    import pytest
    if kind in ("poll", "select"):
        monkeypatch.delattr(select, "epoll", raising=False)
    if kind == "select":
        monkeypatch.delattr(select, "poll", raising=False)
    if kind == "epoll" and not hasattr(select, "epoll"):
        pytest.skip("no epoll here")
