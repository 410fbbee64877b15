"""OMS security end to end: `mbus-slave --security 5/7 --key HEX` on a pty and over TCP,
pymeterbus's framing as the master, mbus-decode --key on what came back; the message
counter across SIGKILL and restart; the same telegrams on the MicroPython unix port."""
import json
import os
import signal
import subprocess
import sys

import pytest

import meterbus

from mbus_core.codec import model
from mbus_tools.decode import decode_text, frame_json, main as decode_main
from tests.hostutil import micropython_exe, PtySlave, TcpSlave, send, recv, short, usage_error

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
KEY = "000102030405060708090A0B0C0D0E0F"
WRONG = "000102030405060708090A0B0C0D0E0E"

pytestmark = pytest.mark.skipif(not sys.platform.startswith(("linux", "darwin", "freebsd")),
                                reason="needs POSIX ptys")


def _hex(data):
    return " ".join("%02X" % b for b in data)


def _read(ser, address, fcb=0):
    send(ser, short(0x5B | (0x20 if fcb else 0), address))
    data = recv(ser)
    assert data and len(data) > 1, data
    return data


def _tcp_frames(args, tmp_path, address, count, sig=signal.SIGTERM):
    """Start mbus-slave over TCP with `args`, read `count` RSP_UD from `address`
    (toggling FCB), stop it with `sig`: (frames, the slave)."""
    s = TcpSlave(args, tmp_path)
    try:
        ser = s.master()
        try:
            frames = [_read(ser, address, fcb=i % 2) for i in range(count)]
        finally:
            ser.close()
    finally:
        status = s.stop(sig)
    if sig == signal.SIGTERM:
        assert status == 0, s.log()
    return frames, s


def _values(decoded):
    return [r["value"] for r in decoded["records"]]


def test_mode5_over_pty_with_pymeterbus_and_our_decoder(tmp_path, capsys):
    s = PtySlave(["--security", "5", "--key", KEY, "--log-level", "warning"], tmp_path)
    try:
        ser = s.master()
        try:
            ser.reset_input_buffer()
            meterbus.send_ping_frame(ser, 3)
            assert recv(ser) == b"\xe5"
            ser.reset_input_buffer()
            meterbus.send_request_frame(ser, 3)
            first = recv(ser)
            second = _read(ser, 3, fcb=1)
            # secondary selection works on the header, which stays in clear
            ser.reset_input_buffer()
            meterbus.send_select_frame(ser, "12345678FFFFFFFF")
            assert recv(ser) == b"\xe5"
            third = _read(ser, 0xFD, fcb=0)
        finally:
            ser.close()
    finally:
        assert s.stop() == 0
    for frame in (first, second, third):
        d = decode_text(_hex(frame), bytes.fromhex(KEY))
        assert d["security"] == {"mode": 5, "blocks": 1}
        assert _values(d) == [1234, 456]
        assert d["header"]["signature"] == 0x0510
    assert first[15] != second[15]          # the access number, in clear
    assert first[19:35] != second[19:35]    # so the IV and the ciphertext change
    # the command line: the right key decodes, a wrong one says so (status 1)
    assert decode_main(["--key", KEY, "--compact", _hex(first)]) == 0
    assert '"value": 1234' in capsys.readouterr().out
    assert decode_main(["--key", WRONG, _hex(first)]) == 1
    err = capsys.readouterr().err
    assert "wrong key" in err and err.count("\n") == 1
    # without a key: it says the telegram is encrypted instead of decoding ciphertext
    assert decode_main(["--compact", _hex(first)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["security"]["note"] == "encrypted: give --key HEX to decrypt"
    assert out["header"]["id"] == "12345678" and out["records"] == []


def _counter(frame, counters):
    """The message counter of a mode 7 RSP_UD, decrypted and checked against `counters`
    (the master's memory of each meter's last counter)."""
    d = frame_json(model.parse_frames(_hex(frame))[0], bytes.fromhex(KEY), counters)
    assert _values(d) == [1234, 456]
    return d["security"]["counter"]


def test_mode7_tcp_counter_survives_sigkill(tmp_path):
    state = str(tmp_path / "state.json")
    args = ["--security", "7", "--key", KEY, "--state", state, "--log-level", "warning"]
    seen = {}   # the master's memory: a counter must rise across the restart
    got = []
    for run in range(3):
        frames, _ = _tcp_frames(args, tmp_path, 3, 5, signal.SIGKILL)
        got.extend(_counter(f, seen) for f in frames)
        with open(state) as f:
            saved = json.load(f)["meters"]["0"]["message_counter"]
        assert saved >= got[-1]
    assert got == sorted(got) and len(set(got)) == len(got), got
    # a replay of an old telegram is caught by a decrypting master
    frame = _tcp_frames(args, tmp_path, 3, 1)[0][0]
    text = _hex(frame) + "\n" + _hex(frame)
    with pytest.raises(ValueError, match="frame 2: .*does not rise"):
        decode_text(text, bytes.fromhex(KEY))


def test_cli_refuses_bad_security_flags(tmp_path):
    assert "--key goes with --security" in usage_error(["--key", KEY])
    assert "needs --key" in usage_error(["--security", "5"])
    assert "32 hex digits" in usage_error(["--security", "5", "--key", "0011"])
    bus = tmp_path / "bus.json"
    bus.write_text('{"meters": [{"address": 1}]}')
    assert "one meter" in usage_error(["--bus", str(bus), "--security", "5", "--key", KEY])
    meter = tmp_path / "m.json"
    meter.write_text('{"address": 1, "security": {"mode": 6, "key": "%s"}}' % KEY)
    assert "security: mode must be 5" in usage_error(["--meter", str(meter)])
    meter.write_text('{"address": 1, "ci": "short", "security": {"mode": 5, "key": "%s"}}'
                     % KEY)
    assert "CI 72" in usage_error(["--meter", str(meter)])


def test_meter_file_security_key(tmp_path):
    meter = tmp_path / "m.json"
    meter.write_text(json.dumps({"address": 4, "id": "87654321",
                                 "security": {"mode": 7, "key": KEY, "counter": 41},
                                 "records": [{"quantity": "volume", "unit": "m3",
                                              "value": 12.5}]}))
    frames, s = _tcp_frames(["--meter", str(meter), "--log-level", "warning"], tmp_path, 4, 1)
    d = decode_text(_hex(frames[0]), bytes.fromhex(KEY))
    assert d["security"] == {"mode": 7, "blocks": 1, "counter": 42}
    assert d["records"][0]["value"] == 12.5
    assert "without --state" in s.log()


UPY_SCRIPT = r"""
import sys
sys.path.insert(0, "tests")
import upy_run
from mbus_core.meter import Meter
from mbus_core import security as S
from mbus_ports.aes import aes128
key = bytes(range(16))
for mode, counter in ((5, 0), (7, 1000)):
    recs = [bytes.fromhex("02FD49D204"), bytes.fromhex("0216C801")] * 30
    m = Meter(address=3, records=recs, security=S.Security(mode, key, aes128, counter=counter))
    m.refresh()
    for index in range(m.telegram_count()):
        buf = bytearray(260)
        n = m.write_telegram(index, buf, 0, 0x42 + index)
        print("%d %d %s %d" % (mode, index, buf[:n].hex(), m.last_sum))
"""


def test_micropython_gives_byte_identical_telegrams(tmp_path):
    upy = micropython_exe()
    script = tmp_path / "same.py"
    script.write_text(UPY_SCRIPT)
    outs = []
    for exe in (upy, sys.executable):
        out = subprocess.run([exe, str(script)], cwd=ROOT, capture_output=True, text=True,
                             timeout=120)
        assert out.returncode == 0, out.stdout + out.stderr
        outs.append(out.stdout)
    assert outs[0] == outs[1]
    assert outs[0].count("\n") >= 4     # several telegrams of each mode


@pytest.mark.parametrize("mode,fault,expect", [
    (5, "key", "wrong key"), (5, "cipher", "corrupted ciphertext"),
    (5, "blocks", "encrypted blocks"), (5, "plain", "not encrypted"),
    (7, "key", "bad MAC"), (7, "cipher", "bad MAC"), (7, "mac", "bad MAC"),
    (7, "replay", "does not rise"), (7, "rewind", "does not rise"),
    (7, "blocks", "encrypted blocks"),
    (7, "plain", "not encrypted")])
def test_security_faults_over_tcp(tmp_path, mode, fault, expect):
    frames, s = _tcp_frames(["--security", str(mode), "--key", KEY, "--fault",
                             "security:" + fault, "--log-level", "info"], tmp_path, 3, 2)
    with pytest.raises(ValueError, match=expect):
        decode_text("\n".join(_hex(f) for f in frames), bytes.fromhex(KEY))
    assert "fault: security %s: telegram of meter 3" % fault in s.log()


def test_security_fault_spec_errors():
    from mbus_ports.faults import parse_fault_spec
    assert parse_fault_spec("security:key:0.5@3").spec() == "security:key:0.5@3"
    with pytest.raises(ValueError, match="security needs one of"):
        parse_fault_spec("security:nope")


def test_firmware_serves_encrypted_meters_and_keeps_the_counter(tmp_path):
    """The board (tools/upy-sim: the firmware, compiled meter, cryptolib) sends what a
    master decrypts with the key; mode 7's counter goes on after a restart."""
    from tests.test_upy_firmware import Sim
    state = str(tmp_path / "state.json")
    for mode in (5, 7):
        meter = tmp_path / ("m%d.json" % mode)
        meter.write_text(json.dumps({"address": 4, "id": "87654321",
                                     "security": {"mode": mode, "key": KEY, "counter": 0},
                                     "records": [{"quantity": "volume", "unit": "m3",
                                                  "value": 12.5}]}))
        counters = []
        for _ in range(2):   # two starts of the board
            with Sim("--meter", str(meter), "--state", state) as sim:
                raw = sim.request(4)
            d = decode_text(_hex(raw), bytes.fromhex(KEY))
            assert d["records"][0]["value"] == 12.5, d
            assert d["security"]["mode"] == mode
            counters.append(d["security"].get("counter"))
        if mode == 7:
            assert counters[1] > counters[0], counters
