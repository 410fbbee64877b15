# Meter model tests: plain functions, run by pytest and by `micropython tests/upy_run.py`.
import json

from mbus_core.codec import model
from mbus_core.codec import records as R
from mbus_testutil import raises
from mbus_core.meter import Meter

ROOT = __file__.rsplit("/", 3)[0] if __file__.count("/") >= 3 else "."
if __file__.count("/") < 3:
    ROOT = "." if __file__.startswith("tests") else "../.."
EXAMPLES = ROOT + "/examples"


def load(name):
    with open(EXAMPLES + "/" + name) as f:
        return json.load(f)


def telegrams(m):
    """All application data telegrams of a meter (from the CI byte)."""
    m.refresh()
    out = []
    buf = bytearray(300)
    i = 0
    while i < m.telegram_count():
        n = m.write_telegram(i, buf, 0, i)
        out.append(bytes(buf[:n]))
        i += 1
    return out


def records_of(m):
    recs = []
    for app in telegrams(m):
        d = R.decode_user_data(app)
        for r in d["records"]:
            if r.special != "more":
                recs.append(r)
    return recs


def test_examples_build_meters():
    for name in ("heat-meter.json", "water-meter.json", "electricity-meter.json"):
        cfg = load(name)
        m = model.meter_from_config(cfg, clock=lambda: 0)
        assert isinstance(m, Meter)
        assert m.address == cfg["address"]
        recs = records_of(m)
        n = len(cfg["records"]) + (1 if "fabrication" in cfg else 0)
        assert len(recs) == n, (name, len(recs), n)
        hdr = R.decode_user_data(telegrams(m)[0])["header"]
        assert hdr["manufacturer"] == "TST"
        assert int(hdr["id"]) == int(cfg["id"])


def test_bus_example():
    ms = model.meters_from_config(load("bus.json"), clock=lambda: 0)
    assert [m.address for m in ms] == [1, 2, 3, 10]
    assert ms[3].replay is not None
    assert len(records_of(ms[2])) >= 3  # demo set for electricity


def test_heat_meter_values():
    m = model.meter_from_config(load("heat-meter.json"), clock=lambda: 0)
    recs = records_of(m)
    assert recs[0].quantity == "Energy" and recs[0].value == 12345000
    assert recs[8].value == "2024-05-01T12:30:00Z"
    assert recs[9].function == "Maximum value"
    assert recs[10].storage == 1
    assert recs[len(recs) - 1].quantity == "Fabrication No"


def test_counter_with_clock_and_without():
    now = [100.0]
    m = model.meter_from_config({"id": 1, "manufacturer": "ABC", "records": [
        {"quantity": "volume", "unit": "m3", "value": {"counter": {"start": 10, "rate": 0.5}}}]},
        clock=lambda: now[0])
    assert records_of(m)[0].value == 10
    now[0] = 104.0
    m.invalidate()
    assert records_of(m)[0].value == 12
    m = model.meter_from_config({"records": [
        {"quantity": "volume", "unit": "m3", "value": {"counter": {"start": 10, "rate": 1}}}]})
    assert records_of(m)[0].value == 10  # no clock: one step per readout, from start
    m.invalidate()
    assert records_of(m)[0].value == 11
    msg = raises(model.ConfigError, model.meter_from_config, {"records": [
        {"quantity": "volume", "unit": "m3", "type": "int8",
         "value": {"wander": {"min": 0, "max": 500, "step": 0.5}}}]})
    assert "record 1" in msg
    c = model.Counter(5, 2)
    assert [c.value(), c.value(), c.value()] == [5, 7, 9]


def test_wander_is_deterministic_and_bounded():
    a = model.Wander(40, 60, 0.5)
    b = model.Wander(40, 60, 0.5)
    va = [a.value() for i in range(300)]
    vb = [b.value() for i in range(300)]
    assert va == vb
    assert min(va) >= 40 and max(va) <= 60
    assert len(set(va)) > 5
    c = model.Wander(40, 60, 0.5, seed=7)
    assert [c.value() for i in range(50)] != va[:50]


def test_config_errors_name_meter_and_field():
    cfg = {"name": "heat-1", "records": [{"quantity": "energy", "unit": "kWh", "value": 1},
                                         {"quantity": "energy", "unit": "kWh", "value": 1},
                                         {"quantity": "energy", "unit": "kWhh", "value": 1}]}
    msg = raises(model.ConfigError, model.meter_from_config, cfg, 1)
    assert msg.startswith('meter 2 ("heat-1"): record 3: unknown unit \'kWhh\' (known: Wh, kWh')
    assert "\n" not in msg
    cases = (({"id": "1234567X"}, "bad id"), ({"id": 123456789}, "bad id"),
             ({"manufacturer": "AB1"}, "bad manufacturer"), ({"manufacturer": "ABCD"}, "manufacturer"),
             ({"medium": "lava"}, "bad medium"), ({"medium": 300}, "medium"),
             ({"address": 251}, "address"), ({"version": 256}, "version"),
             ({"adress": 3}, "unknown key 'adress'"),
             ({"records": [{"dif": "0G", "vif": "13"}]}, "record 1: malformed hex"),
             ({"records": [{"quantity": "volume", "unit": "m3", "value": 300.5, "type": "int8"}]},
              "out of range"),
             ({"records": [{"quantity": "volume", "valeu": 3}]}, "unknown key 'valeu'"),
             ({"records": [{"quantity": "volume", "value": {"counter": {"start": 1, "speed": 2}}}]},
              "speed"),
             ({"records": "x"}, "records must be a list"))
    for cfg, want in cases:
        msg = raises(model.ConfigError, model.meter_from_config, cfg)
        assert msg.startswith("meter 1: "), msg
        assert want in msg, (want, msg)


def test_identity_forms():
    m = model.meter_from_config({"id": "00001234", "manufacturer": "abc", "medium": "gas",
                                 "version": 7, "address": 5, "status": 0})
    assert m.id == 1234 and m.medium == 3 and m.version == 7 and m.address == 5
    m = model.meter_from_config({"medium": 0x15})
    assert m.medium == 0x15
    m = model.meter_from_config({"medium": "warm water"})
    assert m.medium == 6
    assert len(m.records) > 0  # demo set


def test_replay_from_hex():
    text = "68 19 19 68 08 0A 72 11 22 33 44 94 52 05 07 2A 00 00 00 0C 13 25 21 04 00 02 6C 1F 31 71 16"
    m = model.replay_from_hex(text, address=7)
    assert m.address == 7 and m.replay is not None
    app = telegrams(m)[0]
    assert app == R.parse_hex(text)[6:-2]
    two = model.replay_from_hex(text + "\n" + text.replace(" ", ""))
    assert two.telegram_count() == 2
    assert "checksum" in raises(model.ConfigError, model.replay_from_hex, text[:-5] + "72 16")
    assert "stop" in raises(model.ConfigError, model.replay_from_hex, text[:-2] + "17")
    assert "start" in raises(model.ConfigError, model.replay_from_hex, "69" + text[2:])
    assert "announced" in raises(model.ConfigError, model.replay_from_hex, text[:-9])
    assert "hex" in raises(model.ConfigError, model.replay_from_hex, "68 zz")


def test_many_records_split_into_telegrams():
    recs = []
    for i in range(60):
        recs.append({"quantity": "volume", "unit": "m3", "storage": i, "value": i})
    m = model.meter_from_config({"records": recs})
    apps = telegrams(m)
    assert len(apps) > 1
    got = records_of(m)
    assert [r.storage for r in got] == list(range(60))


def test_callable_values():
    box = [1.25]
    m = model.meter_from_config({"records": [{"quantity": "volume", "unit": "m3",
                                               "value": 0}]})
    m2 = model.meter_from_config({"records": [{"quantity": "volume", "unit": "m3",
                                                "value": lambda: box[0]}]})
    assert records_of(m)[0].value == 0
    assert records_of(m2)[0].value == 1.25
    box[0] = 2.5
    m2.invalidate()
    assert records_of(m2)[0].value == 2.5


def test_alarm_records_are_class_1_data():
    from mbus_core.bus import Bus
    m = model.meter_from_config({"address": 3, "alarm": [{"dif": "02", "vif": "FD 17",
                                                          "value": 1}]})
    bus = Bus([m])
    r = bus_reply(bus, "10 5B 03 5E 16")
    assert r[4] == 0x28  # ACD: class 1 data waiting
    a = bus_reply(bus, "10 7A 03 7D 16")
    assert a[6] == 0x72 and a[19:-2] == bytes.fromhex("02FD170100")
    assert bus_reply(bus, "10 5A 03 5D 16") == b"\xe5"
    for bad in ([], "x", [{"quantity": "energy", "unit": "kWhh", "value": 1}]):
        try:
            model.meter_from_config({"alarm": bad})
        except model.ConfigError as e:
            assert "alarm" in str(e) and "\n" not in str(e)
            continue
        assert False, bad


def bus_reply(bus, text):
    data = bytes.fromhex(text.replace(" ", ""))
    bus.feed(data)
    return bytes(bus.reply[:bus.reply_len])


def test_strict_repeat_key():
    from mbus_core.slave import Slave
    m = model.meter_from_config({"strict_repeat": True})
    assert m.strict_repeat and Slave(m).strict_repeat
    assert not Slave(model.meter_from_config({})).strict_repeat
    assert Slave(model.meter_from_config({}), strict_repeat=True).strict_repeat
    r = model.meter_from_config({"replay": "68 05 05 68 08 00 72 00 00 7A 16",
                                 "strict_repeat": True})
    assert r.strict_repeat
    msg = raises(model.ConfigError, model.meter_from_config, {"strict_repeat": "yes"})
    assert "strict_repeat must be true or false" in msg and "meter 1" in msg


def test_fixed_data_structure_from_a_meter_file():
    cfg = {"id": 12345678, "medium": "water", "ci": "fixed",
           "fixed": {"unit1": 0x13, "counter1": 1234, "unit2": 0x13, "counter2": 99}}
    t = telegrams(model.meter_from_config(cfg))
    assert t == [bytes((0x73, 0x78, 0x56, 0x34, 0x12, 0, 0, 0xD3, 0x53,
                        0x34, 0x12, 0, 0, 0x99, 0, 0, 0))]
    msg = raises(model.ConfigError, model.meter_from_config, {"fixed": {"unit1": 1}})
    assert "fixed" in msg
    msg = raises(model.ConfigError, model.meter_from_config,
                 {"ci": "73", "fixed": {"unit1": 64}})
    assert "unit1" in msg
