# Record codec tests: plain functions, run by pytest and by `micropython tests/upy_run.py`.
from mbus_core.codec import datatypes as dt
from mbus_core.codec import records as R
from mbus_testutil import raises
from mbus_core.codec import vif as vt


def h(text):
    return R.parse_hex(text)


def one(data):
    recs = R.decode_records(data)
    assert len(recs) == 1
    return recs[0]


def test_parse_hex():
    assert h("04 13 2A") == b"\x04\x13\x2a"
    assert h("04132a") == b"\x04\x13\x2a"
    assert h("") == b""
    assert "odd" in raises(ValueError, h, "041")
    assert "bad character" in raises(ValueError, h, "04 1G")


def test_int_types_round_trip():
    for n, vals in ((1, (0, 127, -128)), (2, (-1, 32767, -32768)), (3, (8388607, -8388608, -2)),
                    (4, (2147483647, -2147483648)), (6, (-1, 140737488355327, -140737488355328)),
                    (8, (9223372036854775807, -9223372036854775808, -5))):
        for v in vals:
            assert dt.int_decode(dt.int_encode(v, n)) == v
    assert dt.int_encode(-2, 3) == b"\xfe\xff\xff"
    raises(ValueError, dt.int_encode, 128, 1)


def test_bcd_round_trip_and_negative():
    assert dt.bcd_encode(12345678, 4) == b"\x78\x56\x34\x12"
    assert dt.bcd_decode(b"\x78\x56\x34\x12") == 12345678
    assert dt.bcd_encode(-123, 2) == b"\x23\xf1"
    assert dt.bcd_decode(b"\x23\xf1") == -123
    assert dt.bcd_valid(b"\x23\xf1") and not dt.bcd_valid(b"\x2a\x01")
    for n in (1, 2, 3, 4, 6):
        top = 10 ** (2 * n) - 1
        assert dt.bcd_decode(dt.bcd_encode(top, n)) == top
        assert dt.bcd_decode(dt.bcd_encode(-(10 ** (2 * n - 1) - 1), n)) == -(10 ** (2 * n - 1) - 1)
    raises(ValueError, dt.bcd_encode, 100, 1)
    raises(ValueError, dt.bcd_encode, -10, 1)


def test_real32():
    assert dt.real_decode(dt.real_encode(21.5)) == 21.5


def test_dates():
    g = dt.date_g_encode("2023-12-31")
    assert dt.date_g_decode(g) == "2023-12-31"
    f = dt.datetime_f_encode("2012-07-10T15:25")
    assert f == b"\x19\x0f\x8a\x17"  # as in the EDC fixture
    assert dt.datetime_f_decode(f) == "2012-07-10T15:25:00Z"
    i = dt.datetime_i_encode((2021, 2, 8, 21, 12, 33))
    assert dt.datetime_i_decode(i) == "2021-02-08T21:12:33Z"
    assert dt.time_j_decode(dt.time_j_encode("12:34:56")) == "12:34:56"
    raises(ValueError, dt.date_g_encode, "2023-13-01")
    raises(ValueError, dt.date_g_encode, "31.12.2023")


def test_text_reversed():
    assert dt.text_encode("ABC") == b"\x03CBA"
    assert dt.text_decode(b"CBA") == "ABC"


def test_dib_storage_tariff_subunit():
    for s, t, u in ((0, 0, 0), (1, 0, 0), (2, 0, 0), (15, 3, 1), (1234, 5, 2), (2 ** 41 - 1, 2 ** 20 - 1, 1023)):
        dib = R.build_dib(0x4, 1, s, t, u)
        assert len(dib) <= 11
        assert R.dib_fields(dib[0], dib[1:]) == (1, s, t, u)
    assert R.build_dib(0x4, 0, 0, 1, 0) == b"\x84\x10"
    assert R.build_dib(0xC, 0, 1, 0, 0) == b"\x4c"
    assert "10 DIFEs" in raises(ValueError, R.build_dib, 0x4, 0, 2 ** 41, 0, 0)


def test_named_energy_best_exponent():
    r = R.make_record("energy", "kWh", 12.345)
    assert r.encode() == h("04 03 39 30 00 00")  # 12345 Wh
    r = R.make_record("energy", "kWh", 12345, type="bcd8")
    assert r.encode() == h("0C 06 45 23 01 00")  # kWh as written
    r = R.make_record("energy", "MWh", 12, type="int16")
    assert r.encode() == h("02 07 B0 04")  # 1200 x 10 kWh
    r = R.make_record("energy", "GJ", 2, type="int8")
    d = one(r.encode())
    assert d.quantity == "Energy" and d.unit == "J" and d.value == 2000000000


def test_named_quantities_decode_back():
    cases = (("volume", "l", 1234, "Volume", 1.234),
             ("volume", "m3", 0.5, "Volume", 0.5),
             ("mass", "t", 2, "Mass", 2000),
             ("power", "kW", 1.5, "Power", 1500),
             ("volume flow", "l/h", 120, "Volume flow", 0.12),
             ("mass flow", "kg/h", 3, "Mass flow", 3),
             ("flow temperature", "C", 65.25, "Flow temperature", 65.25),
             ("return temperature", "C", 40, "Return temperature", 40),
             ("temperature difference", "K", 25.25, "Temperature difference", 25.25),
             ("external temperature", "C", -5.5, "External temperature", -5.5),
             ("pressure", "bar", 1.5, "Pressure", 1.5),
             ("voltage", "V", 230.5, "Voltage", 230.5),
             ("current", "A", 0.125, "Current", 0.125),
             ("on time", "h", 10, "On time", 36000),
             ("operating time", "d", 2, "Operating time", 172800),
             ("averaging duration", "min", 15, "Averaging Duration", 900))
    for q, u, v, quantity, back in cases:
        d = one(R.make_record(q, u, v).encode())
        assert d.quantity == quantity, (q, d.quantity)
        assert abs(d.value - back) < 1e-9 * (1 + abs(back)), (q, u, v, d.value)


def test_types_and_functions():
    r = R.make_record("volume", "m3", -1.5, type="bcd8", function="minimum", storage=3,
                      tariff=2, subunit=1)
    d = one(r.encode())
    assert d.function == "Minimum value"
    assert (d.storage, d.tariff, d.subunit) == (3, 2, 1)
    assert d.value == -1.5 and d.type_name() == "bcd8"
    for t in ("int8", "int16", "int24", "int32", "int48", "int64", "bcd2", "bcd4", "bcd6",
              "bcd12", "real32"):
        d = one(R.make_record("volume", "m3", 7, type=t).encode())
        assert d.type_name() == t and d.value == 7, t
    d = one(R.make_record("volume", "m3", 0, type="none").encode())
    assert d.value is None


def test_dates_and_text_records():
    d = one(R.make_record("date", value="2023-12-31").encode())
    assert d.quantity == "Time point (date)" and d.value == "2023-12-31"
    d = one(R.make_record("datetime", value="2024-05-01T12:30").encode())
    assert d.value == "2024-05-01T12:30:00Z" and d.type_name() == "int32"
    d = one(R.make_record("datetime", value="2024-05-01T12:30:15", type="datetime6").encode())
    assert d.value == "2024-05-01T12:30:15Z"
    d = one(R.make_record("text", value="ABC").encode())
    assert d.value == "ABC" and d.quantity == "Model / Version"
    d = one(R.make_record("fabrication number", value=90001234).encode())
    assert d.quantity == "Fabrication No" and d.value == 90001234


def test_plain_text_unit_and_vife():
    r = R.make_record("custom", "pulses", 42, type="int16")
    assert r.encode() == h("02 7C 06") + b"seslup" + h("2A 00")
    d = one(r.encode())
    assert d.quantity == "pulses" and d.unit == "-" and d.value == 42
    # a per-hour VIFE on a named quantity sets the extension bit
    r = R.make_record("volume", "m3", 5, type="int8", vife="22")
    assert r.encode() == h("01 96 22 05")
    d = one(r.encode())
    assert d.vife_texts() == ["per hour"]


def test_raw_dif_vif():
    assert R.make_record(dif="04", vif="13", value=456).encode() == h("04 13 C8 01 00 00")
    assert R.make_record(dif="02", vif="FD 17", value=5).encode() == h("02 FD 17 05 00")
    d = one(R.make_record(vif="FD 17", value=5, type="int8").encode())
    assert d.quantity == "Error flags"
    assert R.make_record(dif="0F", value="01 02").encode() == h("0F 01 02")
    assert R.make_record(dif="1F", value="").encode() == h("1F")
    assert R.make_record(dif="2F").encode() == h("2F")
    assert R.make_record(dif="02", vif="6C", value="2023-12-31").encode() == h("02 6C FF 2C")
    raises(ValueError, R.make_record, dif="04", value=1)


def test_config_value_errors():
    assert "unknown unit 'kWhh'" in raises(ValueError, R.make_record, "energy", "kWhh", 1)
    assert "kWh" in raises(ValueError, R.make_record, "energy", "kWhh", 1)
    assert "unknown quantity" in raises(ValueError, R.make_record, "enrgy", "kWh", 1)
    raises(ValueError, R.make_record, "volume", "m3", 300.5, type="int8")
    raises(ValueError, R.make_record, "volume", "m3", 100.5, type="bcd2")
    raises(ValueError, R.make_record, "energy", "kWh", 1, type="int12")
    assert "function" in raises(ValueError, R.make_record, "energy", "kWh", 1, function="avg")


def test_dynamic_values():
    box = [1.5]
    r = R.make_record("volume", "m3", lambda: box[0], resolution=0.001)
    assert r.dynamic
    assert one(r.encode()).value == 1.5
    box[0] = 2.25
    assert one(r.encode()).value == 2.25
    assert not R.make_record("volume", "m3", 3).dynamic


def test_special_functions_and_filler_decode():
    recs = R.decode_records(h("2F 2F 01 13 05 0F 01 02 03"))
    assert [r.special for r in recs] == ["filler", "filler", None, "manufacturer"]
    assert recs[3].raw == "01 02 03"
    recs = R.decode_records(h("01 13 05 1F"))
    assert recs[1].special == "more" and recs[1].function == "More records follow"


def test_decode_errors():
    for bad in ("84", "04", "04 13 01", "0C 13 01 02 03", "01 FC 05 41", "01 93", "0D 13 05 41"):
        raises(R.DecodeError, R.decode_records, h(bad))
    raises(R.DecodeError, R.decode_records, h("84 " + "80 " * 10 + "00 13 00 00 00 00"))
    raises(R.DecodeError, R.decode_records, h("01 93 " + "80 " * 10 + "00 01"))


def test_lvar_kinds():
    d = one(h("0D FD 0C C2 34 12"))
    assert d.raw == 1234 and d.type_name() == "lvar-bcd"
    d = one(h("0D FD 0C D1 07"))
    assert d.raw == -7
    d = one(h("0D FD 0C E2 AB CD"))
    assert d.raw == "AB CD"
    r = R.make_record(vif="FD 0C", type="binary", value="AB CD")
    assert r.encode() == h("0D FD 0C E2 AB CD")


def test_user_data_headers():
    recs = h("04 13 01 00 00 00")
    d = R.decode_user_data(h("72 78 56 34 12 93 15 01 07 05 00 00 00") + recs)
    hd = d["header"]
    assert hd["id"] == "12345678" and hd["manufacturer"] == "ELS" and hd["medium_name"] == "Water"
    assert hd["access"] == 5 and d["records"][0].value == 0.001
    d = R.decode_user_data(h("7A 05 00 00 00") + recs)
    assert d["header"]["access"] == 5 and len(d["records"]) == 1
    d = R.decode_user_data(h("78") + recs)
    assert d["header"] is None and len(d["records"]) == 1
    d = R.decode_user_data(h("70 08"))
    assert d["error_name"] == "Application busy"
    raises(R.DecodeError, R.decode_user_data, h("72 01 02"))
    raises(R.DecodeError, R.decode_user_data, h("51 01"))


def test_decoded_round_trip():
    data = (R.make_record("energy", "kWh", 12.345).encode()
            + R.make_record("datetime", value="2024-05-01T12:30").encode()
            + R.make_record("text", value="XY").encode()
            + R.make_record("custom", "pulses", 42, type="bcd4", storage=5, tariff=1).encode()
            + h("2F 0F 01 02"))
    again = b"".join(r.to_record().encode() for r in R.decode_records(data))
    assert again == data


def test_media():
    assert vt.medium_code("heat") == 4 and vt.medium_code("Warm Water") == 6
    assert vt.medium_code("electricity") == 2 and vt.medium_code("nonsense") == -1
    assert vt.medium_name(7) == "Water"


def test_one_vif_table_both_ways():
    """Every quantity an author may name has its rows in the VIF table, and a record built
    from it in its default unit decodes to that quantity (time in seconds, as libmbus)."""
    for names, quantity, dtype in vt.QUANTITIES:
        kind, info = vt.find_quantity(names[0])
        assert (kind == "plain") == (dtype is not None), names
        if kind == "plain":
            continue
        unit = vt.default_unit(kind, info)
        d = R.decode_records(R.make_record(names[0], unit, 1).encode())[0]
        want = dict(vt.SECONDS)[unit] if kind == "timed" else 1
        assert d.quantity == quantity and d.value == want, (names, unit, d.quantity, d.value)
    assert R.make_record("volume", "l", 5).encode() == h("04 13 05 00 00 00")
    assert R.make_record("on time", "d", 2).encode() == h("04 23 02 00 00 00")
