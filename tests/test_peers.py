"""Every telegram the core produces decodes completely, with the same values, in two
decoders we did not write: pymeterbus (import name meterbus) and pymbusparser."""
import json
from decimal import Decimal

import meterbus
import pymbusparser
import pytest

from mbus_core.bus import Bus
from mbus_core.meter import Meter
from mbus_core.slave import Slave

from tests.core.mbus_testutil import h, demo_meter, many_records_meter, replies


def read_all_telegrams(meter):
    """Walk a whole readout with toggled FCB, as a master does; return the frames."""
    bus = Bus([meter])
    a = meter.address
    replies(bus, bytes((0x10, 0x40, a, (0x40 + a) & 0xFF, 0x16)))
    out = []
    fcb = 0x20
    for _ in range(meter_count(meter)):
        c = 0x5B | fcb
        out += replies(bus, bytes((0x10, c, a, (c + a) & 0xFF, 0x16)))
        fcb ^= 0x20
    return out


def meter_count(meter):
    meter.refresh()
    return meter.telegram_count()


def decode_both(frame):
    mine_rust = pymbusparser.parse(frame)
    assert mine_rust["decode_state"] == "complete", mine_rust.get("diagnostics")
    rust_values = [Decimal(r["value"]["value"]) for r in mine_rust["records"]
                   if r["value"]["kind"] == "decimal"]
    if frame[6] != 0x72:  # pymeterbus decodes only the CI 72 long header
        return mine_rust, None, rust_values, None
    py = meterbus.load(frame)
    py_values = [Decimal(str(r.value)) for r in py.records if r.value is not None
                 and not isinstance(r.value, str)]
    return mine_rust, py, rust_values, py_values


def same_numbers(a, b):
    """pymeterbus computes with binary floats: equal to 12 significant digits."""
    return len(a) == len(b) and all(float(x) == pytest.approx(float(y), rel=1e-12)
                                    for x, y in zip(a, b))


METERS = {
    "trace meter": lambda: demo_meter(),
    # the signature's high byte holds the security mode: 0 means cleartext
    "status and signature": lambda: demo_meter(status=0x04, signature=0x0003),
    "many records": lambda: many_records_meter(60),
    "short header": lambda: demo_meter(ci=0x7A),
    "other identity": lambda: Meter(address=250, id=99999999, manufacturer="ZZZ",
                                    version=255, medium=7,
                                    records=[h("0C 13 78 56 34 12"), h("04 6D 19 0F 8A 17")]),
}


@pytest.mark.parametrize("name", sorted(METERS))
def test_both_decoders_agree_on_every_telegram(name):
    meter = METERS[name]()
    frames = read_all_telegrams(meter)
    assert frames
    for frame in frames:
        rust, py, rust_values, py_values = decode_both(frame)
        if meter.ci != 0x72:
            assert py is None
            continue
        assert same_numbers(rust_values, py_values)
        if meter.ci == 0x72:
            ident = rust["meter"]["identity"]
            assert ident["id"] == "%08d" % meter.id
            assert ident["version"] == meter.version
            assert ident["device_type_code"] == meter.medium
            hdr = json.loads(py.to_JSON())["body"]["header"]
            assert hdr["manufacturer"] == ident["manufacturer_code"]


def test_values_are_the_ones_served():
    frames = read_all_telegrams(demo_meter())
    rust, py, rust_values, py_values = decode_both(frames[0])
    assert rust_values == [1234, 456]
    assert [r["unit"] for r in rust["records"]] == ["V", "m3"]
    assert [r.unit for r in py.records] == ["V", "m^3"]


def test_multi_telegram_records_all_arrive_in_order():
    meter = many_records_meter(60)
    values = []
    for frame in read_all_telegrams(meter):
        values += decode_both(frame)[2]
    assert values == [Decimal(1000 + i) / 1000 for i in range(60)]  # VIF 13: litres in m3


def test_error_reply_decodes_as_error():
    bus = Bus([Slave(demo_meter(), read_only=True)])
    replies(bus, h("68 06 06 68 53 03 51 01 7A 07 29 16"))
    frame = replies(bus, h("10 5B 03 5E 16"))[0]
    assert frame == h("68 04 04 68 08 03 70 00 7B 16")
    rust = pymbusparser.parse(frame)
    assert "70" in json.dumps(rust).upper() or rust["decode_state"] != "complete"
