"""The catalogue of named real meters (ports/catalog): every meter served by mbus-slave
on a pty, read by pymeterbus and decoded by pymbusparser, gives what its captured telegram
gives; --list-meters; catalogue meters in bus files; unknown names are one-line errors."""
import json
import os
import re
import subprocess
import sys

import pytest

from mbus_core.codec import clone, model
from mbus_core.codec import records as R
from mbus_ports import catalog

from tests.hostutil import PtySlave, usage_error, recv, ping

meterbus = pytest.importorskip("meterbus")
pymbusparser = pytest.importorskip("pymbusparser")

HERE = os.path.dirname(os.path.abspath(__file__))
FRAMES = os.path.join(HERE, "fixtures", "libmbus-frames")
NAMES = catalog.names()


def entry(name):
    with open(os.path.join(catalog.FOLDER, name + ".json"), encoding="utf-8") as f:
        return json.load(f)


def source_frame(name):
    """The captured telegram a catalogue meter was cloned from (its "source")."""
    m = re.match(r"libmbus test/test-frames/(\S+\.hex) \(github\.com/rscada/libmbus, "
                 r"BSD-3-Clause", entry(name)["source"])
    assert m, entry(name)["source"]
    with open(os.path.join(FRAMES, m.group(1))) as f:
        return model.parse_frames(f.read())[0], f.name


def test_catalogue_size_and_keys():
    assert 8 <= len(NAMES) <= 15
    for name in NAMES:
        e = entry(name)
        assert e["name"] == name
        assert len(e["note"]) > 20 and "BSD-3-Clause" in e["source"]
        source_frame(name)


@pytest.mark.parametrize("name", NAMES)
def test_entry_is_the_clone_of_its_source(name):
    """The file is what clone.meter_config makes of its source, plus name, note, source:
    nobody edited a value away from the capture."""
    frame, path = source_frame(name)
    with open(path) as f:
        cfg = clone.meter_config(f.read())
    e = entry(name)
    for k in ("name", "note", "source"):
        e.pop(k)
    assert e == json.loads(json.dumps(cfg))


def without_access(frame):
    """A reply with its access number and checksum blanked (CI 72, 7A, 73)."""
    f = bytearray(frame)
    at = {0x72: 15, 0x7A: 7, 0x73: 11}.get(f[6])
    if at is not None:
        f[at] = 0
    f[-2] = 0
    return bytes(f)


def peer_views(frame):
    """What the two peers make of a telegram: pymbusparser's records and state, and
    pymeterbus's records (or the error it raises)."""
    rust = pymbusparser.parse(bytes(frame))
    try:
        py = json.loads(meterbus.load(bytes(frame)).to_JSON())["body"]["records"]
    except Exception as e:   # pymeterbus reads CI 72 only
        py = "error: %s" % type(e).__name__
    return rust["decode_state"], rust["records"], py


def check_served(frame, captured):
    assert without_access(frame) == without_access(captured)
    state, rust, py = peer_views(frame)
    want = peer_views(captured)
    assert (state, rust, py) == want
    if state == "complete" and captured[6] == 0x72:   # the values, as both peers read them
        assert [r["value"] for r in rust] == [r["value"] for r in want[1]]
        assert [r.get("value") for r in py] == [r.get("value") for r in want[2]]
        assert len(rust) == len(py) > 0


def read_meter(ser, address):
    assert ping(ser, address)
    ser.reset_input_buffer()
    meterbus.send_request_frame(ser, address)
    frame = recv(ser)
    assert frame and len(frame) > 1, frame
    return frame


@pytest.mark.parametrize("name", NAMES)
def test_every_catalogue_meter_served_on_a_pty(name, tmp_path):
    captured, _ = source_frame(name)
    slave = PtySlave(["--meter", "catalog:" + name], tmp_path)
    try:
        with slave.master() as ser:
            frame = read_meter(ser, entry(name)["address"])
    finally:
        assert slave.stop() == 0
    check_served(frame, captured)


def test_catalogue_meters_in_a_bus_file(tmp_path):
    meters = [{"meter": "catalog:" + n, "address": i + 1, "name": "flat %d" % (i + 1)}
              for i, n in enumerate(NAMES)]
    path = tmp_path / "bus.json"
    path.write_text(json.dumps({"meters": meters}))
    slave = PtySlave(["--bus", str(path)], tmp_path)
    try:
        with slave.master() as ser:
            frames = [read_meter(ser, i + 1) for i in range(len(NAMES))]
    finally:
        assert slave.stop() == 0
    for i, name in enumerate(NAMES):
        captured, _ = source_frame(name)
        want = bytearray(captured)
        want[5] = i + 1   # the address the bus file gave it
        want[-2] = sum(want[4:-2]) & 0xFF
        check_served(frames[i], bytes(want))


def test_bus_entry_keys_override_and_live(tmp_path):
    cfg = {"meters": [{"meter": "catalog:nzr-dhz-5-63", "address": 9, "id": "11112222",
                       "live": True}]}
    meters = catalog.expand(cfg)["meters"]
    assert meters[0]["address"] == 9 and meters[0]["id"] == "11112222"
    assert meters[0]["records"][0]["value"]["counter"]["start"] == 1274
    m = model.meters_from_config(meters)[0]
    assert m.id == 11112222 and m.address == 9


def test_list_meters():
    out = subprocess.run([sys.executable, "-m", "mbus_ports", "--list-meters"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and out.stderr == ""
    lines = out.stdout.splitlines()
    assert [line.split()[0] for line in lines] == NAMES
    for line, name in zip(lines, NAMES):
        assert line.endswith(entry(name)["note"])
    assert any(line.startswith("kamstrup-382 ") and "Kamstrup 382" in line
               for line in lines)


def test_unknown_name_is_one_line(tmp_path):
    line = usage_error(["--meter", "catalog:kamstrup-999"])
    assert line == ("mbus-slave: error: unknown catalogue meter 'kamstrup-999' "
                    "(mbus-slave --list-meters lists them)")
    path = tmp_path / "bus.json"
    path.write_text(json.dumps({"meters": [{"meter": "catalog:kamstrup-382"},
                                           {"meter": "catalog:nope", "address": 2}]}))
    line = usage_error(["--bus", str(path)])
    assert line == ("mbus-slave: error: %s: meter 2: unknown catalogue meter 'nope' "
                    "(mbus-slave --list-meters lists them)" % path)
    path.write_text(json.dumps({"meters": [{"meter": "kamstrup-382"}]}))
    assert "meter must be \"catalog:NAME\"" in usage_error(["--bus", str(path)])


def test_live_catalogue_meter_moves():
    now = [0.0]
    cfg = catalog.expand({"meter": "catalog:engelmann-waterstar", "live": True})
    m = model.meters_from_config(cfg, lambda: now[0])[0]
    buf = bytearray(300)

    def volume():
        m.invalidate()
        m.refresh()
        n = m.write_telegram(0, buf, 0, 0)
        return [r.value for r in R.decode_user_data(bytes(buf[:n]))["records"]
                if r.quantity == "Volume" and r.storage == 0][0]
    start = volume()
    assert start == pytest.approx(0.332)
    now[0] = 7200.0   # two hours at 0.5 m3/h
    assert volume() == pytest.approx(1.332)
