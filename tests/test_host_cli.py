"""The mbus-slave command line: argument errors, random meters, the pyserial port (on the
slave side of a pty this test holds), boards, pymeterbus's own command-line masters."""
import json
import os
import re
import select as _select
import shutil
import subprocess
import sys
import termios

import pytest

from tests.hostutil import (SlaveProcess, PtySlave, run_cli, ping, req_ud2, send, recv,
                            values, frame_hex, START_TIMEOUT)


def one_line_error(out):
    assert out.returncode == 2, (out.returncode, out.stderr)
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("mbus-slave: error: "), out.stderr
    assert "Traceback" not in out.stderr
    return lines[0]


@pytest.mark.parametrize("args, words", [
    (["--bogus"], "unrecognized"),
    (["--baud", "1234"], "baud"),
    (["--baud", "fast"], "baud"),
    (["--addr", "251"], "address"),
    (["--addr", "-1"], "address"),
    (["--id", "1234567"], "8 decimal digits"),
    (["--id", "123456789"], "8 decimal digits"),
    (["--id", "1234567A"], "8 decimal digits"),
    (["--manuf", "T1T"], "manufacturer"),
    (["--medium", "plutonium"], "medium"),
    (["--medium", "300"], "medium"),
    (["--device", "tcp:http"], "port"),
    (["--device", "tcp:::1:5000"], "brackets"),
    (["--random-meters", "0"], "count"),
    (["--random-meters", "3", "--addr", "5"], "--addr"),
    (["--seed", "3"], "--random-meters"),
    (["--meter", "a.json", "--bus", "b.json"], "not allowed"),
    (["--board", "toaster"], "unknown board"),
    (["--link", "/tmp/x", "--device", "tcp:0"], "--link"),
    (["--reply-delay", "-5"], "reply-delay"),
])
def test_bad_arguments_give_one_line_and_status_2(args, words):
    line = one_line_error(run_cli(args))
    assert words in line


def test_bad_meter_files(tmp_path):
    bad_json = tmp_path / "bad.json"
    bad_json.write_text('{"id": 1,')
    bad_key = tmp_path / "key.json"
    bad_key.write_text('{"adress": 4}')
    bad_hex = tmp_path / "cap.hex"
    bad_hex.write_text("68 18 18 68 zz")
    binary = tmp_path / "bin.json"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    for args, words in ((["--meter", str(bad_json)], "bad JSON"),
                        (["--meter", str(bad_key)], "adress"),
                        (["--bus", str(tmp_path / "missing.json")], "cannot read"),
                        (["--bus", str(bad_key)], "adress"),
                        (["--replay", str(bad_hex)], "cap.hex"),
                        (["--meter", str(binary)], "bin.json")):
        line = one_line_error(run_cli(args))
        assert words in line, line


def test_help_and_module_entry_point():
    out = run_cli(["--help"])
    assert out.returncode == 0 and "--random-meters" in out.stdout
    exe = shutil.which("mbus-slave", path=os.path.dirname(sys.executable))
    if exe:
        out = subprocess.run([exe, "--addr", "999"], capture_output=True, text=True,
                             timeout=30)
        one_line_error(out)


def test_unopenable_device_is_one_line(tmp_path):
    out = run_cli(["--device", str(tmp_path / "no-such-tty")])
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("mbus-slave: error: cannot open")
    assert "Traceback" not in out.stderr


def test_board_raspberry_pi_hat_picks_ttyama0(tmp_path):
    out = run_cli(["--board", "raspberry-pi-hat"])
    if os.path.exists("/dev/ttyAMA0"):
        pytest.skip("a real /dev/ttyAMA0 here")
    assert out.returncode == 1
    assert "/dev/ttyAMA0" in out.stderr and "Traceback" not in out.stderr
    assert "Baudrate:        2400 8E1" in out.stderr


def _meters_of(tmp_path, *args):
    s = PtySlave(list(args), tmp_path)
    try:
        assert s.stop() == 0
    finally:
        pass
    found = re.findall(r"Meter (\d+): address (\d+), ID (\d{8}),", s.log())
    return [(int(a), i) for _, a, i in found]


def test_random_meters_are_distinct_and_reproducible(tmp_path):
    one = _meters_of(tmp_path, "--random-meters", "5", "--seed", "1")
    again = _meters_of(tmp_path, "--random-meters", "5", "--seed", "1")
    other = _meters_of(tmp_path, "--random-meters", "5", "--seed", "2")
    assert len(one) == 5
    assert sorted(a for a, _ in one) == [1, 2, 3, 4, 5]
    assert len(set(i for _, i in one)) == 5
    assert one == again
    assert one != other


def test_default_start_banner_mirrors_pymbusslave(tmp_path):
    s = PtySlave([], tmp_path)
    assert s.stop() == 0
    log = s.log()
    for text in ("Serial device:   pty", "Baudrate:        2400", "Slave address:   3",
                 "Slave device ID: 12345678"):
        assert text in log
    assert re.fullmatch(r"Point your M-Bus master at /dev/pts/\d+", s.seen[0])


class FdMaster:
    """The master end of a pty this test owns, with the pyserial calls hostutil uses."""

    def __init__(self, fd):
        self.fd = fd
        self.timeout = 0.05

    def read(self, n):
        r, _, _ = _select.select([self.fd], [], [], self.timeout)
        if not r:
            return b""
        return os.read(self.fd, n)

    def write(self, data):
        os.write(self.fd, bytes(data))

    def reset_input_buffer(self):
        while _select.select([self.fd], [], [], 0)[0]:
            if not os.read(self.fd, 4096):
                break


def test_serial_port_on_a_tty_with_baud_switch(tmp_path):
    """--device PATH goes through pyserial (ports/serial_port.py): 8E1 at 2400, then a
    master's CI BD switches the tty itself to 9600."""
    master, slave = os.openpty()
    path = os.ttyname(slave)
    state = str(tmp_path / "state.json")
    s = SlaveProcess(["--device", path, "--state", state], tmp_path)
    try:
        m = FdMaster(master)
        # wait until the slave has the tty open (its banner line on stderr)
        import time
        deadline = time.monotonic() + START_TIMEOUT
        while "Serving on" not in s.log() and time.monotonic() < deadline:
            assert s.proc.poll() is None, s.log()
            time.sleep(0.05)
        assert ping(m, 3)
        assert termios.tcgetattr(slave)[5] == termios.B2400
        send(m, frame_hex("68 03 03 68 53 03 BD 13 16"))
        assert recv(m) == b"\xe5"
        deadline = time.monotonic() + START_TIMEOUT
        while termios.tcgetattr(slave)[5] != termios.B9600 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert termios.tcgetattr(slave)[5] == termios.B9600
        t, _ = req_ud2(m, 3)
        assert values(t) == [1234, 456]
        assert s.stop() == 0
        with open(state) as f:
            assert json.load(f)["baud"] == 9600
    finally:
        s.stop()
        os.close(master)
        os.close(slave)


def test_pymeterbus_command_line_tools(tmp_path):
    """pymeterbus 0.8.5 declares mbus-serial-* scripts; run them against the pty when
    the module behind them is there."""
    try:
        import meterbus.tools  # noqa: F401
    except ImportError:
        pytest.skip("pymeterbus 0.8.5 ships its mbus-serial-* scripts without "
                    "meterbus.tools: the scripts cannot run")
    s = PtySlave([], tmp_path)
    try:
        exe = shutil.which("mbus-serial-scan-primary",
                           path=os.path.dirname(sys.executable))
        out = subprocess.run([exe, "-b", "2400", s.path], capture_output=True, text=True,
                             timeout=300)
        assert "3" in out.stdout + out.stderr
    finally:
        s.stop()


def test_reply_delay_outside_the_window_warns(tmp_path):
    s = PtySlave(["--reply-delay", "500", "--baud", "2400"], tmp_path)
    assert s.stop() == 0
    assert "outside the EN 13757-2 window" in s.log()
    assert "Reply delay:     500 ms" in s.log()


def test_serial_port_over_a_pyserial_url():
    from mbus_ports.serial_port import SerialPort
    from mbus_ports.line import LineServer
    from mbus_core.bus import Bus
    from mbus_ports.host import demo_meter
    port = SerialPort("loop://", 2400, read_timeout=0.05)
    try:
        port.write(bytes.fromhex("105B035E16"))
        buf = bytearray(256)
        n = 0
        for _ in range(20):
            n = port.readinto(buf)
            if n:
                break
        assert bytes(buf[:n]) == bytes.fromhex("105B035E16")
        port.set_baud(9600)
        assert port.ser.baudrate == 9600
        # the run loop over it: the request goes round the loop and is answered (the
        # reply comes back round the loop too and is ignored: it is not a master's frame)
        port.write(bytes.fromhex("1040034316"))
        line = LineServer(Bus([demo_meter()]), port, baud=9600, reply_delay_ms=0)
        for _ in range(20):
            line.step()
            if line.replies:
                break
        assert line.requests >= 1 and line.replies == 1
    finally:
        port.close()


def test_bad_replay_file_error_stays_one_short_line(tmp_path):
    junk = tmp_path / "notes.txt"
    junk.write_text("# not hex at all\n" + "x" * 5000 + "\n")
    out = run_cli(["--replay", str(junk)])
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and len(lines[0]) < 200, lines
    assert "malformed hex" in lines[0] and "notes.txt" in lines[0]


def test_seed_goes_with_fault_too(tmp_path):
    """README: the faults use --seed when --fault-seed is not given."""
    s = PtySlave(["--fault", "drop:0.2", "--seed", "7"], tmp_path)
    assert s.stop() == 0 and "error" not in s.log()


def test_strict_repeat_flag_is_shown(tmp_path):
    s = PtySlave(["--strict-repeat"], tmp_path)
    assert s.stop() == 0 and "Strict repeats" in s.log()


def test_replay_of_own_trace_output(tmp_path):
    """--trace output of one run is a --replay file for the next: same telegram."""
    s = PtySlave(["--trace", "--meter", "examples/water-meter.json"], tmp_path)
    try:
        with s.master() as ser:
            t, raw = req_ud2(ser, 2)
    finally:
        s.stop()
    out = list(s.seen)
    while True:   # stdout as a user would save it (the Point... line included)
        line = s.lines.get(timeout=5)
        if line is None:
            break
        out.append(line)
    trace = tmp_path / "trace.txt"
    trace.write_text("\n".join(out) + "\n")
    s = PtySlave(["--replay", str(trace), "--addr", "2"], tmp_path)
    try:
        with s.master() as ser:
            t2, raw2 = req_ud2(ser, 2)
    finally:
        s.stop()
    assert raw2 == raw


def test_command_text_names_what_a_master_changed():
    # the core keeps a code (Slave.command); the host makes the log line of it
    from mbus_core.bus import Bus
    from mbus_ports.host import command_text, demo_meter
    bus = Bus([demo_meter(address=3)])
    s = bus.slaves[0]
    assert command_text(s) is None
    said = []
    for frame in ("68 03 03 68 53 03 50 A6 16",             # application reset
                  "68 06 06 68 53 03 51 01 7A 07 29 16",    # address 3 -> 7
                  "68 03 03 68 53 07 BD 17 16"):            # 9600 baud
        bus.feed(bytes.fromhex(frame))
        assert bus.reply_len == 1
        said.append(command_text(s))
    assert said == ["application reset", "primary address 3 -> 7", "baud rate 9600"]
