"""mbus_ports.testing: SlaveProcess and the pytest fixtures, as a master's test suite
uses them (pymeterbus as the master under test)."""
import json
import subprocess
import sys
import textwrap

import pytest

import meterbus

from mbus_ports.testing import SlaveProcess, SlaveError, ControlAPIError
from mbus_ports.testing import mbus_slave, mbus_slave_factory  # noqa: F401 (fixtures)
from tests.hostutil import recv, req_ud2, ping, send, short, values, SILENCE_TIMEOUT


def test_the_readme_example(mbus_slave):
    # the README's example, as written there (pymeterbus plays the master under test)
    mbus_slave.set_value(3, 0, 230)                  # meter 3, record 0: 230 V
    with mbus_slave.serial(timeout=1) as ser:
        meterbus.send_request_frame(ser, 3)
        reply = meterbus.load(meterbus.recv_frame(ser))
    assert reply.records[0].value == 230
    mbus_slave.unplug(3)                             # the meter leaves the bus
    with mbus_slave.serial(timeout=1) as ser:
        meterbus.send_ping_frame(ser, 3)
        assert meterbus.recv_frame(ser) is None


def test_every_operation(mbus_slave_factory, tmp_path):
    s = mbus_slave_factory(tcp=True)
    assert s.device.startswith("socket://127.0.0.1:") and s.url.startswith("http://127.")
    assert [m["address"] for m in s.meters()] == [3]
    with s.serial() as ser:
        s.set_value(3, 1, {"counter": {"start": 10, "rate": 0}})
        s.add(3, 1, 5)
        assert s.value(3, 1) == 15
        s.set_status(3, 4)
        t, raw = req_ud2(ser, 3)
        assert values(t) == [1234, 15] and raw[16] == 4
        s.alarm(3, [{"quantity": "error flags", "value": 2}])
        assert req_ud2(ser, 3)[1][4] & 0x20
        s.clear_alarm(3)
        s.unplug(3)
        assert not ping(ser, 3, timeout=SILENCE_TIMEOUT)
        s.plug(3)
        fid = s.fault(3, "drop")
        assert not ping(ser, 3, timeout=SILENCE_TIMEOUT)
        assert s.clear_faults(3, fid) == [fid]
        s.set_id(3, 11223344)
        s.set_address(3, 12)
        assert ping(ser, 12)
        s.add_meter({"address": 20, "records": [{"quantity": "volume", "unit": "m3",
                                                 "value": 3}]})
        t, _ = req_ud2(ser, 20)
        assert values(t) == [3]
        s.remove_meter(20)
        assert not ping(ser, 20, timeout=SILENCE_TIMEOUT)
    bus = s.bus()
    assert [m["address"] for m in bus["meters"]] == [12]
    assert bus["meters"][0]["id"] == 11223344
    (tmp_path / "bus.json").write_text(json.dumps(bus))
    with pytest.raises(ControlAPIError) as e:
        s.set_value(12, 0, "not a number")
    assert e.value.status == 400 and "not a number" in e.value.message
    assert s.stop() == 0


def test_pty_device_and_stop(mbus_slave):
    assert mbus_slave.device.startswith("/dev/")
    with mbus_slave.serial() as ser:
        send(ser, short(0x40, 3))
        assert recv(ser) == b"\xe5"
    assert mbus_slave.stop() == 0


def test_a_slave_that_cannot_start_says_why(tmp_path):
    with pytest.raises(SlaveError) as e:
        SlaveProcess("--meter", str(tmp_path / "missing.json"))
    assert "cannot read" in str(e.value)


def test_the_module_works_as_a_pytest_plugin(tmp_path):
    """What the pytest11 entry point does, with -p: a user's test gets the fixture."""
    (tmp_path / "test_user.py").write_text(textwrap.dedent("""
        def test_user(mbus_slave):
            mbus_slave.set_status(3, 16)
            assert mbus_slave.meter(3)["status"] == 16
    """))
    from importlib.metadata import entry_points
    installed = any(e.value == "mbus_ports.testing"
                    for e in entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "mbus_ports.testing"]   # not reinstalled yet
    out = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider"]
                         + plugin + [str(tmp_path / "test_user.py")],
                         capture_output=True, text=True, timeout=120, cwd=str(tmp_path))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "1 passed" in out.stdout
