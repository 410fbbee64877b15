"""Issue 10: the run loop blocks until a byte arrives or its next deadline instead of
polling, on a pty, a pyserial tty and TCP; stop() wakes it; a master's new settings on the
pty are re-parked without polling; the reply delay is kept. Counts and orderings only,
never tight timings (the figures are mbus-bench's)."""
import os
import select
import sys
import termios
import threading
import time

import pytest

from mbus_core.bus import Bus
from mbus_ports.host import demo_meter, StateKeeper
from mbus_ports.line import LineServer
from tests.hostutil import PtySlave, TcpSlave, short

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="needs Linux ptys and /proc")

# generous (a few a second would do; an idle slave now makes none): the 5 ms poll loop
# on a pty made about 400, the 50 ms housekeeping over TCP about 40
WAKEUPS_IN_2_S = 20


def _switches(pid):
    with open("/proc/%d/status" % pid) as f:
        for line in f:
            if line.startswith("voluntary_ctxt_switches:"):
                return int(line.split()[1])
    raise AssertionError("no voluntary_ctxt_switches in /proc/%d/status" % pid)


def _wakeups_over(pid, seconds=2.0):
    time.sleep(0.5)            # past the start
    before = _switches(pid)
    time.sleep(seconds)
    return _switches(pid) - before


@pytest.mark.parametrize("kind", ["pty", "tcp"])
def test_an_idle_slave_hardly_wakes_up(tmp_path, kind):
    s = PtySlave([], tmp_path) if kind == "pty" else TcpSlave([], tmp_path)
    try:
        n = _wakeups_over(s.proc.pid)
    finally:
        assert s.stop() == 0
    assert n < WAKEUPS_IN_2_S, (kind, n)


def test_an_idle_slave_with_a_state_file_hardly_wakes_up(tmp_path):
    # the state keeper's periodic save is a deadline, not a reason to poll
    s = PtySlave(["--state", str(tmp_path / "state.json"), "--readings-every", "1"],
                 tmp_path)
    try:
        n = _wakeups_over(s.proc.pid)
    finally:
        assert s.stop() == 0
    assert n < WAKEUPS_IN_2_S, n


class Counting:
    """Wraps a port: counts wait() calls and keeps the timeouts given."""

    def __init__(self, port):
        self.port = port
        self.timeouts = []

    def __getattr__(self, name):
        return getattr(self.port, name)

    def wait(self, timeout_ms):
        self.timeouts.append(timeout_ms)
        self.port.wait(timeout_ms)


def _serve(line):
    t = threading.Thread(target=line.serve_forever, daemon=True)
    t.start()
    return t


def _master(path):
    fd = os.open(path, os.O_RDWR | os.O_NOCTTY)
    return fd


def _read_reply(fd, timeout=5):
    data = b""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if select.select((fd,), (), (), 0.1)[0]:
            data += os.read(fd, 600)
            if data[:1] == b"\xe5" or (len(data) >= 2 and len(data) >= data[1] + 6):
                return data
    return data


def test_pty_port_blocks_and_stop_wakes_it():
    from mbus_ports.pty_port import PtyPort
    port = Counting(PtyPort())
    line = LineServer(Bus([demo_meter()]), port, reply_delay_ms=0)
    t = _serve(line)
    try:
        time.sleep(1.0)
        assert len(port.timeouts) <= 3, port.timeouts   # one wait, no deadline
        assert port.timeouts[0] is None
        line.stop()
        t.join(5)
        assert not t.is_alive()                         # the wait ended at once
    finally:
        line.stop()
        t.join(5)
        port.close()


def test_pty_reply_not_before_the_delay():
    from mbus_ports.pty_port import PtyPort
    port = PtyPort()
    line = LineServer(Bus([demo_meter()]), port, reply_delay_ms=30)
    t = _serve(line)
    fd = _master(port.name)
    try:
        for c in (0x5B, 0x7B, 0x40):
            t0 = time.monotonic()
            os.write(fd, short(c, 3))
            data = _read_reply(fd)
            took = time.monotonic() - t0
            assert data and data[-1:] in (b"\x16", b"\xe5"), data
            assert took >= 0.030, took     # an ordering: read after the request, + delay
    finally:
        os.close(fd)
        line.stop()
        t.join(5)
        port.close()


@pytest.mark.parametrize("events", [True, False])
def test_a_masters_setting_is_reparked_without_polling(monkeypatch, events):
    """A master sets 2400 on the pty: the slave parks it at 50 baud again, woken by the
    packet-mode event (Linux) or, without events, on its slow check."""
    from mbus_ports import pty_port
    if not events:
        monkeypatch.setattr(pty_port, "TIOCPKT", None)
    port = Counting(pty_port.PtyPort())
    assert port.events is events
    line = LineServer(Bus([demo_meter()]), port, reply_delay_ms=0)
    t = _serve(line)
    fd = _master(port.name)
    try:
        assert termios.tcgetattr(fd)[5] == pty_port.PARK_SPEED
        for _ in range(3):
            attrs = termios.tcgetattr(fd)
            attrs[2] = (attrs[2] & ~termios.CBAUD) | termios.B2400
            attrs[4] = attrs[5] = termios.B2400
            termios.tcsetattr(fd, termios.TCSANOW, attrs)
            deadline = time.monotonic() + 5
            while (termios.tcgetattr(fd)[5] != pty_port.PARK_SPEED
                   and time.monotonic() < deadline):
                time.sleep(0.01)
            assert termios.tcgetattr(fd)[5] == pty_port.PARK_SPEED
        os.write(fd, short(0x40, 3))
        assert _read_reply(fd) == b"\xe5"
        if events:   # a few wake-ups per setting, not a poll every few ms
            assert len(port.timeouts) < 40, len(port.timeouts)
    finally:
        os.close(fd)
        line.stop()
        t.join(5)
        port.close()


def test_serial_port_waits_on_its_file_descriptor():
    from mbus_ports.serial_port import SerialPort
    master, slave = os.openpty()
    path = os.ttyname(slave)
    port = Counting(SerialPort(path, 2400))
    assert port.waiter is not None           # a local tty: wait() polls its descriptor
    line = LineServer(Bus([demo_meter()]), port, reply_delay_ms=0)
    t = _serve(line)
    try:
        time.sleep(1.0)
        assert len(port.timeouts) <= 3, port.timeouts
        os.write(master, short(0x40, 3))
        assert _read_reply(master) == b"\xe5"
        line.stop()
        t.join(5)
        assert not t.is_alive()
    finally:
        line.stop()
        t.join(5)
        port.close()
        os.close(master)
        os.close(slave)


def test_serial_port_over_a_url_still_paces_with_its_read_timeout():
    from mbus_ports.serial_port import SerialPort
    port = SerialPort("loop://", 2400, read_timeout=0.01)
    try:
        assert port.waiter is None
        port.wait(None)                      # returns at once: readinto waits
        assert port.readinto(bytearray(16)) == 0
    finally:
        port.close()


def test_tcp_server_blocks_and_stop_wakes_it():
    from mbus_ports.tcp_server import TcpServer
    server = TcpServer(Bus([demo_meter()]), "127.0.0.1", 0)
    timeouts = []
    wait = server.poller.wait

    def counting(timeout=None):
        timeouts.append(timeout)
        return wait(timeout)
    server.poller.wait = counting
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        time.sleep(1.0)
        assert len(timeouts) <= 3, timeouts   # the first round looks, then one wait
        assert timeouts[-1] is None
        server.stop()
        t.join(5)
        assert not t.is_alive()
    finally:
        server.stop()
        t.join(5)
        server.close()


def test_tcp_half_frame_and_idle_client_are_deadlines():
    import socket
    from mbus_ports.tcp_server import TcpServer
    server = TcpServer(Bus([demo_meter()]), "127.0.0.1", 0, idle_timeout=2.0)
    t = threading.Thread(target=server.serve_forever, daemon=True)
    t.start()
    try:
        with socket.create_connection(("127.0.0.1", server.port), timeout=5) as c:
            c.sendall(b"\x10\x40")           # half a frame: dropped after 0.5 s
            time.sleep(1.0)
            c.sendall(b"\x03\x43\x16")       # the rest alone is no frame
            c.settimeout(0.3)
            with pytest.raises(socket.timeout):
                c.recv(10)
            c.settimeout(5)                  # no valid frame for 2 s: closed
            assert c.recv(10) == b""
        assert server.clients == {}
    finally:
        server.stop()
        t.join(5)
        server.close()


def test_paced_port_wait_ends_in_time_for_the_next_byte():
    from mbus_ports.paced import PacedPort

    class Inner:
        def __init__(self):
            self.timeouts = []
            self.out = b""

        def wait(self, timeout_ms):
            self.timeouts.append(timeout_ms)

        def write(self, data):
            self.out += bytes(data)

    inner = Inner()
    paced = PacedPort(inner, 2400)
    paced.write(b"\x10" * 5)
    paced.wait(None)
    char_ms = 11 * 1000 / 2400
    assert inner.timeouts and 0 < inner.timeouts[0] <= char_ms + 0.01, inner.timeouts
    paced.wait(None)
    assert inner.timeouts[-1] is not None


def test_state_keeper_tick_says_when_it_is_due_again(tmp_path):
    now = [100.0]
    keeper = StateKeeper(str(tmp_path / "s.json"), [demo_meter()], [12345678],
                         readings_every=60, clock=lambda: now[0])
    assert 59000 <= keeper.tick() <= 60001 and keeper.saves == 0
    now[0] = 161.0
    assert 59000 <= keeper.tick() <= 60001 and keeper.saves == 1
    assert StateKeeper(None, [], [], readings_every=0).tick() is None
