"""The Python side of the emulated Pico: what tools/pico-sim needs to find (node, rp2040js,
the image), a running tools/pico-sim with its log lines (for tests and mbus-bench), and a
patient M-Bus master on its UART0 pty (pyserial; pymeterbus decodes and builds frames).

The emulator runs at a fraction of a real Pico's speed (0.1x-0.4x, with the host's load),
so every wait here is a deadline given by the caller, never a fixed sleep."""
import os
import queue
import shutil
import signal
import subprocess
import sys
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOOLS = os.path.dirname(HERE)
ROOT = os.path.dirname(TOOLS)
LAUNCHER = os.path.join(TOOLS, "pico-sim")
FIRMWARE = os.path.join(ROOT, "firmware", "pico", "micropython-1.26.1-RPI_PICO.bin")
BOOTROM = os.path.join(ROOT, "firmware", "pico", "rp2040-bootrom-b1.bin")
HARNESS = os.path.join(HERE, "pico.mjs")
RP2040JS = "rp2040js@1.4.1"
NODE_MAJOR = 18
SERVING = "board: mbus: serving "


def node_modules():
    """Where npm put rp2040js: the checkout's .venv (as .ci/run does), this Python's venv,
    an activated venv; None when it is in none of them."""
    dirs = [os.path.join(ROOT, ".venv", "node_modules"),
            os.path.join(os.path.dirname(os.path.dirname(sys.executable)), "node_modules")]
    if os.environ.get("VIRTUAL_ENV"):
        dirs.append(os.path.join(os.environ["VIRTUAL_ENV"], "node_modules"))
    for d in dirs:
        if os.path.isfile(os.path.join(d, "rp2040js", "dist", "esm", "index.js")):
            return d
    return None


def missing():
    """None when node (18+), rp2040js and the image are there, else one line on what to do."""
    node = shutil.which("node")
    if not node:
        return "node not found (install Node.js %d or newer)" % NODE_MAJOR
    try:
        out = subprocess.run([node, "--version"], capture_output=True, text=True, timeout=30)
        version = out.stdout.strip()
        major = int(version.lstrip("v").split(".")[0])
    except (OSError, ValueError, subprocess.TimeoutExpired):
        version, major = "unknown", 0
    if major < NODE_MAJOR:
        return "node %d or newer needed (%s is %s)" % (NODE_MAJOR, node, version)
    if not node_modules():
        return ("rp2040js not found: npm install --prefix %s --no-save %s"
                % (os.path.join(ROOT, ".venv"), RP2040JS))
    for path in (FIRMWARE, BOOTROM, HARNESS):
        if not os.path.isfile(path):
            return "missing %s" % path
    return None


class PicoSim:
    """tools/pico-sim in the background; .repl and .uart are its ptys, .lines what it
    printed (the harness's events and the firmware's "mbus: " log lines)."""

    def __init__(self, flash, fresh=False, trace_uart=False, start_timeout=60):
        cmd = [sys.executable, LAUNCHER, "--flash", flash]
        if fresh:
            cmd.append("--fresh")
        if trace_uart:
            cmd.append("--trace-uart")
        self.lines = []
        self._mark = 0
        self._q = queue.Queue()
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()
        try:
            self.repl = self.wait_line("REPL (USB CDC", start_timeout).rsplit(" ", 1)[1]
            self.uart = self.wait_line("Point your M-Bus master at ",
                                       start_timeout).rsplit(" ", 1)[1]
        except BaseException:
            self.stop()
            raise

    def _read(self):
        for raw in self.proc.stdout:
            self._q.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._q.put(None)

    def wait_line(self, prefix, timeout):
        """The next line starting with `prefix` (lines before it are kept in .lines)."""
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            try:
                line = self._q.get(timeout=max(left, 0.01))
            except queue.Empty:
                line = False
            if line is None or (line is False and left <= 0):
                raise TimeoutError("pico-sim: no line %r within %g s; it printed:\n%s"
                                   % (prefix, timeout, "\n".join(self.lines[-30:])))
            if line is False:
                continue
            self.lines.append(line)
            if line.startswith(prefix):
                return line

    def serving(self, timeout):
        return self.wait_line(SERVING, timeout)

    def drain(self):
        """The lines printed since the last drain() (queued ones taken in too)."""
        while True:
            try:
                line = self._q.get_nowait()
            except queue.Empty:
                break
            if line is None:
                break
            self.lines.append(line)
        new = self.lines[self._mark:]
        self._mark = len(self.lines)
        return new

    def mpremote(self, *args, timeout=300):
        """mpremote connect <the REPL pty> ARGS; the CompletedProcess."""
        tool = os.path.join(os.path.dirname(sys.executable), "mpremote")
        return subprocess.run([tool if os.access(tool, os.X_OK) else "mpremote", "connect",
                               self.repl] + list(args), capture_output=True, text=True,
                              timeout=timeout)

    def stop(self):
        """SIGTERM: the harness writes the flash file and exits."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()


class Master:
    """A master on the UART pty. timeout: seconds to wait for the first byte of a reply;
    gap: seconds of silence that end a reply (both generous: the emulator is slow)."""

    def __init__(self, path, baud=2400, timeout=30.0, gap=3.0):
        import serial
        self.timeout = timeout
        self.gap = gap
        self.ser = serial.Serial(path, baud, bytesize=8, parity=serial.PARITY_EVEN,
                                 stopbits=1, timeout=0.05)

    def close(self):
        self.ser.close()

    def set_baud(self, baud):
        self.ser.baudrate = baud

    def send(self, frame):
        self.ser.reset_input_buffer()
        self.ser.write(frame)

    def recv(self, timeout=None):
        """One reply: its bytes (a frame, E5, or whatever came until a gap), b"" when
        nothing came within `timeout` (default: the master's)."""
        from mbus_tools.check_io import frame_size
        deadline = time.monotonic() + (self.timeout if timeout is None else timeout)
        data = b""
        last = None
        while True:
            now = time.monotonic()
            if (not data and now > deadline) or (data and now - last > self.gap):
                return data
            chunk = self.ser.read(256)
            if chunk:
                data += chunk
                last = time.monotonic()
                size = frame_size(data)
                if size < 0 or (size and len(data) >= size):
                    return data

    def request(self, frame, timeout=None):
        self.send(frame)
        return self.recv(timeout)

    def req_ud2(self, address, fcb=False):
        """(pymeterbus telegram, raw bytes) of an RSP_UD; AssertionError when none came."""
        import meterbus
        raw = self.request(short(0x7B if fcb else 0x5B, address))
        assert len(raw) > 5 and raw[0] == 0x68, \
            "no RSP_UD from address %d (got %s)" % (address, raw.hex() or "nothing")
        return meterbus.load(raw), raw

    def select(self, secondary, timeout=None):
        """Secondary selection ("23456789FFFFFFFF", built by pymeterbus): True on E5."""
        import meterbus
        self.ser.reset_input_buffer()
        meterbus.send_select_frame(self.ser, secondary)
        return self.recv(timeout) == b"\xe5"


def short(c, a):
    return bytes((0x10, c, a, (c + a) & 0xFF, 0x16))


def long_frame(c, a, ci, data=b""):
    body = bytes((c, a, ci)) + bytes(data)
    return bytes((0x68, len(body), len(body), 0x68)) + body + bytes((sum(body) & 0xFF, 0x16))


def ident(telegram):
    """The ID of a CI 72 telegram as an 8-digit string."""
    return "".join("%02X" % b for b in telegram.body.bodyHeader.id_nr)
