"""Live control end to end: `mbus-slave --control` in a subprocess, pymeterbus as the master
on a pty and over TCP, the JSON API driven over HTTP (ports/control_http.py)."""
import http.client
import json
import socket
import sys

import pytest

import meterbus

from mbus_ports.testing import SlaveProcess, ControlAPIError
from tests.hostutil import (ping, req_ud2, recv, send, short, select, values, usage_error,
                            SILENCE_TIMEOUT)

pytestmark = pytest.mark.skipif(not sys.platform.startswith(("linux", "darwin", "freebsd")),
                                reason="needs POSIX ptys")


@pytest.fixture
def start():
    started = []

    def go(*args, **kw):
        s = SlaveProcess(*args, **kw)
        started.append(s)
        return s
    yield go
    for s in started:
        s.stop()


def _raw(slave, method, path, body=b"", headers=None):
    """(status, parsed JSON) of one request sent as given (bad bodies included)."""
    host, port = slave.url[len("http://"):].rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        return r.status, json.loads(r.read().decode())
    finally:
        c.close()


def _master(slave):
    return slave.serial()


# -- values -------------------------------------------------------------------------------
@pytest.mark.parametrize("tcp", [False, True], ids=["pty", "tcp"])
def test_a_value_set_is_what_the_master_reads_next(start, tcp):
    s = start(tcp=tcp)
    with _master(s) as ser:
        t, _ = req_ud2(ser, 3)
        assert values(t) == [1234, 456]
        rec = s.set_value(3, 0, 4321)
        assert rec["value"] == 4321 and rec["unit"] == "V"
        t, _ = req_ud2(ser, 3)
        assert values(t) == [4321, 456]
        # a value source as in meter files: a counter that stands still
        s.set_value(3, 1, {"counter": {"start": 789, "rate": 0}})
        t, _ = req_ud2(ser, 3)
        assert values(t) == [4321, 789]
        s.add(3, 1, 100)   # a counter jump
        t, _ = req_ud2(ser, 3)
        assert values(t) == [4321, 889]
    m = s.meter(3)
    assert [r["value"] for r in m["records"]] == [4321, 889]
    assert m["counters"]["requests"] >= 4 and m["counters"]["replies"] >= 4


def test_meters_list_shape(start):
    s = start()
    ms = s.meters()
    assert len(ms) == 1
    m = ms[0]
    assert m["address"] == 3 and m["id"] == "12345678" and m["manufacturer"] == "TST"
    assert m["present"] is True and m["alarm"] is None and m["status"] == 0
    assert [r["value"] for r in m["records"]] == [1234, 456]
    assert set(m["counters"]) >= {"requests", "replies", "repeats", "errors"}


def test_status_and_id_and_address_changes(start):
    s = start(tcp=True)
    with _master(s) as ser:
        s.set_status(3, 16)
        t, raw = req_ud2(ser, 3)
        assert raw[16] == 16   # the status byte of the CI 72 header
        s.set_id(3, 87654321)
        assert select(ser, "87654321FFFFFFFF")
        s.set_address(3, 7)
        assert ping(ser, 7)
        assert not ping(ser, 3, timeout=SILENCE_TIMEOUT)
        t, raw = req_ud2(ser, 7)
        assert raw[5] == 7 and values(t) == [1234, 456]
    assert s.meter(7)["id"] == "87654321"
    with pytest.raises(ControlAPIError) as e:
        s.meter(3)
    assert e.value.status == 404


# -- alarms -------------------------------------------------------------------------------
def test_alarm_sets_acd_and_is_fetched_with_req_ud1(start):
    s = start()
    with _master(s) as ser:
        _, raw = req_ud2(ser, 3)
        assert not raw[4] & 0x20
        s.alarm(3, [{"quantity": "error flags", "value": 5}])
        _, raw = req_ud2(ser, 3)
        assert raw[4] & 0x20, "ACD not set with an alarm pending"
        send(ser, short(0x7A, 3))     # REQ_UD1
        rsp = recv(ser)
        assert rsp and len(rsp) > 5 and rsp[4] & 0x0F == 0x08   # RSP_UD, class 1 data
        t = meterbus.load(rsp)
        assert [r.value for r in t.records] == [5]
        _, raw = req_ud2(ser, 3)
        assert not raw[4] & 0x20, "ACD still set after the alarm was fetched"
        send(ser, short(0x5A, 3))     # nothing pending: E5
        assert recv(ser) == b"\xe5"
    assert s.meter(3)["alarm"] is None
    # raised and cleared through the API
    s.alarm(3)
    assert s.meter(3)["alarm"]
    s.clear_alarm(3)
    with _master(s) as ser:
        _, raw = req_ud2(ser, 3)
        assert not raw[4] & 0x20


# -- unplug -------------------------------------------------------------------------------
def test_an_unplugged_meter_is_silent_to_the_master_and_a_scan(start, tmp_path):
    bus = tmp_path / "bus.json"
    bus.write_text(json.dumps({"meters": [
        {"address": 1, "id": 11111111, "records": [{"quantity": "volume", "unit": "m3",
                                                      "value": 1}]},
        {"address": 2, "id": 22222222, "records": [{"quantity": "volume", "unit": "m3",
                                                      "value": 2}]}]}))
    s = start("--bus", bus)
    s.unplug(2)
    with _master(s) as ser:
        found = [a for a in range(0, 4) if ping(ser, a, timeout=SILENCE_TIMEOUT)]
        assert found == [1]
        send(ser, short(0x5B, 2))
        assert recv(ser, SILENCE_TIMEOUT) is None
        assert not select(ser, "22222222FFFFFFFF", timeout=SILENCE_TIMEOUT)
        assert select(ser, "11111111FFFFFFFF")
    assert s.meter(2)["present"] is False
    s.plug(2)
    with _master(s) as ser:
        assert ping(ser, 2)
        t, _ = req_ud2(ser, 2)
        assert values(t) == [2]


# -- faults -------------------------------------------------------------------------------
@pytest.mark.parametrize("tcp", [False, True], ids=["pty", "tcp"])
def test_a_fault_switched_on_fires_and_off_stops(start, tcp):
    s = start(tcp=tcp)
    with _master(s) as ser:
        assert ping(ser, 3)
        fid = s.fault(3, "drop")
        send(ser, short(0x5B, 3))
        assert recv(ser, SILENCE_TIMEOUT) is None
        assert not ping(ser, 3, timeout=SILENCE_TIMEOUT)
        faults = s.meter(3)["faults"]
        assert faults[0]["spec"] == "drop@3" and faults[0]["fired"] >= 2
        assert s.clear_faults(3) == [fid]
        assert ping(ser, 3)
        t, _ = req_ud2(ser, 3)
        assert values(t) == [1234, 456]
        # a busy fault: the application error CI 70 08 instead of the data
        s.fault(3, "busy:every:1")
        assert ping(ser, 3)   # SND_NKE: the next REQ_UD2 is no repeat (those resend)
        t, raw = req_ud2(ser, 3)
        assert t is None and raw[6] == 0x70 and raw[7] == 0x08
        s.clear_faults(3)
        assert ping(ser, 3)   # (a repeated REQ_UD2 would get the busy reply again)
        t, _ = req_ud2(ser, 3)
        assert values(t) == [1234, 456]
    assert s.meter(3)["counters"]["errors"] >= 1


def test_a_fault_with_a_duration_switches_itself_off(start):
    s = start()
    s.fault(3, "drop", duration=0.5)
    with _master(s) as ser:
        assert not ping(ser, 3, timeout=SILENCE_TIMEOUT)
        for _ in range(40):   # off after its duration: the meter answers again
            if ping(ser, 3, timeout=SILENCE_TIMEOUT):
                break
        else:
            pytest.fail("the fault stayed on")
    assert s.meter(3)["faults"] == []
    assert "over (its duration passed)" in s.stderr_text()


# -- add / remove / export ------------------------------------------------------------------
def test_add_and_remove_a_meter(start):
    s = start(tcp=True)
    m = s.add_meter({"address": 9, "id": 99999999, "manufacturer": "ABC",
                     "records": [{"quantity": "energy", "unit": "kWh", "value": 77}]})
    assert m["address"] == 9 and m["records"][0]["value"] == 77000   # shown in Wh
    with _master(s) as ser:
        t, _ = req_ud2(ser, 9)
        assert values(t) == [77000]   # pymeterbus reads Wh
        s.remove_meter(9)
        assert not ping(ser, 9, timeout=SILENCE_TIMEOUT)
        assert ping(ser, 3)
    assert [m["address"] for m in s.meters()] == [3]


def test_the_bus_saved_serves_the_same_meters(start, tmp_path):
    s = start("--random-meters", "3", "--seed", "5")
    s.set_value(2, 0, {"counter": {"start": 5000, "rate": 0}})
    s.set_status(3, 16)
    saved = s.bus()
    path = tmp_path / "saved.json"
    path.write_text(json.dumps(saved))
    before = {m["address"]: m for m in s.meters()}
    s2 = start("--bus", path)
    after = {m["address"]: m for m in s2.meters()}
    assert sorted(after) == [1, 2, 3]
    for a in after:
        assert after[a]["id"] == before[a]["id"]
        assert [r["hex"][:8] for r in after[a]["records"]] == \
            [r["hex"][:8] for r in before[a]["records"]]
    assert after[2]["records"][0]["value"] == before[2]["records"][0]["value"]
    assert after[3]["status"] == 16
    with _master(s2) as ser:
        t, _ = req_ud2(ser, 2)
        assert t is not None


# -- the trace ------------------------------------------------------------------------------
def _sse_events(sock_file, n):
    out = []
    for line in sock_file:
        line = line.decode().rstrip("\r\n")
        if line.startswith("data: "):
            out.append(json.loads(line[6:]))
            if len(out) == n:
                break
    return out


def test_trace_streams_every_frame(start):
    s = start()
    host, port = s.url[len("http://"):].rsplit(":", 1)
    sock = socket.create_connection((host, int(port)), timeout=10)
    try:
        sock.sendall(b"GET /api/trace HTTP/1.1\r\nHost: x\r\n\r\n")
        f = sock.makefile("rb")
        assert f.readline().startswith(b"HTTP/1.0 200")
        with _master(s) as ser:
            assert ping(ser, 3)
        ev = _sse_events(f, 2)
    finally:
        sock.close()
    assert ev[0]["dir"] == "RECV" and ev[0]["hex"] == "10 40 03 43 16"
    assert ev[0]["text"] == "SND_NKE to 3"
    assert ev[1]["dir"] == "SEND" and ev[1]["hex"] == "E5" and ev[1]["text"] == "ACK"
    assert ev[1]["time"] >= ev[0]["time"]


# -- bad input ------------------------------------------------------------------------------
def test_bad_requests_get_clean_refusals(start):
    s = start()
    cases = [
        ("PUT", "/api/meters/3/records/0", b'{"value": ', 400, "bad JSON"),
        ("PUT", "/api/meters/3/records/0", b'[1, 2]', 400, "want"),
        ("PUT", "/api/meters/3/records/0", b'{"value": "abc"}', 400, "not a number"),
        ("PUT", "/api/meters/3/records/0", b'{"value": true}', 400, "value"),
        ("PUT", "/api/meters/3/records/0", b'{"value": [1]}', 400, "value"),
        ("PUT", "/api/meters/3/records/7", b'{"value": 1}', 404, "no record 7"),
        ("PUT", "/api/meters/9/records/0", b'{"value": 1}', 404, "no meter"),
        ("PATCH", "/api/meters/3", b'{"status": "x"}', 400, "status"),
        ("PATCH", "/api/meters/3", b'{"status": 300}', 400, "status"),
        ("PATCH", "/api/meters/3", b'{"present": 1}', 400, "present"),
        ("PATCH", "/api/meters/3", b'{"address": 251}', 400, "address"),
        ("PATCH", "/api/meters/3", b'{"id": "12x"}', 400, "id"),
        ("PATCH", "/api/meters/3", b'{"colour": 1}', 400, "unknown field"),
        ("PATCH", "/api/meters/3", b'{"alarm": 5}', 400, "alarm"),
        ("PATCH", "/api/meters/3", b'\xff\xfe', 400, "bad JSON"),
        ("PATCH", "/api/meters/3", b'[' * 100000, 413, "refused"),
        ("GET", "/api/meters/abc", b"", 404, "bad meter address"),
        ("GET", "/api/meters/99", b"", 404, "no meter"),
        ("GET", "/api/nothing", b"", 404, "no such resource"),
        ("DELETE", "/api/trace", b"", 405, "not allowed"),
        ("POST", "/api/meters", b'{"address": 5, "records": [{"quantity": "nope", "value": 1}]}', 400,
         "unknown quantity"),
        ("POST", "/api/meters", b'{"address": 5, "id": -1}', 400, "id"),
        ("POST", "/api/meters/3/faults", b'{"fault": "explode"}', 400, "unknown fault"),
        ("POST", "/api/meters/3/faults", b'{"fault": "drop@4"}', 400, "names meter 4"),
        ("POST", "/api/meters/3/faults", b'{"fault": "drop", "duration": -1}', 400,
         "duration"),
        ("DELETE", "/api/meters/3/faults/5", b"", 404, "no runtime fault 5"),
    ]
    for method, path, body, status, text in cases:
        got, data = _raw(s, method, path, body)
        assert got == status, (method, path, body[:40], got, data)
        assert set(data) == {"error"} and "\n" not in data["error"], data
        assert text in data["error"], (path, body[:40], data)
    # no Content-Length, and a huge one announced: refused before reading
    assert _raw(s, "PUT", "/api/meters/3/records/0", b"",
                {"Transfer-Encoding": "chunked"})[0] == 411
    host, port = s.url[len("http://"):].rsplit(":", 1)
    c = http.client.HTTPConnection(host, int(port), timeout=10)
    c.putrequest("PUT", "/api/meters/3/records/0")
    c.putheader("Content-Length", str(10 ** 9))
    c.endheaders()
    assert c.getresponse().status == 413
    c.close()
    # the slave is unhurt: the master reads as before
    with _master(s) as ser:
        t, _ = req_ud2(ser, 3)
        assert values(t) == [1234, 456]
    assert s.proc.poll() is None
    assert "Traceback" not in s.stderr_text()


def test_200_trace_clients_are_refused_cleanly_and_the_master_gets_every_reply(start):
    s = start(tcp=True)
    host, port = s.url[len("http://"):].rsplit(":", 1)
    socks = []
    statuses = []
    try:
        for _ in range(200):
            k = socket.create_connection((host, int(port)), timeout=10)
            k.sendall(b"GET /api/trace HTTP/1.1\r\nHost: x\r\n\r\n")
            socks.append(k)
        for k in socks:
            statuses.append(k.makefile("rb").readline().split()[1])
        assert statuses.count(b"200") == 16
        assert statuses.count(b"503") == 184
        with _master(s) as ser:
            for i in range(30):
                t, _ = req_ud2(ser, 3)
                assert values(t) == [1234, 456], "reply %d" % i
        assert s.meters()[0]["counters"]["replies"] >= 30
    finally:
        for k in socks:
            k.close()
    assert s.proc.poll() is None


def test_usage_errors_are_one_line():
    line = usage_error(["--control", "nohost:"])
    assert "--control" in line
    line = usage_error(["--control", "70000"])
    assert "--control" in line


# -- in process: the saved bus, the job queue --------------------------------------------
def _controller(cfg):
    import mbus_ports.aes  # noqa: F401 (AES for the encrypted meter)
    from mbus_core.bus import Bus
    from mbus_core.codec.model import meters_from_config
    from mbus_core.slave import Slave
    from mbus_ports.control_ops import Controller
    from mbus_ports.faults import Faults
    ms = meters_from_config(cfg)
    bus = Bus([Slave(m) for m in ms])
    return Controller(bus, ms, [m.id for m in ms], Slave, Faults([], bus=bus)), ms


def test_a_saved_bus_rebuilds_every_kind_of_meter():
    from mbus_core.codec.model import meters_from_config
    from mbus_ports.control_view import meter_config
    ctl, ms = _controller({"meters": [
        {"address": 1, "ci": "fixed", "fixed": {"unit1": 3, "counter1": 12, "unit2": 4,
                                                "counter2": 5}},
        {"address": 2, "replay": "68 1B 1B 68 08 01 72 71 90 93 41 49 6A 01 06 00 00 00 00"
                                 " 04 13 41 E2 01 00 04 3D 07 00 00 00 8D 16"},
        {"address": 3, "security": {"mode": 5, "key": "000102030405060708090A0B0C0D0E0F"},
         "alarm": [{"quantity": "error flags", "value": 3}], "status": 4, "records": [
            {"quantity": "fabrication number", "value": 1234},
            {"quantity": "time point", "type": "date", "value": "2024-01-31"},
            {"quantity": "time point", "type": "datetime", "value": "2024-01-31 10:00"},
            {"quantity": "custom", "unit": "pulses", "type": "text", "value": "abc"},
            {"quantity": "energy", "unit": "MWh", "value": {"counter": {"start": 12,
                                                                        "rate": 0}}},
            {"quantity": "power", "unit": "kW", "value": 1.25, "resolution": 0.01},
            "0F 01 02"]}]})
    saved = json.loads(json.dumps({"meters": [meter_config(m) for m in ms]}))
    back = meters_from_config(saved)
    buf1, buf2 = bytearray(300), bytearray(300)
    for a, b in zip(ms, back):
        a.refresh()
        b.refresh()
        n1 = a.write_telegram(0, buf1, 0, 0)
        n2 = b.write_telegram(0, buf2, 0, 0)
        if a.security is None:   # (an encrypted telegram differs by its IV's access no.)
            assert buf1[:n1] == buf2[:n2], a.address
        assert (a.address, a.id, a.status, a.alarm) == (b.address, b.id, b.status, b.alarm)
    assert back[2].security.mode == 5


def test_jobs_run_between_frames_a_share_at_a_time_and_failures_stay_in_their_job():
    from mbus_ports import control_ops as ops
    ctl, ms = _controller({"address": 3, "records": [{"quantity": "volume", "unit": "m3",
                                                       "value": 1}]})
    ran = []
    for i in range(ops.JOBS_PER_STEP + 3):
        ctl.post(lambda i=i: ran.append(i))
    ctl.post(lambda: 1 / 0)
    pokes = []
    ctl.wake = lambda: pokes.append(1)
    ctl.between_frames()
    assert len(ran) == ops.JOBS_PER_STEP and pokes   # the rest after the next step
    ctl.between_frames()
    assert ran == list(range(ops.JOBS_PER_STEP + 3))
    assert ctl.failed == 1 and not ctl._jobs
    # a refused change: its ControlError to the caller, nothing changed
    with pytest.raises(ops.ControlError) as e:
        ops.check_patch({"status": -1})
    assert e.value.status == 400
    ctl.patch(3, ops.check_patch({"present": False}))
    assert ctl.bus.slaves[0].present is False


def test_an_alarm_too_long_for_an_encrypted_telegram_is_refused(tmp_path):
    meter = tmp_path / "m.json"
    meter.write_text(json.dumps({"address": 4, "records": [{"dif": "04", "vif": "13",
                                                              "value": 1}],
                                 "security": {"mode": 7, "key": "00" * 16}}))
    with SlaveProcess("--meter", str(meter)) as s:
        with pytest.raises(ControlAPIError, match="one encrypted telegram holds 206"):
            s.alarm(4, [{"dif": "0F", "value": "00" * 210}])
        assert s.meter(4)["alarm"] is None
