"""Test a master against live meters: mbus-slave in a subprocess, driven through its
control API (ports/control_http.py).

    from mbus_ports.testing import SlaveProcess

    with SlaveProcess("--meter", "examples/water-meter.json") as slave:
        my_master.connect(slave.device)            # a pty path, or socket://HOST:PORT
        slave.set_value(5, 0, 1234.5)               # meter at address 5, record 0
        assert my_master.read(5).volume == 1234.5
        slave.alarm(5)                              # ACD set until REQ_UD1 fetches it
        slave.unplug(5)                             # silent to every frame
        slave.fault(5, "drop:1", duration=10)       # replies dropped for 10 s

With pytest installed this module is also a plugin (entry point pytest11 "mbus_slave"):
the fixture `mbus_slave` gives a SlaveProcess serving the demo meter on a pty, and
`mbus_slave_factory(*args, tcp=False)` starts others; all are stopped after the test.
"""
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request

START_TIMEOUT = 30
API_TIMEOUT = 10


def stop_process(proc, sig=signal.SIGTERM, timeout=15):
    """Send `sig` to a running process and wait for its exit, killing it after `timeout`
    seconds; its exit status."""
    if proc.poll() is None:
        proc.send_signal(sig)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=timeout)
    return proc.returncode


class SlaveError(RuntimeError):
    """mbus-slave did not start (the message carries its stderr)."""


class ControlAPIError(RuntimeError):
    """The control API refused a request: .status (HTTP) and .message (one line)."""

    def __init__(self, status, message):
        RuntimeError.__init__(self, "HTTP %d: %s" % (status, message))
        self.status = status
        self.message = message


class SlaveProcess:
    """`mbus-slave ARGS --control 127.0.0.1:0` on a pty (default) or a TCP port (tcp=True).

    .device: what a master opens (a pty path, or socket://127.0.0.1:PORT for pyserial's
    serial_for_url); .url: the control API's base URL; .stderr_text(): its log so far."""

    def __init__(self, *args, tcp=False, python=None, env=None, start_timeout=START_TIMEOUT):
        argv = [python or sys.executable, "-m", "mbus_ports",
                "--device", "tcp:0" if tcp else "pty", "--control", "127.0.0.1:0"]
        argv += [str(a) for a in args]
        e = dict(os.environ)
        e["PYTHONUNBUFFERED"] = "1"
        if env:
            e.update(env)
        self._err = _TempLog()
        self._lines = queue.Queue()
        self.proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=self._err.file, env=e)
        threading.Thread(target=self._read, daemon=True).start()
        self.tcp = tcp
        self.device = self.url = None
        self.host = self.port = None
        try:
            self._wait_started(start_timeout)
        except BaseException:
            self.stop(sig=signal.SIGKILL)
            raise

    def _read(self):
        for raw in self.proc.stdout:
            self._lines.put(raw.decode("utf-8", "replace").rstrip("\n"))
        self._lines.put(None)

    def _wait_started(self, timeout):
        deadline = time.monotonic() + timeout
        while self.device is None or self.url is None:
            try:
                line = self._lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                raise SlaveError("mbus-slave did not start within %g s:\n%s"
                                 % (timeout, self.stderr_text()))
            if line is None:
                raise SlaveError("mbus-slave exited (status %s):\n%s"
                                 % (self.proc.wait(), self.stderr_text()))
            if line.startswith("Point your M-Bus master at "):
                self.device = line[len("Point your M-Bus master at "):]
            elif line.startswith("Listening on "):
                hostport = line[len("Listening on "):]
                host, port = hostport.rsplit(":", 1)
                self.host, self.port = host.strip("[]"), int(port)
                self.device = "socket://%s:%d" % (hostport.rsplit(":", 1)[0], self.port)
            elif line.startswith("Control API at "):
                self.url = line[len("Control API at "):].rstrip("/")

    def stderr_text(self):
        return self._err.text()

    # -- a master's side -------------------------------------------------------------
    def serial(self, baud=2400, timeout=0.05):
        """A pyserial port onto the slave: 8E1 on the pty, the socket over TCP."""
        import serial
        if self.tcp:
            return serial.serial_for_url(self.device, timeout=timeout)
        # glibc's tcsetattr() reads the settings back; when the slave re-parks the pty
        # (2 ms after a master's setting) before a busy master got to that read, the open
        # fails with EINVAL although the kernel took the setting: park, then try again
        import termios
        for attempt in range(5):
            wait_parked(self.device)
            try:
                return serial.Serial(self.device, baud, bytesize=8,
                                     parity=serial.PARITY_EVEN, stopbits=1, timeout=timeout)
            except termios.error:
                if attempt == 4:
                    raise

    # -- the API ---------------------------------------------------------------------
    def request(self, method, path, body=None, timeout=API_TIMEOUT):
        """One API call -> parsed JSON; ControlAPIError on a 4xx/5xx."""
        data = None
        headers = {}
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        req = urllib.request.Request(self.url + path, data=data, method=method,
                                     headers=headers)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as r:
                return json.loads(r.read().decode() or "null")
        except urllib.error.HTTPError as e:
            try:
                msg = json.loads(e.read().decode()).get("error", "")
            except ValueError:
                msg = e.reason
            raise ControlAPIError(e.code, msg)

    def meters(self):
        return self.request("GET", "/api/meters")

    def meter(self, address):
        return self.request("GET", "/api/meters/%d" % address)

    def value(self, address, index):
        """The current decoded value of a record."""
        return self.meter(address)["records"][index]["value"]

    def set_value(self, address, index, value):
        """A constant, or a value source: {"counter": {...}} / {"wander": {...}}."""
        return self.request("PUT", "/api/meters/%d/records/%d" % (address, index),
                            {"value": value})

    def add(self, address, index, n):
        """A counter (or a constant) n higher."""
        return self.request("PUT", "/api/meters/%d/records/%d" % (address, index),
                            {"add": n})

    def patch(self, meter, **fields):
        """PATCH the meter at primary address `meter`: status=, present=, address=, id=,
        alarm= (the API's fields)."""
        return self.request("PATCH", "/api/meters/%d" % meter, fields)

    def set_status(self, address, status):
        return self.patch(address, status=status)

    def alarm(self, address, records=True):
        """Raise an alarm (class 1 data): True for error flags 1, or a list of records."""
        return self.patch(address, alarm=records)

    def clear_alarm(self, address):
        return self.patch(address, alarm=False)

    def unplug(self, address):
        return self.patch(address, present=False)

    def plug(self, address):
        return self.patch(address, present=True)

    def set_address(self, address, new):
        return self.patch(address, address=new)

    def set_id(self, address, ident):
        return self.patch(address, id=ident)

    def add_meter(self, meter):
        """A meter as in a meter file (a dict)."""
        return self.request("POST", "/api/meters", meter)

    def remove_meter(self, address):
        return self.request("DELETE", "/api/meters/%d" % address)

    def fault(self, address, spec, duration=None):
        """Switch a fault on ("drop:0.5", "busy:every:2", ...); returns its id."""
        body = {"fault": spec}
        if duration is not None:
            body["duration"] = duration
        return self.request("POST", "/api/meters/%d/faults" % address, body)["id"]

    def clear_faults(self, address, fault_id=None):
        path = "/api/meters/%d/faults" % address
        if fault_id is not None:
            path += "/%d" % fault_id
        return self.request("DELETE", path)["removed"]

    def bus(self):
        """The bus as a --bus file (a dict)."""
        return self.request("GET", "/api/bus")

    # -- lifetime --------------------------------------------------------------------
    def stop(self, sig=signal.SIGTERM, timeout=15):
        """Stop mbus-slave; its exit status."""
        stop_process(self.proc, sig, timeout)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._err.close()
        return self.proc.returncode

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class _TempLog:
    """stderr of the subprocess in a temporary file (a pipe nobody reads could fill)."""

    def __init__(self):
        import tempfile
        self.file = tempfile.TemporaryFile()

    def text(self):
        try:
            self.file.flush()
            self.file.seek(0)
            return self.file.read().decode("utf-8", "replace")
        except (OSError, ValueError):
            return ""

    def close(self):
        try:
            self.file.close()
        except OSError:
            pass


def wait_parked(path, timeout=START_TIMEOUT):
    """Wait until mbus-slave has parked the pty's speed (ports/pty_port.py): on recent
    Linux kernels a pyserial 8E1 open right after another master's close would otherwise
    fail with EINVAL."""
    try:
        import termios
    except ImportError:
        return
    park = getattr(termios, "B50", None)
    if park is None:
        return
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY | os.O_NONBLOCK)
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if termios.tcgetattr(fd)[5] == park:
                return
            time.sleep(0.005)
    finally:
        os.close(fd)


# -- pytest plugin -------------------------------------------------------------------------
try:
    import pytest
except ImportError:  # the module works without pytest
    pytest = None

if pytest is not None:
    @pytest.fixture
    def mbus_slave_factory():
        """start(*args, tcp=False) -> SlaveProcess; every one stopped after the test."""
        started = []

        def start(*args, **kw):
            s = SlaveProcess(*args, **kw)
            started.append(s)
            return s
        yield start
        for s in started:
            s.stop()

    @pytest.fixture
    def mbus_slave(mbus_slave_factory):
        """mbus-slave with the demo meter (address 3) on a pty, with its control API."""
        return mbus_slave_factory()
