"""Issue 16: signals always stop mbus-slave cleanly, the reply delay is bounded, and a
--link that cannot be made is a one-line usage error."""
import json
import os
import signal
import threading
import time

import pytest

from mbus_core.bus import Bus
from mbus_ports.host import demo_meter
from mbus_ports.line import LineServer, ticks_us
from tests.hostutil import ping, send, short, usage_error

PROMPT = 1.5      # seconds: a signal during a reply delay stops the slave within this


# -- the reply delay -------------------------------------------------------------------
@pytest.mark.parametrize("value", ["1e300", "1e12", "10001", "inf", "nan"])
def test_a_reply_delay_beyond_10_s_is_refused(value):
    line = usage_error(["--reply-delay", value])
    assert "--reply-delay" in line and "10000" in line, line


def test_the_longest_reply_delay_is_accepted(tcp_factory):
    s = tcp_factory("--reply-delay", "10000")
    assert s.stop() == 0
    assert "Reply delay:     10000 ms" in s.log()


class _Port:
    def __init__(self):
        self.written = []

    def write(self, data):
        self.written.append(bytes(data))

    def flush(self):
        pass


def test_stop_interrupts_the_reply_delay():
    port = _Port()
    line = LineServer(Bus([demo_meter()]), port, reply_delay_ms=5000)
    threading.Timer(0.2, line.stop).start()
    t0 = time.monotonic()
    req = bytearray(short(0x5B, 3))
    line.receive(req, len(req))
    took = time.monotonic() - t0
    assert took < 1, took
    assert port.written == []      # stopped: no late reply after the stop


def test_the_reply_delay_is_still_kept():
    port = _Port()
    line = LineServer(Bus([demo_meter()]), port, reply_delay_ms=300)
    line._rx_us = ticks_us()       # the request's last byte came just now
    t0 = time.monotonic()
    req = bytearray(short(0x40, 3))
    line.receive(req, len(req))
    took = time.monotonic() - t0
    assert took >= 0.29, took      # never early (a late reply is the scheduler's doing)
    assert port.written == [b"\xe5"]


def _stop_during_the_delay(s, ser, sig):
    send(ser, short(0x5B, 3))
    time.sleep(0.3)                # the slave is now waiting out its reply delay
    t0 = time.monotonic()
    status = s.stop(sig)
    return status, time.monotonic() - t0


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_a_signal_during_a_long_reply_delay_stops_at_once_pty(slave_factory, sig):
    s = slave_factory("--reply-delay", "8000")
    with s.master() as ser:
        status, took = _stop_during_the_delay(s, ser, sig)
    assert status == 0 and took < PROMPT, (status, took, s.log())
    assert "stopped" in s.log()


def test_a_signal_during_a_long_reply_delay_stops_at_once_tcp(tcp_factory):
    s = tcp_factory("--reply-delay", "8000")
    with s.master() as ser:
        status, took = _stop_during_the_delay(s, ser, signal.SIGTERM)
    assert status == 0 and took < PROMPT, (status, took, s.log())
    assert "stopped" in s.log()


# -- SIGHUP --------------------------------------------------------------------------------
def test_sighup_stops_cleanly_like_sigterm(slave_factory, tmp_path):
    link = str(tmp_path / "mbus0")
    state = tmp_path / "state.json"
    s = slave_factory("--link", link, "--state", str(state))
    assert os.path.islink(link)
    with s.master() as ser:
        assert ping(ser, 3)        # serving: the state file of the start is written
    os.remove(str(state))          # written at start: it must be written again at exit
    assert s.stop(signal.SIGHUP) == 0, s.log()
    assert "stopped" in s.log()
    assert not os.path.lexists(link)
    assert json.loads(state.read_text())["meters"]["0"]["address"] == 3


# -- --link ----------------------------------------------------------------------------------
def test_link_onto_a_regular_file_is_a_usage_error(tmp_path):
    f = tmp_path / "x"
    f.write_text("keep me")
    line = usage_error(["--link", str(f)])
    assert line == ("mbus-slave: error: --link %s: exists and is not a symlink "
                    "(not replaced)" % f)
    assert f.read_text() == "keep me"


def test_link_in_a_missing_folder_is_a_usage_error(tmp_path):
    p = tmp_path / "nope" / "mbus0"
    line = usage_error(["--link", str(p)])
    assert line.startswith("mbus-slave: error: --link %s: " % p), line


# -- a signal that comes just before the loop blocks -------------------------------------
def _stop_by_a_signal_elsewhere(runner, wake):
    """Serve in this (the main) thread; deliver SIGUSR1 to another thread, as the kernel
    may deliver SIGTERM to no blocked thread in particular or just before the wait starts:
    the Python handler (runner.stop) runs only once the wait returns. True when the
    signal ended the wait, False when only the safety stop (another thread, 3 s) did."""
    handled = []
    old = signal.signal(signal.SIGUSR1, lambda s, f: (handled.append(s), runner.stop()))
    old_fd = wake(runner) if wake else None
    parked = threading.Event()
    done = threading.Event()
    saved = []

    def elsewhere():
        parked.set()
        done.wait(20)

    def safety():
        if not done.wait(3):
            saved.append(True)
            runner.stop()
    t = threading.Thread(target=elsewhere, daemon=True)
    t.start()
    guard = threading.Thread(target=safety, daemon=True)
    guard.start()
    parked.wait(5)
    threading.Timer(0.3, signal.pthread_kill, (t.ident, signal.SIGUSR1)).start()
    try:
        runner.serve_forever()
    finally:
        done.set()
        signal.signal(signal.SIGUSR1, old)
        if old_fd is not None:
            signal.set_wakeup_fd(old_fd)
    return bool(handled) and not saved


def test_a_signal_elsewhere_ends_the_tcp_wait():
    from mbus_ports.cli import wake_on_signals
    from mbus_ports.tcp_server import TcpServer
    server = TcpServer(Bus([demo_meter()]), "127.0.0.1", 0)
    try:
        assert _stop_by_a_signal_elsewhere(server, wake_on_signals)
    finally:
        server.close()


def test_without_the_wakeup_descriptor_the_wait_goes_on():
    # what wake_on_signals() is for: the same signal leaves the wait blocked
    from mbus_ports.tcp_server import TcpServer
    server = TcpServer(Bus([demo_meter()]), "127.0.0.1", 0)
    try:
        assert not _stop_by_a_signal_elsewhere(server, None)
    finally:
        server.close()


def test_a_signal_elsewhere_ends_the_pty_wait():
    from mbus_ports.cli import wake_on_signals
    from mbus_ports.pty_port import PtyPort
    port = PtyPort()
    line = LineServer(Bus([demo_meter()]), port)
    try:
        assert port.wake_fd() is not None
        assert _stop_by_a_signal_elsewhere(line, wake_on_signals)
    finally:
        port.close()
