# Compiled meters (mbus_core.codec.compile on the host -> mbus_core.compiled on a board):
# the meters a board builds from the compiled form serve the telegrams the codec's meters
# serve, byte for byte, over time. Plain functions: pytest and `micropython tests/upy_run.py`.
import json

from mbus_core import compiled as C
from mbus_core.codec import model
from mbus_core.codec.compile import compile_config, compile_meters
from mbus_core.live_record import Record
from mbus_core.notes import wrap_notes
from mbus_testutil import raises
from test_model import load, telegrams

EXAMPLES = ("water-meter.json", "heat-meter.json", "electricity-meter.json", "bus.json")


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def same_over_time(cfg):
    """The codec's meters and the compiled ones, on clocks that run alike: equal
    telegrams at start and after 1 s, 1 min, 1 h, 11 days."""
    c1 = Clock()
    c2 = Clock()
    ref = model.meters_from_config(cfg, c1)
    doc = json.loads(json.dumps(compile_config(cfg)))  # through JSON, as on a board
    got = C.meters_from_compiled(doc, c2)
    assert len(ref) == len(got)
    for t in (0, 1, 60, 3600, 950400):
        c1.t = c2.t = float(t)
        for i in range(len(ref)):
            a = ref[i]
            b = got[i]
            assert (a.address, a.id, a.manufacturer, a.version, a.medium, a.ci, a.status,
                    a.name) == (b.address, b.id, b.manufacturer, b.version, b.medium, b.ci,
                                b.status, b.name)
            assert telegrams(a) == telegrams(b), (i, t)
    return got


def test_examples_serve_the_same_telegrams():
    for name in EXAMPLES:
        same_over_time(load(name))


def test_demo_records_of_each_medium():
    for medium in ("water", "heat", "electricity", "gas"):
        same_over_time({"address": 4, "id": 87654321, "medium": medium})


def test_constants_are_bytes_and_changing_values_records():
    got = same_over_time(load("water-meter.json"))
    recs = got[0].records
    assert isinstance(recs[0], Record) and recs[0].dynamic
    assert recs[0].head == bytes((0x0C, 0x13)) and recs[0].pow10 == 3
    for r in recs[2:]:
        assert isinstance(r, bytes)


def test_every_meter_option():
    cfg = {"meters": [
        {"name": "fix", "address": 9, "id": 11223344, "manufacturer": "ABC", "version": 7,
         "medium": "heat", "ci": "fixed", "status": 4,
         "fixed": {"unit1": 3, "counter1": 1234, "unit2": 5, "counter2": 99}},
        {"address": 10, "id": 5, "ci": "short", "signature": 0x1234, "fabrication": 777,
         "strict_repeat": True, "records": [{"quantity": "volume", "unit": "m3",
                                             "value": 1.5}],
         "alarm": [{"quantity": "error flags", "type": "int8", "value": 3}]},
        {"address": 11, "ci": "none", "records": ["0C1378563412", {
            "quantity": "date", "value": "2024-02-29"}, {
            "quantity": "custom", "unit": "pulses", "value": {"counter": {"start": 2147483640,
                                                                         "rate": 3}}}]},
        {"address": 12, "replay": "68 18 18 68 08 03 72 78 56 34 12 74 52 01 00 00 00 00 "
                                  "00 02 FD 49 D2 04 02 16 C8 01 57 16"}]}
    got = same_over_time(cfg)
    assert got[0].fixed == (3, 1234, 5, 99)
    assert got[1].strict_repeat and got[1].fabrication == 777 and got[1].signature == 0x1234
    assert got[1].alarm == bytes((0x01, 0xFD, 0x17, 0x03))
    assert got[3].replay is not None and got[3].address == 12 and got[3].id == 12345678
    assert got[3].manufacturer == model.M.manufacturer_code("TST")


def test_compiled_counter_wraps_and_says_so_once():
    clock = Clock()
    doc = compile_config({"address": 1, "records": [
        {"quantity": "volume", "unit": "m3", "type": "int8",
         "value": {"counter": {"start": 120, "rate": 1}}}]})
    meters = C.meters_from_compiled(doc, clock)
    clock.t = 10.0
    telegrams(meters[0])
    notes = wrap_notes(meters)
    assert len(notes) == 1 and "meter 1: record 1: the int8 counter" in notes[0], notes
    assert wrap_notes(meters) == ()


def test_counter_readings_resume_on_compiled_meters():
    clock = Clock()
    doc = compile_config(load("water-meter.json"))
    rec = C.meters_from_compiled(doc, clock)[0].records[0]
    clock.t = 1000.0
    assert abs(rec.source.reading() - 124.456) < 1e-6
    rec.source.resume(500)
    assert rec.source.reading() == 500


def test_bad_compiled_files_are_one_line():
    good = compile_config(load("water-meter.json"))
    assert "not a compiled meter file" in raises(C.CompiledError, C.meters_from_compiled,
                                                 {"address": 2})
    bad = json.loads(json.dumps(good))
    bad[C.MARK] = 99
    assert "format 99" in raises(C.CompiledError, C.meters_from_compiled, bad)
    bad = json.loads(json.dumps(good))
    bad["meters"][0]["records"][1] = {"head": "023B", "code": 2}
    msg = raises(C.CompiledError, C.meters_from_compiled, bad)
    assert msg.startswith('meter 1 ("water-1"): record 2: '), msg
    bad = json.loads(json.dumps(good))
    bad["meters"][0]["records"][2] = "4C13XX"
    assert raises(C.CompiledError, C.meters_from_compiled, bad).startswith(
        'meter 1 ("water-1"): record 3: ')
    bad = json.loads(json.dumps(good))
    bad["meters"][0]["address"] = 300
    assert "address" in raises(C.CompiledError, C.meters_from_compiled, bad)
    assert "no meters" in raises(C.CompiledError, C.meters_from_compiled, {C.MARK: 1})
    assert "\n" not in msg


def test_callables_do_not_compile():
    m = model.meters_from_config({"address": 1, "records": []})[0]
    m.records.append(Record(bytes((0x04, 0x13)), 0x4, lambda: 5))
    msg = raises(model.ConfigError, compile_meters, [m])
    assert msg.startswith("meter 1: record 1: its value comes from a callable"), msg


def test_encrypted_meters_compile_with_their_key():
    # a board serves an encrypted meter encrypted: never in clear
    try:
        from mbus_ports import aes  # noqa: F401 (registers the AES block function)
    except ImportError:
        return
    cfg = {"address": 1, "records": [{"quantity": "volume", "unit": "m3", "value": 12.5}],
           "security": {"mode": 7, "key": "000102030405060708090A0B0C0D0E0F", "counter": 9}}
    host = model.meters_from_config(cfg)[0]
    board = C.meters_from_compiled(compile_meters([host]))[0]
    assert (board.security.mode, board.security.counter) == (7, 9)
    out = []
    for m in (host, board):
        m.refresh()
        buf = bytearray(260)
        n = m.write_telegram(0, buf, 0, 7)
        out.append(bytes(buf[:n]))
    assert out[0] == out[1] and out[0][0] == 0x90


def test_stamp_is_adler32_in_chunks():
    s = C.Stamp()
    assert s.value() == [0, 1]
    s.add(b"Wikipedia")
    assert s.value() == [9, 0x11E60398]
    t = C.Stamp()
    data = bytes(range(256)) * 300
    t.add(data[:1000])
    t.add(data[1000:])
    u = C.Stamp()
    u.add(data)
    assert t.value() == u.value() and t.value()[0] == len(data)
