# Meter-file validation (issue 16): every mistake is one ConfigError line naming meter and
# record, never a TypeError/OverflowError; counters wrap like real registers.
# Plain functions, run by pytest and by `micropython tests/upy_run.py`.
from mbus_core.codec import model
from mbus_core.codec import records as R
from mbus_core import notes as RC
from mbus_testutil import raises

WHERE = 'meter 1 ("m1"): record 2: '


def meter(rec, **keys):
    """A meter whose second record is `rec` (the first one is fine)."""
    cfg = {"name": "m1", "records": [{"quantity": "volume", "unit": "m3", "value": 1}, rec]}
    for k in keys:
        cfg[k] = keys[k]
    return model.meter_from_config(cfg)


def bad(rec, words):
    """`rec` as record 2 gives one ConfigError line naming meter and record, with words."""
    msg = raises(model.ConfigError, meter, rec)
    assert msg.startswith(WHERE), msg
    assert words in msg, (words, msg)
    assert "\n" not in msg and len(msg) < 200, msg
    return msg


def volume(value, **keys):
    rec = {"quantity": "volume", "unit": "m3", "value": value}
    for k in keys:
        rec[k] = keys[k]
    return rec


def records_of(m):
    m.refresh()
    buf = bytearray(300)
    n = m.write_telegram(0, buf, 0, 0)
    return R.decode_user_data(bytes(buf[:n]))["records"]


def test_value_of_the_wrong_kind_is_one_line():
    bad(volume([1]), "a list")
    bad(volume("lots"), "'lots' is not a number")
    bad(volume(None), "null")
    bad(volume({"counter": {"start": "x"}}), "start must be a number")
    bad({"quantity": "date", "value": 20231231}, "date")


def test_booleans_are_not_values():
    bad(volume(True), "true")
    bad(volume(False), "false")
    bad(volume(1, resolution=True), "resolution")


def test_value_is_required_unless_the_record_has_no_data():
    bad({"quantity": "volume", "unit": "m3"}, "needs a value")
    bad({"dif": "04", "vif": "13"}, "needs a value")
    meter({"quantity": "volume", "unit": "m3", "type": "none"})
    meter({"dif": "2F"})
    meter({"dif": "00", "vif": "13"})
    for medium in (0, 2, 4, 7):  # the demo records stay valid
        for rc in model.demo_records(medium):
            model.record_from_config(rc)


def test_real32_out_of_range_is_a_config_error():
    bad(volume(1e39, type="real32"), "real32")
    bad(volume(-1e39, type="real32"), "real32")
    bad(volume({"counter": {"start": 3e38, "rate": 1e38}}, type="real32"), "real32")
    assert records_of(meter(volume(3e38, type="real32")))[1].raw > 2.9e38


def test_impossible_calendar_dates():
    for text in ("2023-02-30", "2023-02-29", "2023-04-31", "1999-02-29"):
        bad({"quantity": "date", "value": text}, "no such date")
    bad({"quantity": "datetime", "value": "2023-02-30T12:00"}, "no such date")
    bad({"quantity": "datetime", "value": "2023-06-31T12:00:01", "type": "datetime6"},
        "no such date")
    bad({"dif": "02", "vif": "6C", "value": "2023-11-31"}, "no such date")
    bad({"quantity": "daylight saving", "value": "02-30 02:00 10-27 +1h"}, "02-30")
    got = records_of(meter({"quantity": "date", "value": "2024-02-29"}))
    assert got[1].value == "2024-02-29"
    meter({"quantity": "datetime", "value": "2000-02-29T23:59"})
    meter({"quantity": "daylight saving", "value": "02-29 02:00 10-27 +1h"})


def test_more_than_ten_dife_or_vife_is_rejected():
    ten = " 80" * 9 + " 00"  # 10 extension bytes
    for rec in ({"dif": "84" + ten, "vif": "13", "value": 1},
                {"dif": "04", "vif": "93" + ten, "value": 1},
                {"dif": "04", "vif": "FD" + " 97" * 9 + " 17", "value": 1},
                {"quantity": "volume", "unit": "m3", "vife": "80" * 9 + "22", "value": 1}):
        r = model.record_from_config(rec)
        assert len(R.decode_records(r.encode())) == 1  # what we send, we can read
    bad({"dif": "84 80" + ten, "vif": "13", "value": 1}, "10 DIFEs")
    bad({"dif": "04", "vif": "93 80" + ten, "value": 1}, "10 VIFEs")
    bad({"quantity": "volume", "unit": "m3", "vife": "80" * 10 + "22", "value": 1},
        "10 VIFEs")
    bad({"dif": "04", "vif": "93", "vife": "80" * 10 + "22", "value": 1}, "10 VIFEs")
    # a chain cut short or going on after its end is not a record the decoder can read
    bad({"dif": "84", "vif": "13", "value": 1}, "extension bit")
    bad({"dif": "04 10", "vif": "13", "value": 1}, "extension bit")
    bad({"dif": "04", "vif": "93", "value": 1}, "extension bit")
    bad({"dif": "04", "vif": "13 22", "value": 1}, "extension bit")
    # extra VIFEs are chained for the author, as the one after the VIF always was
    for rec in (volume(1, vife="22 3B"), {"dif": "04", "vif": "13", "vife": "22 3B",
                                           "value": 1}):
        d = R.decode_records(model.record_from_config(rec).encode())[0]
        assert d.vife == b"\xa2\x3b", d.vife


def test_binary_type_is_an_lvar_of_bytes():
    for rec in ({"quantity": "custom", "unit": "flags", "type": "binary", "value": "01 02"},
                {"vif": "FD 0E", "type": "binary", "value": "01 02"},
                {"quantity": "error flags", "type": "binary", "value": "0102"},
                {"dif": "0D", "vif": "FD 0E", "type": "binary", "value": "01 02"}):
        r = model.record_from_config(rec)
        enc = r.encode()
        assert enc[len(r.head)] == 0xE2, enc  # LVAR E0 + 2: two bytes of binary data
        d = R.decode_records(enc)[0]
        assert d.raw == "01 02" and d.type_name() == "lvar-bin", (d.raw, d.type_name())
    for n, lvar in ((0, 0xE0), (15, 0xEF), (16, 0xF0), (20, 0xF1), (56, 0xFA)):
        r = model.record_from_config({"vif": "7F", "type": "binary", "value": "AB" * n})
        enc = r.encode()
        assert enc[2] == lvar and len(enc) == 3 + n, (n, enc)
        assert len(R.decode_records(enc)[0].data) == n
    bad({"vif": "7F", "type": "binary", "value": "AB" * 17}, "binary")
    bad({"vif": "7F", "type": "binary", "value": "AB" * 60}, "binary")
    bad({"vif": "7F", "type": "binary", "value": "xyz"}, "hex")
    bad({"quantity": "volume", "unit": "m3", "type": "binary", "value": "01"}, "binary")


def test_other_keys_of_the_wrong_kind():
    bad(volume(1, unit=[1]), "unit must be")
    bad(volume(1, function=[1]), "function")
    bad({"dif": [4], "vif": "13", "value": 1}, "dif must be")
    bad({"quantity": "custom", "unit": {"a": 1}, "value": 1}, "unit must be")
    msg = raises(model.ConfigError, model.meter_from_config, {"name": ["x"]})
    assert msg.startswith("meter 1: name"), msg
    msg = raises(model.ConfigError, model.meter_from_config, {"replay": [1, 2]})
    assert msg.startswith("meter 1: replay"), msg
    for cfg in ({"address": "\u0663"}, {"id": "\uff11\uff12"}, {"version": "\uff11"}):
        msg = raises(model.ConfigError, model.meter_from_config, cfg)
        assert msg.startswith("meter 1: "), msg


def _counter(kind, start, rate):
    return model.meter_from_config({"name": "m1", "records": [
        {"quantity": "volume", "unit": "m3", "value": 1},
        {"quantity": "custom", "unit": "pulses", "type": kind,
         "value": {"counter": {"start": start, "rate": rate}}}]})


def _readouts(m, n):
    out = []
    while len(out) < n:
        m.invalidate()
        recs = records_of(m)
        assert len(recs) == 2 and not m.status & 0x10, (recs, m.status)
        out.append(recs[1].raw)
    return out


def test_counters_wrap_like_registers_and_say_so_once():
    m = _counter("int8", 120, 3)
    rec = m.records[1]
    assert not RC.wrap_notes([m])
    assert _readouts(m, 4) == [120, 123, 126, 1]  # 129 wraps at 127 to 0: 1
    assert m.errors == 0 and rec.wrapped
    notes = RC.wrap_notes([m])
    assert len(notes) == 1 and notes[0].startswith(WHERE), notes
    assert "int8" in notes[0] and "wrapped" in notes[0], notes
    assert _readouts(m, 2) == [4, 7]
    assert not RC.wrap_notes([m])  # once
    m = _counter("bcd8", 99999998, 1)
    assert _readouts(m, 4) == [99999998, 99999999, 0, 1]
    m = _counter("bcd2", -7, -1)
    assert _readouts(m, 4) == [-7, -8, -9, 0]  # one BCD digit and the sign nibble
    m = _counter("int16", -32767, -1)
    assert _readouts(m, 3) == [-32767, -32768, 0]
    m = _counter("int8", 10, 1)
    _readouts(m, 3)
    assert not m.records[1].wrapped


def test_values_that_do_not_fit_still_fail_at_load():
    bad({"quantity": "custom", "unit": "p", "type": "int8", "value": 300}, "does not fit")
    bad({"quantity": "custom", "unit": "p", "type": "bcd2", "value": 100}, "BCD")
    bad({"quantity": "custom", "unit": "p", "type": "int8",
         "value": {"counter": {"start": 200, "rate": 1}}}, "int8")
