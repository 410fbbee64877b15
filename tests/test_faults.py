"""Fault injection (ports/faults.py): every fault does what it says, logs one line when it
fires, is repeatable with a seed, never raises, never touches the core's buffers; the spec
parser and the CLI arguments; the same results on MicroPython."""
import argparse
import os
import random
import subprocess
import sys

import pytest

from tests.hostutil import micropython_exe

from mbus_core import frame
from mbus_core.bus import Bus
from mbus_ports.faults import (Fault, Faults, Rng, add_fault_arguments, faults_from_args,
                               faults_from_specs, parse_fault_spec)
from mbus_ports.line import LineServer, reply_window_ms
from tests.core.mbus_testutil import ChunkPort as Port, demo_meter, h, many_records_meter

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

REQ_A = h("10 5B 03 5E 16")      # REQ_UD2, FCB 0
REQ_B = h("10 7B 03 7E 16")      # REQ_UD2, FCB 1
NKE = h("10 40 03 43 16")


def make_bus():
    return Bus([demo_meter(), many_records_meter(60, address=4, id=87654321)])


def serve(specs, requests, seed=1, bus=None):
    """Serve the requests (one per read) through a LineServer with the given faults;
    return (written frames, log lines, faults, bus)."""
    logs = []
    bus = bus or make_bus()
    faults = faults_from_specs(specs, seed=seed, log=logs.append, bus=bus)
    port = Port(requests)
    line = LineServer(bus, port, reply_delay_ms=0, faults=faults)
    for _ in range(len(requests)):
        line.step()
    return port.written, logs, faults, bus


def valid_frame(data):
    p = frame.FrameParser()
    pos = p.feed(data)
    return p.kind != 0 and pos == len(data), p


class FakeLine:
    def __init__(self, bus, baud=2400, parser=None):
        self.bus = bus
        self.parser = bus.parser if parser is None else parser
        self.baud = baud


def reply_of(bus, request):
    bus.feed(request)
    return bus.reply, bus.reply_len


# -- specs ---------------------------------------------------------------------------
@pytest.mark.parametrize("text,kind,p,addr", [
    ("drop:0.2", "drop", 0.2, None), ("checksum:0.1@3", "checksum", 0.1, 3),
    ("truncate:0.1", "truncate", 0.1, None), ("garbage:0.05", "garbage", 0.05, None),
    ("delay:early", "delay", 1.0, None), ("delay:inside:0.5@7", "delay", 0.5, 7),
    ("delay:late", "delay", 1.0, None), ("wrong-address:0.1", "wrong-address", 0.1, None),
    ("ignore-fcb@5", "ignore-fcb", 1.0, 5), ("busy:0.3", "busy", 0.3, None),
    ("busy:every:4@2", "busy", 1.0, 2), ("drop", "drop", 1.0, None), (" DROP:1@0 ", "drop", 1, 0),
])
def test_parse_fault_spec(text, kind, p, addr):
    f = parse_fault_spec(text)
    assert (f.kind, f.p, f.address) == (kind, p, addr)
    assert parse_fault_spec(f.spec()).spec() == f.spec()


@pytest.mark.parametrize("text", [
    "", "nope", "drop:2", "drop:-0.1", "drop:x", "drop:nan", "drop:0.1:0.2", "drop@",
    "drop@251", "drop@x", "delay", "delay:soon", "delay:late:2", "delay:late:0.1:1",
    "ignore-fcb:0.5", "busy:every", "busy:every:0", "busy:every:x", "checksum:0.1@3@4",
])
def test_bad_fault_spec_is_a_one_line_value_error(text):
    with pytest.raises(ValueError) as e:
        parse_fault_spec(text)
    msg = str(e.value)
    assert msg and "\n" not in msg


def test_fault_rejects_bad_values():
    with pytest.raises(ValueError):
        Fault("drop", 1.5)
    with pytest.raises(ValueError):
        Fault("explode")
    with pytest.raises(ValueError):
        Fault("delay", 1.0, mode="soon")


# -- the PRNG --------------------------------------------------------------------------
def test_rng_is_seeded_and_repeatable():
    a, b, c = Rng(7), Rng(7), Rng(8)
    sa = [a.next32() for _ in range(50)]
    assert sa == [b.next32() for _ in range(50)]
    assert sa != [c.next32() for _ in range(50)]
    r = Rng(1)
    assert all(0 <= r.below(10) < 10 for _ in range(1000))
    hits = sum(r.chance(0.25) for _ in range(20000))
    assert 4000 < hits < 6000          # a generous bound: it is a probability, not a timing
    assert not any(r.chance(0) for _ in range(100)) and all(r.chance(1) for _ in range(100))


# -- each fault ------------------------------------------------------------------------
def test_no_faults_changes_nothing():
    plain, logs, _, _ = serve([], [REQ_A, REQ_B, NKE])
    faulty, logs2, faults, _ = serve(["drop:0"], [REQ_A, REQ_B, NKE])
    assert plain == faulty and len(plain) == 3 and logs2 == [] and faults.fired == 0


def test_drop_logs_and_stays_silent():
    written, logs, faults, _ = serve(["drop:1"], [REQ_A, NKE])
    assert written == []
    assert logs == ["fault: drop reply of meter 3 (p=1)"] * 2
    assert faults.faults[0].fired == 2


def test_drop_with_probability_drops_some():
    written, logs, _, _ = serve(["drop:0.2"], [REQ_A, REQ_B] * 100, seed=5)
    assert 0 < len(logs) < 100 and len(written) == 200 - len(logs)
    assert all(line == "fault: drop reply of meter 3 (p=0.2)" for line in logs)


def test_fault_for_one_meter_leaves_the_others_alone():
    req4 = h("10 5B 04 5F 16")
    written, logs, _, _ = serve(["drop@4"], [REQ_A, req4, NKE])
    assert len(written) == 2 and written[1] == h("E5")
    assert logs == ["fault: drop reply of meter 4 (p=1)"]


def test_checksum_corrupted_only_in_the_sent_copy():
    plain, _, _, _ = serve([], [REQ_A, REQ_A])
    written, logs, _, bus = serve(["checksum"], [REQ_A, REQ_A])
    assert len(written) == 2
    for got, want in zip(written, plain):
        assert got[:-2] == want[:-2] and got[-1] == 0x16 and got[-2] != want[-2]
        assert not valid_frame(got)[0]
    # the core still holds the good telegram
    assert bytes(bus.slaves[0].tx[:len(plain[1])]) == plain[1]
    assert logs == ["fault: corrupt checksum of reply of meter 3 (p=1)"] * 2


def test_checksum_of_e5_is_left_alone():
    written, logs, _, _ = serve(["checksum"], [NKE])
    assert written == [h("E5")] and logs == []


def test_truncate():
    plain, _, _, _ = serve([], [REQ_A])
    written, logs, _, _ = serve(["truncate"], [REQ_A])
    assert 1 <= len(written[0]) < len(plain[0]) and plain[0].startswith(written[0])
    assert logs == ["fault: truncate reply of meter 3 to %d of %d bytes (p=1)"
                    % (len(written[0]), len(plain[0]))]


def test_garbage_appended():
    plain, _, _, _ = serve([], [REQ_A, NKE])
    written, logs, _, _ = serve(["garbage"], [REQ_A, NKE])
    for got, want in zip(written, plain):
        assert got.startswith(want) and 1 <= len(got) - len(want) <= 8
    assert logs[0].startswith("fault: append ") and logs[0].endswith(
        " garbage bytes to reply of meter 3 (p=1)")


def test_wrong_address_has_a_good_checksum():
    plain, _, _, _ = serve([], [REQ_A])
    written, logs, _, _ = serve(["wrong-address"], [REQ_A])
    ok, p = valid_frame(written[0])
    assert ok and p.a != 3
    assert written[0][:5] + written[0][6:-2] == plain[0][:5] + plain[0][6:-2]
    assert logs == ["fault: reply of meter 3 sent with address %d (p=1)" % p.a]


@pytest.mark.parametrize("baud", [300, 2400, 9600, 38400])
def test_delays_relative_to_the_window(baud):
    lo, hi = reply_window_ms(baud)
    bus = make_bus()
    line = FakeLine(bus, baud)
    for mode in ("early", "inside", "late"):
        logs = []
        faults = Faults([parse_fault_spec("delay:" + mode)], seed=3, log=logs.append)
        for _ in range(30):
            buf, n = reply_of(bus, REQ_A)
            data, n2, d = faults.apply(line, buf, n, 7)
            assert data is buf and n2 == n
            if mode == "early":
                assert d < lo
            elif mode == "inside":
                assert lo <= d <= hi
            else:
                assert d > hi
        assert len(logs) == 30 and all(mode_word in logs[0] for mode_word in
                                       ("delay reply of meter 3 by", "%d baud" % baud))


def test_delay_through_the_line_server_really_waits():
    # 38400 baud: the window ends at 58.6 ms, a late reply comes later than that
    import time
    bus = make_bus()
    port = Port([REQ_A])
    logs = []
    line = LineServer(bus, port, baud=38400, faults=Faults(["delay:late"], log=logs.append))
    t = time.monotonic()
    line.step()
    assert len(port.written) == 1 and time.monotonic() - t > 0.058
    assert "beyond the window" in logs[0]


def test_ignore_fcb_answers_a_repeat_as_new():
    strict = make_bus()
    strict.slaves[0].strict_repeat = True
    plain, _, _, _ = serve([], [REQ_B, REQ_B], bus=strict)
    assert plain[0] == plain[1]                      # the core repeats byte for byte
    strict = make_bus()
    strict.slaves[0].strict_repeat = True
    written, logs, _, bus = serve(["ignore-fcb@3"], [REQ_B, REQ_B, REQ_A], bus=strict)
    assert written[0] != written[1]                  # access number counted on
    assert bus.slaves[0].ignore_fcb and not bus.slaves[1].ignore_fcb
    assert logs == ["fault: meter 3 ignores FCB: repeated request answered as new"]


def test_busy_every_nth_request():
    reqs = [REQ_A, REQ_B] * 3
    written, logs, _, _ = serve(["busy:every:2"], reqs)
    busy = [w[6:8] == h("70 08") for w in written]
    assert busy == [False, True, False, True, False, True]
    assert logs == ["fault: busy reply (CI 70 08) of meter 3 (every 2nd request)"] * 3


def test_busy_without_attach_starts_with_the_second_request():
    bus = make_bus()
    logs = []
    port = Port([REQ_A, REQ_B, REQ_A])
    line = LineServer(bus, port, reply_delay_ms=0,
                      faults=Faults(["busy:every:1"], log=logs.append))
    for _ in range(3):
        line.step()
    assert [w[6:8] == h("70 08") for w in port.written] == [False, True, True]


def test_busy_with_probability():
    written, logs, _, _ = serve(["busy:0.3@3"], [REQ_A, REQ_B] * 50, seed=11)
    busy = sum(w[6:8] == h("70 08") for w in written)
    assert 5 < busy < 50 and len(logs) == busy
    assert logs[0] == "fault: busy reply (CI 70 08) of meter 3 (p=0.3)"


def test_busy_reply_is_repeated_on_the_same_fcb():
    # the core's repeat-on-same-FCB still holds: a missed busy reply comes again
    written, _, _, _ = serve(["busy:every:1"], [REQ_B, REQ_B])
    assert written[0] == written[1] and written[0][6:8] == h("70 08")


def test_seed_repeats_a_run():
    specs = ["drop:0.1", "checksum:0.1", "truncate:0.1", "garbage:0.1", "wrong-address:0.1",
             "busy:0.2", "delay:early:0.5"]
    reqs = [REQ_A, REQ_B, NKE, h("10 7B 04 7F 16"), h("10 5B 04 5F 16")] * 40
    one = serve(specs, reqs, seed=42)
    two = serve(specs, reqs, seed=42)
    other = serve(specs, reqs, seed=43)
    assert one[:2] == two[:2]
    assert one[:2] != other[:2]


# -- robustness --------------------------------------------------------------------------
def test_apply_never_raises():
    faults = Faults(["drop:0.5", "garbage", "busy:0.5", "ignore-fcb"],
                    log=lambda s: 1 / 0)        # even a log that raises
    buf = bytearray(b"\x68\x03")
    assert faults.apply(object(), buf, 2, 5) == (buf, 2, 5)
    bus = make_bus()
    out = faults.apply(FakeLine(bus), bus.tx, 0, 5)
    assert out[1] == 0
    b, n = reply_of(bus, REQ_A)
    faults.apply(FakeLine(bus), b, n, 5)
    assert faults.errors >= 1


def test_random_fault_mixes_never_raise_and_leave_the_core_intact():
    """The replies the core produced (in its own buffers) are the same with and without
    the reply-altering faults: they only ever work on a copy."""
    rnd = random.Random(1)
    altering = ["drop", "checksum", "truncate", "garbage", "wrong-address", "delay:late",
                "delay:early", "delay:inside"]
    requests = [REQ_A, REQ_B, NKE, h("10 7B 04 7F 16"), h("10 5B 04 5F 16"),
                h("10 5B FE 59 16"), h("10 40 FE 3E 16")]
    for seed in range(30):
        specs = ["%s:%g%s" % (rnd.choice(altering), rnd.random(),
                              rnd.choice(["", "@3", "@4"])) for _ in range(rnd.randint(1, 6))]
        faults = faults_from_specs(specs, seed=seed)
        twin, bus = make_bus(), make_bus()
        line = FakeLine(bus, rnd.choice([300, 2400, 38400]))
        for _ in range(60):
            req = rnd.choice(requests)
            b1, n1 = reply_of(bus, req)
            b2, n2 = reply_of(twin, req)
            before = bytes(b1[:n1])
            assert before == bytes(b2[:n2])
            if n1:
                data, n, d = faults.apply(line, b1, n1, 5)
                assert 0 <= n <= n1 + 8 and d >= 0
                assert bytes(b1[:n1]) == before


# -- CLI ---------------------------------------------------------------------------------
def test_cli_arguments():
    parser = argparse.ArgumentParser()
    add_fault_arguments(parser)
    args = parser.parse_args(["--fault", "drop:0.2", "--fault", "ignore-fcb@5", "--seed", "3"])
    faults = faults_from_args(args, log=print)
    assert [f.spec() for f in faults.faults] == ["drop:0.2", "ignore-fcb@5"]
    assert faults.seed == 3
    assert faults_from_args(parser.parse_args([])) is None
    assert faults_from_args(parser.parse_args(["--fault", "drop"])).seed == 1


def test_cli_arguments_beside_a_seed_of_its_own():
    # mbus-slave has --seed (for --random-meters): the faults then take --fault-seed
    parser = argparse.ArgumentParser()
    parser.add_argument("--seed", type=int, default=None)
    add_fault_arguments(parser)
    args = parser.parse_args(["--fault", "busy:every:3", "--fault-seed", "9", "--seed", "4"])
    assert faults_from_args(args).seed == 9 and args.seed == 4
    assert faults_from_args(parser.parse_args(["--fault", "drop", "--seed", "4"])).seed == 4


def test_cli_bad_spec_message(capsys):
    parser = argparse.ArgumentParser()
    add_fault_arguments(parser)
    with pytest.raises(SystemExit):
        parser.parse_args(["--fault", "drop:7"])
    assert "bad fault spec 'drop:7': probability 7 is not in 0..1" in capsys.readouterr().err


# -- MicroPython -------------------------------------------------------------------------
UPY_SCRIPT = r"""
import sys
sys.path.insert(0, ROOT + "/tests")
import upy_run  # the source tree and tests/core on the path, ports/ as mbus_ports
from mbus_testutil import demo_meter, many_records_meter, h
from mbus_core.bus import Bus
from mbus_ports.line import LineServer
from mbus_ports.faults import Faults
from mbus_testutil import ChunkPort as Port


logs = []
bus = Bus([demo_meter(), many_records_meter(60, address=4, id=87654321)])
f = Faults(SPECS, seed=42, log=logs.append, bus=bus)
port = Port(REQS)
line = LineServer(bus, port, reply_delay_ms=0, faults=f)
for _ in range(len(REQS)):
    line.step()
for w in port.written:
    print("W " + "".join("%02x" % b for b in w))
for s in logs:
    print("L " + s)
"""


def test_same_faults_on_micropython(tmp_path):
    upy = micropython_exe()
    specs = ["drop:0.1", "checksum:0.1@3", "truncate:0.1", "garbage:0.1", "wrong-address:0.1",
             "busy:0.2", "ignore-fcb@4", "delay:early"]
    reqs = [REQ_A, REQ_B, NKE, h("10 7B 04 7F 16"), h("10 7B 04 7F 16"),
            h("10 5B 04 5F 16")] * 10
    script = tmp_path / "faults_upy.py"
    script.write_text("ROOT = %r\nSPECS = %r\nREQS = %r\n" % (ROOT, specs, reqs) + UPY_SCRIPT)
    out = subprocess.run([upy, str(script)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    written, logs, _, _ = serve(specs, reqs, seed=42)
    want = ["W " + w.hex() for w in written] + ["L " + s for s in logs]
    assert out.stdout.splitlines() == want


def test_tcp_client_has_its_own_parser():
    # over TCP each client feeds the shared bus through its own parser (LineServer.parser)
    from mbus_core.frame import FrameParser
    bus = make_bus()
    line = FakeLine(bus, parser=FrameParser())
    logs = []
    faults = Faults(["wrong-address@3"], log=logs.append)
    bus.feed_line(line.parser, REQ_A)
    assert not bus.parser.frames   # the bus's own parser never saw it
    data, n, _ = faults.apply(line, bus.reply, bus.reply_len, 0)
    assert valid_frame(bytes(data[:n]))[1].a != 3 and len(logs) == 1


def test_mbus_slave_cli_injects_faults(tmp_path):
    """mbus-slave --device pty --fault busy:every:2 --fault drop@9: the 2nd request gets a
    busy reply, the log says so, a bad spec is a one-line usage error."""
    import select
    import termios
    import time
    import tty
    bad = subprocess.run([sys.executable, "-m", "mbus_ports", "--fault", "drop:3"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1].startswith("mbus-slave: error: ")
    assert "bad fault spec 'drop:3'" in bad.stderr
    proc = subprocess.Popen([sys.executable, "-m", "mbus_ports", "--device", "pty",
                             "--fault", "busy:every:2", "--fault", "drop@9",
                             "--fault-seed", "5"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert "/dev/pts/" in line, line + proc.stderr.read()
        fd = os.open(line.split()[-1], os.O_RDWR | os.O_NOCTTY)
        tty.setraw(fd, termios.TCSANOW)
        got = []
        for req in (REQ_A, REQ_B, REQ_A):
            os.write(fd, req)
            buf = b""
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and (len(buf) < 4 or len(buf) < buf[1] + 6):
                r, _, _ = select.select([fd], [], [], 0.5)
                if r:
                    buf += os.read(fd, 300)
            got.append(buf)
            time.sleep(0.05)
        os.close(fd)
        assert [g[6:8] == h("70 08") for g in got] == [False, True, False]
    finally:
        proc.terminate()
        _, err = proc.communicate(timeout=30)
    assert "fault: busy reply (CI 70 08) of meter 3 (every 2nd request)" in err
