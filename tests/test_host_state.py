"""ports/state.py: load/save of the settings a master changed, on CPython and MicroPython."""
import json
import os
import subprocess

from mbus_core.meter import Meter
from mbus_ports.state import load_state, save_state, snapshot, apply_state, state_baud
from tests.hostutil import micropython_exe

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_missing_file_is_empty(tmp_path):
    assert load_state(str(tmp_path / "nope.json")) == {}


def test_corrupt_file_warns_once_and_is_empty(tmp_path):
    p = tmp_path / "s.json"
    for text in ("{garbage", "", "[1, 2]", "\xff\xfe"):
        p.write_text(text, encoding="latin-1")
        warnings = []
        assert load_state(str(p), warn=warnings.append) == {}
        assert len(warnings) == 1 and str(p) in warnings[0]


def test_roundtrip_and_apply(tmp_path):
    p = str(tmp_path / "s.json")
    meters = [Meter(address=3), Meter(address=4, id=11111111)]
    meters[0].address = 9
    meters[1].id = 22222222
    save_state(p, snapshot(meters, [12345678, 11111111], 9600))
    assert not os.path.exists(p + ".tmp")
    st = load_state(p)
    fresh = [Meter(address=3), Meter(address=4, id=11111111)]
    assert apply_state(st, fresh) == 2
    assert fresh[0].address == 9 and fresh[1].id == 22222222
    assert state_baud(st, (2400, 9600)) == 9600
    assert state_baud({"baud": 1234}, (2400, 9600)) == 0


def test_apply_skips_foreign_or_bad_entries(tmp_path):
    warnings = []
    st = {"meters": {"0": {"configured_id": 99999999, "address": 7},
                     "5": {"address": 8}, "x": {}, "1": {"address": 300}}}
    meters = [Meter(address=3), Meter(address=4)]
    assert apply_state(st, meters, warn=warnings.append) == 0
    assert [m.address for m in meters] == [3, 4] and len(warnings) == 4
    assert apply_state({"meters": "junk"}, meters) == 0
    assert apply_state([], meters) == 0


def test_save_replaces_atomically(tmp_path):
    p = str(tmp_path / "s.json")
    save_state(p, {"a": 1})
    save_state(p, {"a": 2})
    with open(p) as f:
        assert json.load(f) == {"a": 2}
    assert sorted(os.listdir(str(tmp_path))) == ["s.json"]


def test_reset_between_remove_and_rename_keeps_the_new_state(tmp_path):
    """On FAT the old file is removed before the new one is renamed into place: a reset
    in that moment leaves only the complete .tmp file, and that is what loads."""
    p = str(tmp_path / "s.json")
    with open(p + ".tmp", "w") as f:
        f.write('{"baud": 9600}')
    assert load_state(p) == {"baud": 9600}
    with open(p, "w") as f:   # with the real file present, a stray .tmp is ignored
        f.write('{"baud": 2400}')
    assert load_state(p) == {"baud": 2400}


def test_half_written_tmp_alone_is_a_warning_not_a_crash(tmp_path):
    p = str(tmp_path / "s.json")
    with open(p + ".tmp", "w") as f:
        f.write('{"baud": 96')
    warnings = []
    assert load_state(p, warnings.append) == {} and len(warnings) == 1


UPY_SCRIPT = r"""
import sys
sys.path.insert(0, ROOT + "/tests")
import upy_run  # the source tree on the path, ports/ as mbus_ports
from mbus_ports.state import load_state, save_state, snapshot, apply_state
from mbus_core.meter import Meter
p = TMP + "/s.json"
assert load_state(p) == {}
m = [Meter(address=3)]
m[0].address = 9
save_state(p, snapshot(m, [12345678], 2400))
save_state(p, snapshot(m, [12345678], 9600))
fresh = [Meter(address=3)]
st = load_state(p)
assert apply_state(st, fresh) == 1 and fresh[0].address == 9 and st["baud"] == 9600
f = open(p, "w")
f.write("{bad")
f.close()
w = []
assert load_state(p, w.append) == {} and len(w) == 1
from mbus_ports.config import load_meters
from mbus_core.codec.model import ConfigError
f = open(TMP + "/m.json", "w")
f.write('{"address": 5, "id": 11112222, "medium": "water"}')
f.close()
ms = load_meters(TMP + "/m.json")
assert len(ms) == 1 and ms[0].address == 5 and ms[0].id == 11112222
f = open(TMP + "/bad.json", "w")
f.write('{"address": ')
f.close()
try:
    load_meters(TMP + "/bad.json")
    assert False
except ConfigError as e:
    assert str(e).startswith(TMP + "/bad.json: bad JSON")
import os
os.stat(p + ".corrupt")   # load_state kept the corrupt file beside it: p is gone
f = open(p + ".tmp", "w")   # a reset between removing the old file and the rename (FAT)
f.write('{"baud": 4800}')
f.close()
assert load_state(p) == {"baud": 4800}
print("upy-state-ok")
"""


def test_state_and_config_on_micropython(tmp_path):
    upy = micropython_exe()
    script = tmp_path / "t.py"
    script.write_text("ROOT = %r\nTMP = %r\n" % (ROOT, str(tmp_path)) + UPY_SCRIPT)
    out = subprocess.run([upy, str(script)], capture_output=True, text=True, timeout=60)
    assert "upy-state-ok" in out.stdout, out.stdout + out.stderr


def test_settings_are_saved_after_the_reply_has_gone_out(tmp_path):
    """A master's set-address is acknowledged first; the state file (two fsyncs, slow on
    an SD card) is written afterwards, so the E5 stays inside the reply window."""
    from mbus_core.bus import Bus
    from mbus_ports.host import StateKeeper, demo_meter
    from mbus_ports.line import LineServer

    path = str(tmp_path / "s.json")
    meter = demo_meter()
    keeper = StateKeeper(path, [meter], [meter.id])
    keeper.save()
    bus = Bus([meter])
    bus.on_change = keeper.on_change
    seen = []

    class Port:
        def write(self, data):   # what the file says when the E5 goes out
            seen.append((bytes(data), load_state(path)["meters"]["0"]["address"]))

        def flush(self):
            pass

    line = LineServer(bus, Port(), reply_delay_ms=0)
    line.after_reply = keeper.flush
    request = bytes.fromhex("680606685303510 17A07 2916".replace(" ", ""))
    line.receive(bytearray(request), len(request))
    assert seen == [(b"\xe5", 3)]
    assert load_state(path)["meters"]["0"]["address"] == 7 and keeper.saves == 2


def test_after_a_reply_only_the_meter_that_answered_prepares_its_ciphers():
    # mode 7: the next telegram's ciphers and the counter bound are the answering meter's
    # business; the others sent nothing (a bus of 250 paid for all of them every request)
    from mbus_core.bus import Bus
    from mbus_ports.host import StateKeeper, demo_meter

    class Sec:
        def __init__(self):
            self.prepared = self.reserved = 0

        def prepare(self, meter):
            self.prepared += 1

        def reserve_early(self):
            self.reserved += 1

    meters = [demo_meter(address=1), demo_meter(address=2, ident=22222222)]
    bus = Bus(meters)
    keeper = StateKeeper(None, meters, [m.id for m in meters], bus=bus)
    bus.feed(bytes.fromhex("105B025D16"))        # meter 2 answers
    assert bus.reply_len
    for m in meters:
        m.security = Sec()                       # only after_reply looks at it here
    keeper.after_reply()
    assert [(m.security.prepared, m.security.reserved) for m in meters] == [(0, 0), (1, 1)]
    # without a bus (as before): every meter
    StateKeeper(None, meters, [m.id for m in meters]).after_reply()
    assert [m.security.prepared for m in meters] == [1, 2]
