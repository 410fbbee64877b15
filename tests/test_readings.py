"""Counters' readings survive a restart (--state): a head-end never sees a meter run
backwards, after a clean stop, after SIGKILL, and on the MicroPython firmware."""
import json
import os
import signal
import time

from mbus_core.generators import Counter
from mbus_core.meter import Meter
from mbus_core.codec.model import meters_from_config
from mbus_ports.state import apply_state, snapshot

from tests.hostutil import TcpSlave, req_ud2, values

COUNTER = {"quantity": "volume", "unit": "l", "type": "int32",
           "value": {"counter": {"start": 1000, "rate": 200}}}


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self):
        return self.t


def test_counter_reading_ahead_and_resume():
    clock = Clock()
    c = Counter(100, 2, clock)
    clock.t = 10
    assert c.reading() == 120 and c.reading(5) == 130 and c.value() == 120
    c.resume(500)
    assert c.value() == 500
    clock.t = 11
    assert c.value() == 502
    c.resume(50)                       # never backwards from the configured start
    assert c.value() == 502
    down = Counter(100, -1, clock)
    down.resume(90)
    assert down.value() == 90


def test_state_keeps_readings_and_checks_the_record():
    clock = Clock()
    cfg = {"meters": [{"address": 1, "records": [{"quantity": "error flags", "value": 0},
                                                  COUNTER]}]}
    meters = meters_from_config(cfg, clock)
    clock.t = 2.5
    st = json.loads(json.dumps(snapshot(meters, [m.id for m in meters], ahead=10)))
    assert st["meters"]["0"]["readings"] == {"1": {"head": "0413", "value": 1000 + 200 * 12.5}}
    fresh = meters_from_config(cfg, clock)
    assert apply_state(st, fresh) == 1
    assert fresh[0].records[1].source.value() == 3500
    # the meter file changed: another record at that place, a bad value
    warnings = []
    st["meters"]["0"]["readings"]["0"] = {"head": "0413", "value": 5}
    st["meters"]["0"]["readings"]["1"]["value"] = "lots"
    assert apply_state(st, meters_from_config(cfg, clock), warn=warnings.append) == 0
    assert len(warnings) == 2 and all("does not fit" in w for w in warnings)
    assert "readings" not in snapshot([Meter()], [12345678])["meters"]["0"]


def _volume(s):
    with s.master() as ser:
        t, _ = req_ud2(ser, 1)
        return values(t)[0]


def _meter(tmp_path):
    path = tmp_path / "meter.json"
    path.write_text(json.dumps({"address": 1, "records": [COUNTER]}))
    return str(path)


def test_restart_continues_the_counter(tmp_path):
    meter, state = _meter(tmp_path), str(tmp_path / "state.json")
    s = TcpSlave(["--meter", meter, "--state", state], tmp_path)
    try:
        time.sleep(0.5)
        before = _volume(s)
    finally:
        assert s.stop() == 0
    assert before >= 1.1       # m3: 1000 l + 200 l/s
    s = TcpSlave(["--meter", meter, "--state", state], tmp_path)
    try:
        after = _volume(s)
    finally:
        s.stop()
    assert before <= after < before + 1, (before, after)


def test_sigkill_never_makes_the_counter_run_backwards(tmp_path):
    meter, state = _meter(tmp_path), str(tmp_path / "state.json")
    s = TcpSlave(["--meter", meter, "--state", state, "--readings-every", "0.01"], tmp_path)
    try:
        seen = [_volume(s)]
        time.sleep(1.5)            # past two periodic saves
        seen.append(_volume(s))
    finally:
        s.stop(signal.SIGKILL)
    s = TcpSlave(["--meter", meter, "--state", state], tmp_path)
    try:
        after = _volume(s)
    finally:
        s.stop()
    assert after >= max(seen), (seen, after)


def test_firmware_keeps_readings(tmp_path):
    from tests.test_upy_firmware import Sim, decode, values as upy_values
    meter, state = _meter(tmp_path), str(tmp_path / "state.json")
    os.environ["MBUS_READINGS_MIN"] = "0.01"
    try:
        with Sim("--meter", meter, "--state", state) as sim:
            first = upy_values(decode(sim.request(1)))[0]
            time.sleep(1.5)
            sim.request(1)             # a loop turn after the period
    finally:
        del os.environ["MBUS_READINGS_MIN"]
    saved = json.load(open(state))["meters"]["0"]["readings"]["0"]["value"]
    with Sim("--meter", meter, "--state", state) as sim:
        again = upy_values(decode(sim.request(1)))[0]
    assert again * 1000 >= saved >= first * 1000, (first, saved, again)


def test_a_counter_that_wraps_is_logged_once(tmp_path):
    path = tmp_path / "meter.json"
    path.write_text(json.dumps({"address": 1, "records": [
        {"dif": "01", "vif": "13", "value": {"counter": {"start": 100, "rate": 100}}}]}))
    s = TcpSlave(["--meter", str(path)], tmp_path)
    try:
        for _ in range(3):
            time.sleep(0.4)
            _volume(s)
    finally:
        s.stop()
    assert s.log().count("wrapped") == 1, s.log()
