"""Line faults (ports/faults.py, issue 15): an echoing level converter, a brown-out, pauses
inside a reply, a reply in two bursts, noise between frames, a TCP gateway that resets idle
connections, and collisions as a UART receives them (--collisions wire). End to end with
pymeterbus as the master over a pty (TCP for the gateway), byte for byte where it matters;
bad specs are one-line errors; the same bytes on MicroPython."""
import json
import os
import re
import socket
import subprocess
import sys
import time

import pytest

import meterbus

from mbus_core.bus import Bus
from mbus_core.codec.model import meters_from_config
from mbus_core.wire_collision import set_wire_collisions
from mbus_ports.faults import parse_fault_spec
from tests.hostutil import (micropython_exe, frame_hex, ping, recv, send, short, usage_error,
                            SILENCE_TIMEOUT)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
REQ3 = short(0x5B, 3)          # REQ_UD2 to the demo meter (address 3), FCB 0


def bursts(ser, quiet=0.15, total=10.0):
    """What the master reads, split where the line was quiet for `quiet` seconds; ends
    after a quiet spell of 4 x quiet (or `total` seconds)."""
    out = []
    cur = b""
    last = time.monotonic()
    deadline = last + total
    while time.monotonic() < deadline:
        b = ser.read(256)
        now = time.monotonic()
        if b:
            if cur and now - last >= quiet:
                out.append(cur)
                cur = b""
            cur += b
            last = now
        elif now - last >= 4 * quiet:
            break
    if cur:
        out.append(cur)
    return out


def valid(frame):
    """A complete long frame with a good checksum."""
    return (len(frame) > 6 and frame[0] == 0x68 and frame[1] == frame[2] == len(frame) - 6
            and frame[-1] == 0x16 and sum(frame[4:-2]) & 0xFF == frame[-2])


def log_lines(slave, prefix, wait=5.0):
    """The slave's log lines that start with `prefix` (waits for the first one)."""
    deadline = time.monotonic() + wait
    while True:
        got = [ln.split(":", 2)[2] for ln in slave.log().splitlines()
               if ln.count(":") >= 2 and ln.split(":", 2)[2].startswith(prefix)]
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


# -- the echoing level converter (libmbus issue #24) --------------------------------------
def test_echo_comes_before_the_reply(slave_factory):
    s = slave_factory("--fault", "echo")
    with s.master() as ser:
        ser.reset_input_buffer()
        meterbus.send_request_frame(ser, 3)          # a master that expects no echo ...
        got = b"".join(bursts(ser))
        assert got[:5] == REQ3                       # ... reads its own request first
        assert valid(got[5:]) and got[5 + 5] == 3
        ser.reset_input_buffer()
        meterbus.send_request_frame(ser, 3, read_echo=True)   # pymeterbus's echo option
        t = meterbus.load(meterbus.recv_frame(ser, 1))
        assert [r.value for r in t.records] == [1234, 456]
        assert ping(ser, 9, timeout=SILENCE_TIMEOUT) is False    # no meter: only the echo
    assert log_lines(s, "fault: echo of 5 request bytes")


# -- brown-out -------------------------------------------------------------------------------
def test_power_cycle_forgets_the_access_number(slave_factory):
    s = slave_factory("--fault", "power:every:2:3")
    access = []
    with s.master() as ser:
        for i in range(3):
            send(ser, REQ3)
            r = recv(ser, None if i < 2 else SILENCE_TIMEOUT)
            access.append(r[15] if r else r)
        time.sleep(3.5)
        for _ in range(2):
            send(ser, REQ3)
            access.append(recv(ser)[15])
    assert access == [0, 1, None, 0, 1]        # off after the 2nd, back with access 0
    assert log_lines(s, "fault: meter 3 loses power for 3 s after this frame "
                        "(every 2nd request)")
    assert log_lines(s, "fault: meter 3 powered up again")


def test_power_cycle_keeps_what_was_persisted(slave_factory):
    s = slave_factory("--fault", "power:every:2:2")
    with s.master() as ser:
        send(ser, frame_hex("68 06 06 68 53 03 51 01 7A 07 29 16"))   # address 3 -> 7
        assert recv(ser) == b"\xe5"
        assert ping(ser, 7)                          # the 2nd frame: then off
        assert not ping(ser, 7, timeout=SILENCE_TIMEOUT)
        time.sleep(2.5)
        assert ping(ser, 7)                          # back, at the address it was given


# -- pauses inside a reply, two bursts --------------------------------------------------------
def test_gaps_inside_the_reply(slave_factory):
    s = slave_factory("--fault", "gaps:400", "--fault-seed", "4")
    with s.master() as ser:
        ser.reset_input_buffer()
        meterbus.send_request_frame(ser, 3)
        parts = bursts(ser)
    line = log_lines(s, "fault: reply of meter 3 with 400 ms pauses after byte ")[0]
    cuts = [int(x) for x in re.search(r"after byte ([\d, ]+) \(", line).group(1).split(", ")]
    whole = b"".join(parts)
    assert valid(whole) and len(parts) == len(cuts) + 1
    assert [len(p) for p in parts[:-1]] == [b - a for a, b in zip([0] + cuts, cuts)]
    assert meterbus.load(whole).records[0].value == 1234


def test_split_reply(slave_factory):
    s = slave_factory("--fault", "split:500", "--fault-seed", "2")
    with s.master() as ser:
        ser.reset_input_buffer()
        meterbus.send_request_frame(ser, 3)
        assert recv(ser) is False                    # a master with a short character timeout
        rest = b"".join(bursts(ser))
        ser.reset_input_buffer()
        meterbus.send_request_frame(ser, 3)
        parts = bursts(ser)
    lines = log_lines(s, "fault: reply of meter 3 in two bursts: ")
    first, _, second = re.search(r"(\d+) bytes, 500 ms, (\d+) bytes", lines[-1]).group(1, 1, 2)
    assert [len(p) for p in parts] == [int(first), int(second)]
    assert valid(parts[0] + parts[1]) and rest
    assert meterbus.load(parts[0] + parts[1]).records[1].value == 456


# -- noise between frames -----------------------------------------------------------------
def test_noise_before_the_reply(slave_factory):
    s = slave_factory("--fault", "noise", "--fault-seed", "9")
    with s.master() as ser:
        ser.reset_input_buffer()
        meterbus.send_request_frame(ser, 3)
        got = b"".join(bursts(ser))
    line = log_lines(s, "fault: ")[0]
    m = re.match(r"fault: (\d) noise bytes \(([0-9A-F ]+)\) on the line before the reply "
                 r"of meter 3 \(p=1\)", line)
    assert m, line
    noise = bytes.fromhex(m.group(2))
    assert len(noise) == int(m.group(1)) and not set(noise) & {0x68, 0x10, 0xE5, 0x16}
    assert got.startswith(noise) and valid(got[len(noise):])


# -- a TCP gateway that resets idle connections ----------------------------------------------
def test_gateway_resets_idle_connections(tcp_factory):
    s = tcp_factory("--fault", "idle-close:1")
    with socket.create_connection((s.host, s.port), timeout=5) as c:
        c.sendall(short(0x40, 3))
        assert c.recv(16) == b"\xe5"
        time.sleep(2.5)
        with pytest.raises(ConnectionResetError):
            c.sendall(REQ3)
            c.recv(300)
    assert log_lines(s, "fault: gateway resets client 127.0.0.1:")
    # a busy connection is never idle
    with socket.create_connection((s.host, s.port), timeout=5) as c:
        for _ in range(6):
            c.sendall(short(0x40, 3))
            assert c.recv(16) == b"\xe5"
            time.sleep(0.3)


# -- collisions as the wire shows them -------------------------------------------------------
BUS = {"meters": [
    {"address": 5, "id": 11111111, "manufacturer": "KAM", "medium": "heat", "records": [
        {"quantity": "energy", "unit": "kWh", "value": 1234},
        {"quantity": "volume", "unit": "m3", "value": 56.5}]},
    {"address": 5, "id": 22222222, "manufacturer": "ITW", "medium": "water", "records": [
        {"quantity": "volume", "unit": "m3", "value": 12.25},
        {"quantity": "flow temperature", "unit": "C", "value": 20},
        {"quantity": "on time", "unit": "h", "value": 100}]}]}


def _uart_bits(frame):
    bits = []
    for b in frame:
        data = [(b >> i) & 1 for i in range(8)]
        bits += [0] + data + [sum(data) & 1] + [1]
    return bits


def _uart_receive(a, b, skew):
    """A UART on the AND of reply a and reply b started `skew` bits later."""
    la, lb = _uart_bits(a), [1] * skew + _uart_bits(b)
    n = max(len(la), len(lb))
    line = [x & y for x, y in zip(la + [1] * (n - len(la)), lb + [1] * (n - len(lb)))]
    line += [1] * 11
    out, pos = [], 0
    while pos < n:
        if line[pos]:
            pos += 1
            continue
        out.append(sum(line[pos + 1 + j] << j for j in range(8)))
        pos += 11
    return bytes(out)


def _alone(i):
    m = meters_from_config(BUS)[i]
    bus = Bus([m])
    bus.feed(short(0x5B, 5))
    return bytes(bus.reply[:bus.reply_len])


@pytest.mark.parametrize("mode", ["and", "wire"])
def test_collision_of_two_replies(slave_factory, tmp_path, mode):
    path = tmp_path / "bus.json"
    path.write_text(json.dumps(BUS))
    one, two = _alone(0), _alone(1)
    assert len(one) != len(two)
    if mode == "wire":
        want = _uart_receive(one, two, 5)
    else:
        want = bytes(x & y for x, y in zip(one, two)) + two[len(one):]
    s = slave_factory("--bus", str(path), "--collisions", mode)
    with s.master() as ser:
        assert ping(ser, 5)                          # two E5 on the same bit: a clean E5
        ser.reset_input_buffer()
        meterbus.send_request_frame(ser, 5)
        got = b"".join(bursts(ser))
    assert got == want
    assert not valid(got)
    if mode == "wire":
        assert got != bytes(x & y for x, y in zip(one, two)) + two[len(one):]


def test_wire_collision_counts_errors_in_the_core():
    one, two = _alone(0), _alone(1)
    bus = Bus(meters_from_config(BUS))
    set_wire_collisions(bus)
    bus.feed(short(0x5B, 5))
    assert bytes(bus.reply[:bus.reply_len]) == _uart_receive(one, two, 5)
    assert bus.wire.framing_errors + bus.wire.parity_errors > 0 and bus.collisions == 1


# -- bad specs ---------------------------------------------------------------------------------
@pytest.mark.parametrize("spec", [
    "echo:1", "echo@3", "power:2", "power:every:0", "power:every:2:0", "power:0.5:x",
    "power:every", "gaps", "gaps:0", "gaps:x", "gaps:10:2", "split:-1", "split:20000",
    "noise:3", "idle-close", "idle-close:0", "idle-close:5@3", "idle-close:nan"])
def test_bad_line_fault_specs(spec):
    with pytest.raises(ValueError) as e:
        parse_fault_spec(spec)
    assert "\n" not in str(e.value)
    line = usage_error(["--device", "tcp:0", "--fault", spec])
    assert "bad fault spec" in line


def test_good_specs_round_trip():
    for spec in ["echo", "power:every:3", "power:0.5:2.5@4", "power:every:2:3", "gaps:50:0.5",
                 "split:300@3", "noise:0.2", "idle-close:30", "power"]:
        assert parse_fault_spec(spec).spec() == spec


def test_idle_close_needs_tcp():
    assert "goes with --device tcp:PORT" in usage_error(["--fault", "idle-close:3"])


# -- MicroPython: the same bytes -------------------------------------------------------------
UPY_SCRIPT = r"""
import sys
sys.path.insert(0, ROOT + "/tests")
import upy_run
from mbus_testutil import demo_meter, h
from mbus_core.bus import Bus
from mbus_ports.line import LineServer
from mbus_ports.faults import Faults
from mbus_testutil import ChunkPort as Port


logs = []
bus = Bus([demo_meter()])
f = Faults(SPECS, seed=5, log=logs.append, bus=bus)
port = Port(REQS)
line = LineServer(bus, port, reply_delay_ms=0, faults=f)
for _ in range(len(REQS)):
    line.step()
for w in port.written:
    print("W " + "".join(["%02x" % b for b in w]))
for s in logs:
    print("L " + s)
"""


def test_line_faults_on_micropython(tmp_path):
    upy = micropython_exe()
    specs = ["echo", "power:every:3:3600", "noise:0.5", "gaps:1:0.5", "split:1:0.3"]
    reqs = [REQ3, short(0x7B, 3), short(0x40, 3)] * 4
    script = tmp_path / "line_faults_upy.py"
    script.write_text("ROOT = %r\nSPECS = %r\nREQS = %r\n" % (ROOT, specs, reqs) + UPY_SCRIPT)
    out = subprocess.run([upy, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    cpy = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                         timeout=120, env=dict(os.environ, PYTHONPATH=ROOT))
    assert cpy.returncode == 0, cpy.stdout + cpy.stderr
    assert out.stdout == cpy.stdout
    lines = out.stdout.splitlines()
    assert any(ln.startswith("L echo") or ln.startswith("L fault: echo") for ln in lines)
    assert any("loses power" in ln for ln in lines) and any("noise bytes" in ln for ln in lines)


def test_split_reply_with_wire_timing(slave_factory):
    """--wire-timing: the pause goes into the paced schedule (the loop never sleeps)."""
    s = slave_factory("--fault", "split:500", "--fault-seed", "2", "--wire-timing",
                      "--baud", "9600")
    with s.master(9600) as ser:
        ser.reset_input_buffer()
        meterbus.send_request_frame(ser, 3)
        parts = bursts(ser)
    line = log_lines(s, "fault: reply of meter 3 in two bursts: ")[0]
    first, second = re.search(r"(\d+) bytes, 500 ms, (\d+) bytes", line).group(1, 2)
    assert [len(p) for p in parts] == [int(first), int(second)]
    assert valid(parts[0] + parts[1])


def test_echo_over_tcp(tcp_factory):
    """Behind a gateway the converter's echo comes down the same connection."""
    s = tcp_factory("--fault", "echo")
    with socket.create_connection((s.host, s.port), timeout=5) as c:
        c.sendall(short(0x40, 3))
        got = b""
        while len(got) < 6:
            got += c.recv(16)
    assert got == short(0x40, 3) + b"\xe5"


UPY_WIRE = r"""
import sys
sys.path.insert(0, ROOT + "/tests")
import upy_run
import micropython
from mbus_testutil import demo_meter, many_records_meter, h
from mbus_core.bus import Bus
from mbus_core.wire_collision import set_wire_collisions

bus = Bus([demo_meter(address=5), many_records_meter(3, address=5, id=87654321)])
set_wire_collisions(bus)
req = h("10 5B 05 60 16")
nke = h("10 40 05 45 16")
reqs = (req, nke, req)   # built before the lock: a tuple made in the loop allocates
bus.feed(req)
bus.feed(nke)
micropython.heap_lock()
try:
    for r in reqs:
        bus.feed(r)
        n = bus.reply_len
finally:
    micropython.heap_unlock()
print("".join(["%02x" % b for b in bus.reply[:bus.reply_len]]))
print(bus.wire.framing_errors, bus.wire.parity_errors)
"""


def test_wire_collisions_allocate_nothing_on_micropython(tmp_path):
    """The core's wire collisions under MicroPython's heap lock, the same bytes as here."""
    upy = micropython_exe()
    script = tmp_path / "wire_upy.py"
    script.write_text("ROOT = %r\n" % ROOT + UPY_WIRE)
    out = subprocess.run([upy, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    sys.path.insert(0, os.path.join(ROOT, "tests", "core"))
    try:
        from mbus_testutil import demo_meter, many_records_meter
    finally:
        sys.path.pop(0)
    one = Bus([demo_meter(address=5)])
    two = Bus([many_records_meter(3, address=5, id=87654321)])
    for b in (one, two):
        for r in (short(0x5B, 5), short(0x40, 5), short(0x5B, 5), short(0x40, 5)):
            b.feed(r)
        b.feed(short(0x5B, 5))
    a, b = bytes(one.reply[:one.reply_len]), bytes(two.reply[:two.reply_len])
    assert out.stdout.splitlines()[0] == _uart_receive(a, b, 5).hex()
