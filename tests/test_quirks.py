"""Vendor quirks (ports/quirks.py, issue 15): each one end to end with pymeterbus as the
master over a pty (TCP where the line speed matters), from --quirk and from a meter
file's "quirks"; bad values are one-line errors."""
import json
import time

import pytest

import meterbus

from tests.hostutil import (frame_hex, ping, recv, req_ud2, send, short, usage_error,
                            values, SILENCE_TIMEOUT)

REQ3 = short(0x5B, 3)


def log_has(slave, text, wait=5.0):
    deadline = time.monotonic() + wait
    while text not in slave.log():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def meter_file(tmp_path, cfg, name="meter.json"):
    path = tmp_path / name
    path.write_text(json.dumps(cfg))
    return str(path)


def read(ser, address, fcb=None, timeout=None):
    """REQ_UD2 sent by pymeterbus (or with the given FCB): the raw reply (None: none)."""
    ser.reset_input_buffer()
    if fcb is None:
        meterbus.send_request_frame(ser, address)
    else:
        ser.write(short(0x5B | (0x20 if fcb else 0), address))
    return recv(ser, timeout)


# -- sleep: the first frame after a pause only wakes the meter -------------------------------
def test_sleeping_meter_needs_a_retry(slave_factory):
    s = slave_factory("--quirk", "sleep=2")
    with s.master() as ser:
        time.sleep(2.5)
        assert read(ser, 3, timeout=SILENCE_TIMEOUT) is None      # lost: it woke up
        first = read(ser, 3)                                       # the master's retry
        assert values(meterbus.load(first)) == [1234, 456]
        assert read(ser, 3)                                        # still awake
        time.sleep(2.5)
        assert not ping(ser, 3, timeout=SILENCE_TIMEOUT)           # asleep again
        assert ping(ser, 3)
    assert log_has(s, "quirk: meter 3 was asleep")


# -- ready time after power-up -----------------------------------------------------------
def test_ready_time_after_power_up(slave_factory):
    t0 = time.monotonic()
    s = slave_factory("--quirk", "ready-time=8")
    with s.master() as ser:
        early = time.monotonic() - t0 < 6
        first = ping(ser, 3, timeout=SILENCE_TIMEOUT)
        deadline = time.monotonic() + 20
        while not ping(ser, 3, timeout=SILENCE_TIMEOUT):
            assert time.monotonic() < deadline, "never ready"
    if early:   # asked well inside the ready time: silent, and the log says why
        assert not first
        assert log_has(s, "quirk: meter 3 not ready")


# -- battery rationing -------------------------------------------------------------------
def test_rationing_short_telegram_between_full_ones(slave_factory, tmp_path):
    cfg = {"address": 3, "id": 44556677, "manufacturer": "ZRI", "medium": "water",
           "records": [{"quantity": "volume", "unit": "m3", "value": 12.5},
                       {"quantity": "volume flow", "unit": "m3/h", "value": 0.25},
                       {"quantity": "flow temperature", "unit": "C", "value": 21}],
           "quirks": {"ration": {"minutes": 0.05, "records": 1}}}
    s = slave_factory("--meter", meter_file(tmp_path, cfg))
    with s.master() as ser:
        full = read(ser, 3)
        short_one = read(ser, 3)
        time.sleep(3.5)
        again = read(ser, 3)
    assert len(meterbus.load(full).records) == 3
    assert len(meterbus.load(again).records) == 3
    # the short one: the full telegram's header (next access number) and first record
    rec = 19 + 2 + 4      # DIF VIF and 4 data bytes of the volume
    body = bytearray(full[4:rec])
    body[15 - 4] = (full[15] + 1) & 0xFF
    want = bytes((0x68, len(body), len(body), 0x68)) + bytes(body) + \
        bytes((sum(body) & 0xFF, 0x16))
    assert short_one == want
    assert values(meterbus.load(short_one)) == values(meterbus.load(full))[:1]
    assert log_has(s, "quirk: meter 3: short telegram")


# -- auto-baud: the meter follows the master's speed on a pty --------------------------------
def test_auto_baud_follows_the_master(slave_factory):
    s = slave_factory("--quirk", "auto-baud=2400,9600")
    with s.master(9600) as ser:
        assert values(meterbus.load(read(ser, 3))) == [1234, 456]
    assert log_has(s, "quirk: meter 3 follows the master to 9600 baud")
    with s.master(300) as ser:
        assert read(ser, 3, timeout=SILENCE_TIMEOUT) is None
    assert log_has(s, "quirk: meter 3 cannot follow the master's 300 baud")
    with s.master(2400) as ser:
        assert read(ser, 3)
    assert log_has(s, "quirk: meter 3 follows the master to 2400 baud")


def test_auto_baud_over_tcp_is_a_no_op(tcp_factory):
    s = tcp_factory("--quirk", "auto-baud")
    with s.master() as ser:
        assert read(ser, 3)
    assert log_has(s, "Auto-baud:       no effect on tcp:0: a TCP stream has no line speed")


# -- address writes per day -----------------------------------------------------------------
def _set_address(ser, old, new):
    body = bytes((0x53, old, 0x51, 0x01, 0x7A, new))
    send(ser, bytes((0x68, 6, 6, 0x68)) + body + bytes((sum(body) & 0xFF, 0x16)))
    return recv(ser, SILENCE_TIMEOUT)


def test_address_writes_beyond_the_limit_are_refused(slave_factory):
    s = slave_factory("--quirk", "address-writes=1:refuse")
    with s.master() as ser:
        assert _set_address(ser, 3, 7) == b"\xe5"
        assert ping(ser, 7)
        assert _set_address(ser, 7, 9) is None                     # no E5, no change
        assert not ping(ser, 9, timeout=SILENCE_TIMEOUT) and ping(ser, 7)
    assert log_has(s, "quirk: meter 7 refuses address write 2 within 24 h (limit 1): no E5")


def test_address_writes_beyond_the_limit_stay_in_ram(slave_factory, tmp_path):
    state = str(tmp_path / "state.json")
    cfg = {"address": 3, "quirks": {"address_writes": {"per_day": 1, "beyond": "ram"}}}
    s = slave_factory("--meter", meter_file(tmp_path, cfg), "--state", state)
    with s.master() as ser:
        assert _set_address(ser, 3, 7) == b"\xe5"
        assert _set_address(ser, 7, 9) == b"\xe5"                 # taken, in RAM
        assert ping(ser, 9)
    assert log_has(s, "kept in RAM only (not saved)")
    with open(state) as f:
        saved = json.load(f)
    assert '"address": 7' in json.dumps(saved) and '"address": 9' not in json.dumps(saved)


# -- CI B7 (Sontex Supercal 531, libmbus issue #90) ------------------------------------------
def test_ci_b7_reply(slave_factory):
    s = slave_factory("--quirk", "reply=ci-b7")
    with s.master() as ser:
        got = read(ser, 3)
    plain = frame_hex("68 18 18 68 08 03 72 78 56 34 12 74 52 01 00 00 00 00 00 02 FD 49 D2 04 "
                      "02 16 C8 01 00 16")
    assert got[6] == 0xB7 and got[:6] == plain[:6] and got[7:-2] == plain[7:-2]
    assert sum(got[4:-2]) & 0xFF == got[-2]                        # a good frame ...
    with pytest.raises(Exception):
        meterbus.load(got)                                         # ... masters cannot read


# -- a device at two addresses -------------------------------------------------------------
def test_second_address(slave_factory, tmp_path):
    cfg = {"address": 5, "id": 31313131, "quirks": {"second_address": 0}}
    s = slave_factory("--meter", meter_file(tmp_path, cfg))
    with s.master() as ser:
        assert ping(ser, 5) and ping(ser, 0)
        t, raw = req_ud2(ser, 0)
        assert raw[5] == 5 and "".join("%02X" % b for b in t.body.bodyHeader.id_nr) == \
            "31313131"
        assert not ping(ser, 7, timeout=SILENCE_TIMEOUT)
    assert log_has(s, "quirk: meter 5 answers at its second address 0")


# -- FCB: never implemented, strict, live (the default) -----------------------------------
MANY = {"address": 3, "records": [{"quantity": "volume", "unit": "m3", "value": i}
                                  for i in range(60)]}


@pytest.mark.parametrize("fcb", ["ignore", "strict", "live"])
def test_fcb_quirks(slave_factory, tmp_path, fcb):
    cfg = dict(MANY, quirks={"fcb": fcb})
    s = slave_factory("--meter", meter_file(tmp_path, cfg))
    with s.master() as ser:
        assert ping(ser, 3)
        one = read(ser, 3, fcb=1)
        two = read(ser, 3, fcb=1)          # the same FCB: a repeat, to a standard meter
    first = values(meterbus.load(one))
    assert first[0] == 0
    if fcb == "ignore":                    # every REQ_UD2 new: the next telegram
        assert first[-1] is None           # DIF 1F: more records follow
        assert values(meterbus.load(two))[0] == first[-2] + 1
    elif fcb == "strict":                  # the last telegram byte for byte
        assert two == one
    else:                                  # the same telegram, a new access number
        assert two != one and values(meterbus.load(two)) == first


# -- bad values ----------------------------------------------------------------------------
@pytest.mark.parametrize("arg", [
    "sleep=0", "sleep=x", "sleep", "ration=0", "ration=5:x", "ration=5:-1",
    "auto-baud=1234", "auto-baud=", "address-writes=-1", "address-writes=3:never",
    "ready-time=-2", "reply=ci-b8", "second-address=251", "second-address=x",
    "fcb=sometimes", "nope=1"])
def test_bad_quirk_flags(arg):
    line = usage_error(["--quirk", arg])
    assert "bad --quirk" in line


@pytest.mark.parametrize("quirks,word", [
    (5, "quirks must be an object"), ({"sleep": "x"}, "sleep must be"),
    ({"nope": 1}, "unknown quirk 'nope'"), ({"auto_baud": []}, "auto_baud must be"),
    ({"ration": {"records": 2}}, "ration needs minutes"),
    ({"address_writes": {"per_day": 2, "beyond": "x"}}, "beyond must be ram or refuse"),
    ({"fcb": True}, "fcb must be one of")])
def test_bad_quirks_in_a_meter_file(tmp_path, quirks, word):
    line = usage_error(["--meter", meter_file(tmp_path, {"address": 3, "quirks": quirks})])
    assert word in line and "meter 1" in line


# -- quirks across a power cycle (--fault power) ----------------------------------------
def test_power_cycle_loses_the_ram_address_and_waits_the_ready_time(slave_factory):
    s = slave_factory("--quirk", "address-writes=1", "--quirk", "ready-time=2",
                      "--fault", "power:every:3:2")
    with s.master() as ser:
        time.sleep(2.2)                                            # past the ready time
        assert _set_address(ser, 3, 7) == b"\xe5"                  # saved
        assert _set_address(ser, 7, 9) == b"\xe5"                  # RAM only
        assert ping(ser, 9)                                        # 3rd frame: power off
        assert not ping(ser, 9, timeout=SILENCE_TIMEOUT)
        time.sleep(2.2)
        assert not ping(ser, 9, timeout=SILENCE_TIMEOUT)           # powers up: RAM lost
        assert not ping(ser, 7, timeout=SILENCE_TIMEOUT)           # not ready yet
        time.sleep(2.2)
        assert ping(ser, 7) and not ping(ser, 9, timeout=SILENCE_TIMEOUT)
    assert log_has(s, "quirk: meter 7: address 9 was in RAM only: back at 7 after the "
                      "power cycle")
