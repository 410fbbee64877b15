"""--scenario FILE: timed steps checked at start (one-line errors) and run while a master
polls (pymeterbus over TCP); the parser against in-memory meters."""
import json
import time

import pytest

from mbus_core.meter import Meter
from mbus_ports.scenario import parse_scenario
from mbus_ports.testing import SlaveProcess
from tests.hostutil import ping, req_ud2, values, usage_error, SILENCE_TIMEOUT


def _meters():
    return [Meter(address=3, records=[b"\x02\xfd\x49\xd2\x04", b"\x02\x16\xc8\x01"]),
            Meter(address=4, id=22222222, records=[b"\x02\x16\x01\x00"])]


def test_steps_are_sorted_by_time_and_checked():
    sc = parse_scenario({"steps": [
        {"at": 5, "meter": 3, "alarm": True},
        {"at": 1, "meter": 3, "record": 1, "add": 100},
        {"at": 2, "meter": 4, "fault": "drop:0.5", "for": 3},
        {"at": 3, "meter": 4, "address": 9},
        {"at": 4, "meter": 9, "unplug": True},
    ]}, _meters())
    assert [s.at for s in sc.steps] == [1, 2, 3, 4, 5]
    assert [s.action for s in sc.steps] == ["add", "fault", "address", "unplug", "alarm"]
    assert sc.steps[1].duration == 3.0
    assert sc.steps[0].text() == "meter 3: record 1 +100"


@pytest.mark.parametrize("steps, text", [
    ([{"at": 1, "meter": 7, "status": 1}], "step 1: no meter at primary address 7"),
    ([{"at": 1, "meter": 3, "status": 1, "alarm": True}], "one action per step"),
    ([{"at": 1, "meter": 3}], "one action per step"),
    ([{"at": -1, "meter": 3, "status": 1}], "at must be a number"),
    ([{"at": "soon", "meter": 3, "status": 1}], "at must be a number"),
    ([{"at": 1, "meter": 3, "status": 300}], "status must be"),
    ([{"at": 1, "meter": 3, "record": 5, "add": 1}], "record must be the index"),
    ([{"at": 1, "meter": 3, "record": 0, "value": [1]}], "value"),
    ([{"at": 1, "meter": 3, "fault": "explode"}], "unknown fault"),
    ([{"at": 1, "meter": 3, "fault": "drop", "for": 0}], "duration"),
    ([{"at": 1, "meter": 3, "status": 1, "for": 3}], "for (seconds) goes with fault"),
    ([{"at": 1, "meter": 3, "unplug": False}], '"unplug": true'),
    ([{"at": 1, "meter": 3, "colour": "red", "status": 1}], "unknown key"),
    # the meter moved to 9 at 1 s: at 2 s it is no longer at 3
    ([{"at": 1, "meter": 3, "address": 9}, {"at": 2, "meter": 3, "status": 1}],
     "step 2: no meter at primary address 3"),
])
def test_bad_steps_give_one_line(steps, text):
    with pytest.raises(ValueError) as e:
        parse_scenario({"steps": steps}, _meters())
    assert text in str(e.value)
    assert "\n" not in str(e.value)


def test_bad_files_are_refused_before_serving(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"steps": [{"at": 1, "meter": 3, "status": "x"}]}')
    line = usage_error(["--scenario", str(bad)])
    assert line.startswith("mbus-slave: error: --scenario %s: step 1: status" % bad)
    bad.write_text("{not json")
    assert "bad JSON" in usage_error(["--scenario", str(bad)])
    assert "cannot read" in usage_error(["--scenario", str(tmp_path / "missing.json")])
    bad.write_text('{"step": []}')
    assert "want {\"steps\"" in usage_error(["--scenario", str(bad)])


def _wait_for(check, timeout=20):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.1)
    raise AssertionError("not seen within %g s" % timeout)


def test_a_scenario_runs_while_the_master_polls(tmp_path):
    sc = tmp_path / "sc.json"
    sc.write_text(json.dumps({"steps": [
        {"at": 0.2, "meter": 3, "record": 1, "add": 100},
        {"at": 0.4, "meter": 3, "record": 0, "value": 230},
        {"at": 0.6, "meter": 3, "alarm": True},
        {"at": 0.8, "meter": 3, "fault": "drop", "for": 1.0},
        {"at": 3.0, "meter": 3, "address": 9},
    ]}))
    with SlaveProcess("--scenario", sc, tcp=True) as s:
        log = lambda: s.stderr_text()   # noqa: E731
        _wait_for(lambda: "scenario: finished (5 steps done, 0 refused)" in log())
        text = log()
        assert "scenario: 0.2 s: meter 3: record 1 +100" in text
        assert "scenario: 0.8 s: meter 3: fault drop for 1 s" in text
        assert "fault: drop reply of meter 3" in text or "over (its duration" in text
        with s.serial() as ser:
            assert not ping(ser, 3, timeout=SILENCE_TIMEOUT)
            t, raw = req_ud2(ser, 9)
        assert values(t) == [230, 556]
        assert raw[4] & 0x20   # the alarm raised at 0.6 s is pending
