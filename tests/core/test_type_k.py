# Data type K (daylight saving, VIF FD 72): decode, encode, round trip. Plain functions,
# run by pytest and by `micropython tests/upy_run.py`.
#
# No published telegram carries an FD 72 record, so the examples are built from the layout
# of EN 13757-3 Annex A type K as libmburs (src/parse/types/date.rs, TypeKDST) and the
# EnergyICT M-Bus code (DataRecordTypeK) read it; 32 bits, little endian:
#   B0: [0..4] hour DST begins                 [5..7] GMT deviation, bits 0..2
#   B1: [0..4] day DST begins   [5..6] GMT deviation, bits 3..4   [7] DST enabled
#   B2: [0..4] day DST ends     [5..6] DST deviation (hours)      [7] its sign, 1 = plus
#   B3: [0..3] month DST begins [4..7] month DST ends
from mbus_core.codec import datatypes as dt
from mbus_core.codec import records as R
from mbus_core.codec import model
from mbus_testutil import raises, h

QUANTITY = "Daylight saving (beginning, ending, deviation)"

# EU summer time 2024 in the UK (GMT+0): 31 March 01:00 to 27 October, one hour ahead.
#   B0 = 01                  hour 1, GMT deviation 0
#   B1 = 9F = 1 00 11111     enabled, day 31
#   B2 = BB = 1 01 11011     plus, 1 hour, day 27
#   B3 = A3 = 1010 0011      ends in month 10, begins in month 3
UK_2024 = "04 FD 72 01 9F BB A3"
UK_VALUE = {"begin": "03-31 01:00", "end": "10-27", "deviation_h": 1, "gmt_deviation_h": 0,
            "enabled": True}

# The same in Central Europe (GMT+1): the switch is at 02:00 local time, and the GMT
# deviation 1 goes into B0 bits 5..7: B0 = 22 = 001 00010.
CET_2024 = "04 FD 72 22 9F BB A3"
CET_TEXT = "03-31 02:00 10-27 +1h gmt+1"


def one(data):
    recs = R.decode_records(data)
    assert len(recs) == 1
    return recs[0]


def test_k_decodes_the_uk_2024_example():
    d = one(h(UK_2024))
    assert d.quantity == QUANTITY and d.unit == ""
    assert d.data == h("01 9F BB A3")
    assert d.value == UK_VALUE and d.raw == UK_VALUE
    assert d.encoded() == h(UK_2024)


def test_k_gmt_deviation_is_split_over_b0_and_b1():
    assert one(h(CET_2024)).value["gmt_deviation_h"] == 1
    # 23 = 10 111: the low bits 111 in B0 bits 5..7 (E0), the high bits 10 in B1 bits 5..6
    k = dt.daylight_k_decode(h("E1 DF BB A3"))
    assert k["gmt_deviation_h"] == 23 and k["begin"] == "03-31 01:00" and k["enabled"]
    assert dt.daylight_k_encode(k) == h("E1 DF BB A3")


def test_k_negative_deviation_and_disabled():
    # B1 = 1F: not enabled; B2 = 5B = 0 10 11011: minus, 2 hours, day 27
    k = dt.daylight_k_decode(h("01 1F 5B A3"))
    assert k["deviation_h"] == -2 and not k["enabled"]
    assert dt.daylight_k_text(k) == "03-31 01:00 10-27 -2h off"
    assert dt.daylight_k_encode("03-31 01:00 10-27 -2h off") == h("01 1F 5B A3")


def test_k_meter_file_record_round_trips():
    rc = {"quantity": "daylight saving", "value": CET_TEXT}
    data = model.record_from_config(rc).encode()
    assert data == h(CET_2024)
    d = one(data)
    assert d.quantity == QUANTITY
    assert dt.daylight_k_text(d.value) == CET_TEXT
    # the decoded value encodes to the same bytes again
    assert R.make_record("daylight saving", value=d.value).encode() == data
    rc = {"quantity": "dst", "storage": 1, "value": "03-31 01:00 10-27"}
    d = one(model.record_from_config(rc).encode())
    assert d.head == h("44 FD 72") and d.storage == 1 and d.value == UK_VALUE


def test_k_raw_dif_vif_records():
    assert R.make_record(dif="04", vif="FD 72", value=CET_TEXT).encode() == h(CET_2024)
    assert R.make_record(vif="FD 72", value=UK_VALUE).encode() == h(UK_2024)
    # a number stays the raw 32-bit value, as before
    assert R.make_record(dif="04", vif="FD 72", value=5).encode() == h("04 FD 72 05 00 00 00")


def test_k_record_among_others_keeps_sizes():
    recs = R.decode_records(h(CET_2024 + " 02 FD 17 01 00 04 13 2A 00 00 00"))
    assert [r.quantity for r in recs] == [QUANTITY, "Error flags", "Volume"]
    assert recs[1].value == 1 and recs[2].value == 0.042
    # FD 72 with a data field other than 32 bits: decoded as what the DIF says
    assert one(h("02 FD 72 01 00")).value == 1
    assert one(h("0D FD 72 02 41 42")).value == "BA"
    again = b"".join(r.to_record().encode() for r in R.decode_records(h(UK_2024 + " " + CET_2024)))
    assert again == h(UK_2024 + " " + CET_2024)


def test_k_bad_values():
    for bad in ("03-31 01:00", "13-31 01:00 10-27", "03-31 24:00 10-27", "03-31 01:30 10-27",
                "03-31 01:00 10-32", "03-31 01:00 10-27 +4h", "03-31 01:00 10-27 soon",
                "03-31 01:00 10-27 gmt+32"):
        raises(ValueError, R.make_record, "daylight saving", value=bad)
    assert "unknown daylight saving key" in raises(ValueError, R.make_record,
                                                   "daylight saving", value={"start": 1})
    assert "int32" in raises(ValueError, R.make_record, vif="FD 72", value=CET_TEXT,
                             type="dst", dif="02")
    assert "constant" in raises(ValueError, R.make_record, "daylight saving",
                                value=lambda: CET_TEXT)


def test_k_in_mbus_decode_json():
    try:
        import json
        from tools import decode as D
    except ImportError:  # MicroPython has no argparse: mbus-decode is CPython only
        return
    body = h("08 01 72 78 56 34 12 93 15 01 07 05 00 00 00 " + CET_2024)
    frame = bytes((0x68, len(body), len(body), 0x68)) + body + bytes((sum(body) & 0xFF, 0x16))
    out = json.loads(json.dumps(D.decode_text(dt.hexstr(frame))))
    rec = out["records"][0]
    assert rec["quantity"] == QUANTITY and rec["vif"] == "FD 72" and rec["data"] == "22 9F BB A3"
    assert rec["value"] == {"begin": "03-31 02:00", "end": "10-27", "deviation_h": 1,
                            "gmt_deviation_h": 1, "enabled": True}
