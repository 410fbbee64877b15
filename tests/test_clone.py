"""Clones of captured meters (mbus_core.codec.clone, `mbus-decode --to-meter`,
`mbus-slave --clone`): every RSP_UD telegram in libmbus's test frames comes back byte for
byte from the real Slave/Bus serving its clone (the access number aside), multi-telegram
readouts keep their telegrams, bad captures give one error line, --live values move."""
import json
import os
import subprocess
import sys
import time

import pytest

from mbus_core.bus import Bus
from mbus_core.codec import clone, model
from mbus_core.codec import records as R
from mbus_core.codec.capture import capture_hex, is_reply
from mbus_core.slave import Slave
from mbus_ports.config import meter_json

from tests.core.mbus_testutil import replies, many_records_meter
from tests.hostutil import PtySlave, usage_error, recv, ping, send, short

HERE = os.path.dirname(os.path.abspath(__file__))
FRAMES = os.path.join(HERE, "fixtures", "libmbus-frames")
NAMES = sorted(n for n in os.listdir(FRAMES) if n.endswith(".hex"))
ACCESS_AT = {0x72: 15, 0x7A: 7, 0x73: 11}   # the access number's offset in the frame


def read(path):
    with open(path) as f:
        return f.read()


def captured(text):
    return [f for f in model.parse_frames(capture_hex(text)) if is_reply(f)]


def serve(cfg, count, clock=None):
    """Read `count` telegrams from the meter `cfg` describes, through Slave and Bus as a
    master does (SND_NKE, then REQ_UD2 with the FCB toggled)."""
    meter = model.meters_from_config(cfg, clock)[0]
    bus = Bus([Slave(meter)])
    a = meter.address
    assert replies(bus, short(0x40, a)) == [b"\xe5"]
    out = []
    fcb = 0x20
    for _ in range(count):
        c = 0x5B | fcb
        out += replies(bus, short(c, a))
        fcb ^= 0x20
    return out, meter


def expected(frame, address, access):
    """The captured frame as the clone at `address` sends it with `access`."""
    f = bytearray(frame)
    f[4] &= ~0x30   # ACD, DFC: link state (the comment names them), not cloned
    f[5] = address
    at = ACCESS_AT.get(f[6])
    if at is not None:
        f[at] = access
    f[-2] = sum(f[4:-2]) & 0xFF
    return bytes(f)


def assert_round_trip(text, cfg=None):
    want = captured(text)
    cfg = cfg or json.loads(meter_json(clone.meter_config(text)))  # via the JSON text
    got, meter = serve(cfg, len(want))
    assert len(got) == len(want)
    for k, (g, w) in enumerate(zip(got, want)):
        at = ACCESS_AT.get(w[6])
        access = g[at] if at is not None else 0
        if w[5] <= 250:
            assert meter.address == w[5]
        assert g == expected(w, meter.address, access), "telegram %d" % (k + 1)
    return cfg


@pytest.mark.parametrize("name", NAMES)
def test_every_fixture_telegram_round_trips(name):
    text = read(os.path.join(FRAMES, name))
    cfg = assert_round_trip(text)
    frame = captured(text)[0]
    if frame[6] == 0x72:
        h = R.decode_user_data(frame[6:-2])["header"]
        assert (cfg["id"], cfg["version"]) == (h["id"], h["version"])
    for rc in cfg.get("records", []):   # records keep their exact coding
        assert isinstance(rc, str) or "dif" in rc


def test_records_are_editable_values_not_hex():
    text = read(os.path.join(FRAMES, "itron_bm_+m.hex"))
    cfg = clone.meter_config(text)
    assert {"dif": "04", "vif": "13", "value": 54321,
            "comment": "Volume: 54.321 m^3"} in cfg["records"]
    for rc in cfg["records"]:
        assert isinstance(rc, dict)
    # edit a value: the served telegram carries it, coded as before
    for rc in cfg["records"]:
        if rc.get("vif") == "13" and rc["dif"] == "04":
            rc["value"] = 60000
    got, _ = serve(cfg, 1)
    recs = R.decode_user_data(got[0][6:-2])["records"]
    assert recs[1].head == bytes((0x04, 0x13)) and recs[1].raw == 60000


def test_manufacturer_data_kept_verbatim():
    text = read(os.path.join(FRAMES, "Elster-F2.hex"))
    cfg = clone.meter_config(text)
    last = cfg["records"][-1]
    assert last["dif"] == "1F"
    assert last["value"].startswith("C4 09 01 01 12 00")


def test_non_bcd_id_is_kept():
    cfg = clone.meter_config(read(os.path.join(FRAMES, "electricity-meter-1.hex")))
    assert cfg["id"] == "0500023E"


def multi_telegram_trace():
    """A readout of 3 telegrams from our own slave, as libmbus -d prints it."""
    meter = many_records_meter(90)
    meter.address = 9
    bus = Bus([Slave(meter)])
    lines = ["[2026-11-27 10:00:00] SEND (005): 10 40 09 49 16",
             "[2026-11-27 10:00:00] RECV (001): E5"]
    replies(bus, short(0x40, 9))
    fcb = 0x20
    meter.refresh()
    for _ in range(meter.telegram_count()):
        req = short(0x5B | fcb, 9)
        fcb ^= 0x20
        rsp = replies(bus, req)[0]
        for word, f in (("SEND", req), ("RECV", rsp)):
            lines.append("[2026-11-27 10:00:01] %s (%03d): %s"
                         % (word, len(f), " ".join("%02X" % b for b in f)))
    return "\n".join(lines) + "\n"


def test_multi_telegram_capture_keeps_its_telegrams():
    text = multi_telegram_trace()
    frames = captured(text)
    assert len(frames) == 3
    cfg = assert_round_trip(text)
    more = [rc for rc in cfg["records"] if isinstance(rc, dict) and rc.get("dif") == "1F"]
    assert len(more) == 2   # DIF 1F where the capture had it: telegrams 1 and 2 end there
    got, _ = serve(cfg, 6)  # the readout starts over after the last telegram
    for k in range(3):
        assert got[3 + k] == expected(frames[k], 9, got[3 + k][15])


def frame_of(app, address=1):
    body = bytes((0x08, address)) + app
    n = len(body)
    return bytes((0x68, n, n, 0x68)) + body + bytes((sum(body) & 0xFF, 0x16))


def test_telegrams_split_where_the_meter_split_them():
    # the ABB's telegram ends with 1F; a short second one follows (room was left in the
    # first: the split comes from the capture, not from the clone's own layout)
    first = captured(read(os.path.join(FRAMES, "abb_delta.hex")))[0]
    app2 = bytearray(first[6:19]) + bytes.fromhex("0413 2A000000 02FD17 0000")
    app2[9] = (app2[9] + 1) & 0xFF
    text = " ".join("%02X" % b for b in first + frame_of(bytes(app2)))
    cfg = assert_round_trip(text)
    assert len(cfg["records"]) == 17
    assert cfg["records"][14] == {"dif": "1F", "value": "",
                                  "comment": "more records follow in the next telegram"}


def test_only_the_first_readout_of_a_capture_counts():
    one = read(os.path.join(FRAMES, "kamstrup_382_005.hex"))
    cfg = clone.meter_config(one + "\n" + read(os.path.join(FRAMES, "abb_delta.hex")))
    assert cfg["manufacturer"] == "KAM"   # the Kamstrup's telegram has no 1F: it is all


def test_telegrams_of_two_meters_are_refused():
    two = (read(os.path.join(FRAMES, "abb_delta.hex")) + "\n"
           + read(os.path.join(FRAMES, "kamstrup_382_005.hex")))
    with pytest.raises(model.ConfigError, match="frame 2 comes from another meter"):
        clone.meter_config(two)


# -- live values ---------------------------------------------------------------------------
def test_live_counters_grow_and_temperatures_wander():
    text = read(os.path.join(FRAMES, "engelmann_sensostar2c.hex"))
    cfg = clone.meter_config(text, live=True)
    kinds = {}
    for rc in cfg["records"]:
        if isinstance(rc, dict) and isinstance(rc.get("value"), dict):
            kinds[rc["comment"].split(":")[0]] = list(rc["value"])[0]
    assert kinds["Volume"] == "counter" and kinds["Energy"] == "counter"
    assert kinds["Flow temperature"] == "wander"
    assert "Volume, storage 1" not in kinds   # history stays as captured
    now = [0.0]
    meter = model.meters_from_config(cfg, lambda: now[0])[0]
    read_now = reader(meter)
    first = read_now()
    assert first[19:-2] == captured(text)[0][19:-2]  # at the start: the captured values
    temps = set()
    for t in range(0, 100, 5):
        now[0] = t
        temps.add(values(read_now(), "Flow temperature")[0])
    assert len(temps) > 1 and all(93 <= x <= 97 for x in temps)   # around 95 C
    now[0] = 100 * 3600.0   # 100 h at 1 kW and 0.5 m3/h
    later = read_now()
    assert values(later, "Volume")[0] - values(first, "Volume")[0] == pytest.approx(50)
    assert values(later, "Energy")[0] - values(first, "Energy")[0] == pytest.approx(1e5)
    assert values(later, "Volume", 1) == values(first, "Volume", 1)


def reader(meter):
    """A master reading `meter` again and again (REQ_UD2, FCB toggled)."""
    bus = Bus([Slave(meter)])
    a = meter.address
    replies(bus, short(0x40, a))
    fcb = [0x20]

    def read_now():
        c = 0x5B | fcb[0]
        fcb[0] ^= 0x20
        return replies(bus, short(c, a))[0]
    return read_now


def values(frame, quantity, storage=0):
    return [r.value for r in R.decode_user_data(frame[6:-2])["records"]
            if r.quantity == quantity and r.storage == storage]


def test_live_on_the_command_line(tmp_path):
    out = subprocess.run([sys.executable, "-m", "mbus_tools.decode", "--to-meter",
                          os.path.join(FRAMES, "nzr_dhz_5_63.hex"), "--live"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    cfg = json.loads(out.stdout)
    assert cfg["records"][0]["value"]["counter"]["start"] == 1274
    path = tmp_path / "nzr.json"
    path.write_text(out.stdout)
    # served: the energy (Wh, VIF 03) grows at 1 kW, one Wh in 3.6 s
    slave = PtySlave(["--meter", str(path)], tmp_path)
    try:
        with slave.master() as ser:
            assert ping(ser, 5)
            first = energy(ser)
            time.sleep(4)   # a lower bound only: the counter never runs backwards
            assert energy(ser) > first >= 1274
    finally:
        assert slave.stop() == 0


def energy(ser):
    send(ser, short(0x7B, 5))
    f = recv(ser)
    return R.decode_user_data(f[6:-2])["records"][0].raw


def test_clone_flag_serves_the_capture_on_a_pty(tmp_path):
    src = os.path.join(FRAMES, "siemens_wfh21.hex")
    want = captured(read(src))[0]
    slave = PtySlave(["--clone", src], tmp_path)
    try:
        with slave.master() as ser:
            assert ping(ser, 5)
            send(ser, short(0x7B, 5))
            got = recv(ser)
            assert got == expected(want, 5, got[15])
    finally:
        assert slave.stop() == 0


# -- bad captures --------------------------------------------------------------------------
GOOD = ("68 1F 1F 68 08 02 72 78 56 34 12 24 40 01 07 55 00 00 00 03 13 15 31 00 DA 02 3B "
        "13 01 8B 60 04 37 18 02 18 16")
BAD = {
    "truncated": (GOOD[:60], "announced"),
    "checksum": (GOOD[:-5] + "19 16", "bad checksum 0x19"),
    "request": ("10 5B 02 5D 16", "no RSP_UD in the capture"),
    "snd_ud": ("68 06 06 68 53 02 51 01 7A 07 28 16", "no RSP_UD in the capture"),
    "error-reply": ("68 04 04 68 08 03 70 00 7B 16", "application error (CI 70)"),
    "empty": ("", "no bytes"),
    "not-hex": ("this is no capture", "malformed hex"),
    "cut-header": ("68 04 04 68 08 03 72 00 7D 16", "Variable header too short"),
}


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_capture_one_line_from_mbus_decode(case, tmp_path):
    text, words = BAD[case]
    path = tmp_path / (case + ".hex")
    path.write_text(text)
    out = subprocess.run([sys.executable, "-m", "mbus_tools.decode", "--to-meter",
                          str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 1
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1, out.stderr
    assert lines[0].startswith("mbus-decode: %s: " % path) and words in lines[0], lines[0]


@pytest.mark.parametrize("case", sorted(BAD))
def test_bad_capture_one_line_from_mbus_slave(case, tmp_path):
    text, words = BAD[case]
    path = tmp_path / (case + ".hex")
    path.write_text(text)
    line = usage_error(["--clone", str(path)])
    assert line.startswith("mbus-slave: error: %s: " % path) and words in line, line


ERRORS = os.path.join(HERE, "fixtures", "libmbus-error-frames")


@pytest.mark.parametrize("name", sorted(n for n in os.listdir(ERRORS) if n.endswith(".hex")))
def test_libmbus_error_frames_are_refused(name):
    with pytest.raises(model.ConfigError) as e:
        clone.meter_config(read(os.path.join(ERRORS, name)))
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("frame 1: ")
    assert "application error (CI 70)" in msg or "not a well-formed telegram" in msg


def test_fixed_data_with_binary_counters_is_refused():
    f = bytearray(captured(read(os.path.join(FRAMES, "sen_pollusonic_2.hex")))[0])
    f[12] |= 0x80   # status bit 7: the counters are binary, not BCD
    f[-2] = sum(f[4:-2]) & 0xFF
    with pytest.raises(model.ConfigError, match="binary counters"):
        clone.meter_config(f.hex())


@pytest.mark.parametrize("ci", ["short", "none"])
def test_short_and_no_header_round_trip(ci):
    cfg = {"address": 4, "ci": ci, "status": 0x04, "signature": 0x0000,
           "records": [{"quantity": "energy", "unit": "kWh", "value": 1234.5},
                       {"quantity": "flow temperature", "unit": "C", "value": 61.2}]}
    if ci == "none":
        del cfg["status"], cfg["signature"]
    frame = serve(cfg, 1)[0][0]
    clone_cfg = assert_round_trip(frame.hex())
    assert clone_cfg["ci"] == ci and "id" not in clone_cfg


def test_manufacturer_code_that_is_no_letters():
    f = bytearray(captured(read(os.path.join(FRAMES, "kamstrup_382_005.hex")))[0])
    f[11], f[12] = 0x00, 0x00   # "@@@": no letters A-Z
    f[-2] = sum(f[4:-2]) & 0xFF
    cfg = assert_round_trip(f.hex())
    assert cfg["manufacturer"] == 0


def test_missing_capture_file(tmp_path):
    line = usage_error(["--clone", str(tmp_path / "nope.hex")])
    assert "cannot read" in line
    assert "--live goes with" in usage_error(["--live"])
