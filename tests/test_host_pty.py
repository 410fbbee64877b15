"""End to end on a real pty: `python -m mbus_ports --device pty` in a subprocess, pymeterbus
as the master over pyserial at 2400 8E1 (what libmbus's tools send, see libmbus-traces.md)."""
import json
import os
import signal
import sys

import pytest

import meterbus

from tests.hostutil import (ping, req_ud2, select, send, recv, values, ident,
                      frame_hex, long_frame, short, SILENCE_TIMEOUT)

pytestmark = pytest.mark.skipif(not sys.platform.startswith(("linux", "darwin", "freebsd")),
                                reason="needs POSIX ptys")


def test_default_meter_ping_and_read(slave_factory):
    s = slave_factory("--trace")
    with s.master() as ser:
        assert ping(ser, 3)
        t, raw = req_ud2(ser, 3)
    assert ident(t) == "12345678"
    assert values(t) == [1234, 456]
    # byte for byte the RSP_UD of libmbus's trace (first telegram: access number 0)
    assert raw == frame_hex("68 18 18 68 08 03 72 78 56 34 12 74 52 01 00 00 00 00 00 02 FD"
                            " 49 D2 04 02 16 C8 01 57 16")
    assert "RECV (005): 10 5B 03 5E 16" in s.wait_line("RECV (005): 10 5B")
    assert s.stop() == 0


def test_other_addresses_stay_silent(slave_factory):
    s = slave_factory("--addr", "5")
    with s.master() as ser:
        assert not ping(ser, 3, timeout=SILENCE_TIMEOUT)
        assert ping(ser, 5)
        assert ping(ser, 254)


def test_master_reopens_the_pty(slave_factory):
    s = slave_factory()
    for _ in range(3):
        with s.master() as ser:
            assert ping(ser, 3)
    # a master that goes away without reading its reply leaves nothing behind
    with s.master() as ser:
        send(ser, short(0x5B, 3))
    with s.master() as ser:
        t, _ = req_ud2(ser, 3)
        assert values(t) == [1234, 456]


def test_libmbus_request_sequence_by_secondary_address(slave_factory):
    """mbus-serial-request-data PTY 12345678FFFFFFFF: SND_NKE to 253 twice, select, 253."""
    s = slave_factory()
    with s.master() as ser:
        send(ser, short(0x40, 0xFD))   # nobody selected yet: silence (as in the trace)
        assert recv(ser, SILENCE_TIMEOUT) is None
        send(ser, short(0x40, 0xFD))
        assert recv(ser, SILENCE_TIMEOUT) is None
        assert not select(ser, "87654321FFFFFFFF", timeout=SILENCE_TIMEOUT)
        assert select(ser, "12345678FFFFFFFF")
        t, _ = req_ud2(ser, 0xFD)
    assert ident(t) == "12345678" and values(t) == [1234, 456]


def _many_records(n):
    return ["0413" + i.to_bytes(4, "little").hex() for i in range(1, n + 1)]


def test_multi_telegram_readout_with_fcb(slave_factory, tmp_path):
    meter = tmp_path / "big.json"
    meter.write_text(json.dumps({"address": 9, "id": 11223344, "manufacturer": "ABC",
                                 "medium": "water", "records": _many_records(100)}))
    s = slave_factory("--meter", str(meter))
    got = []
    telegrams = 0
    with s.master() as ser:
        assert ping(ser, 9)      # SND_NKE resets the FCB state
        fcb = True
        while True:
            t, raw = req_ud2(ser, 9, fcb=fcb)
            # the same FCB again: the master missed the reply; we get the same telegram
            # (its records, not the next ones) with a new access number
            t2, raw2 = req_ud2(ser, 9, fcb=fcb)
            assert raw2[19:-2] == raw[19:-2] and raw2[15] == (raw[15] + 1) & 0xFF
            telegrams += 1
            got += [r.value for r in t.records if not r.more_records_follow]
            if not t.body.more_records_follow():   # (a method in pymeterbus 0.8.5)
                break
            assert raw[-3] == 0x1F
            fcb = not fcb
            assert telegrams < 10
    assert telegrams >= 2
    assert len(got) == 100
    assert [round(v * 1000) for v in got] == list(range(1, 101))
    assert ident(t) == "11223344"


def test_set_primary_address_then_read_there(slave_factory):
    s = slave_factory()
    with s.master() as ser:
        # mbus-serial-set-address PTY 3 7
        send(ser, frame_hex("68 06 06 68 53 03 51 01 7A 07 29 16"))
        assert recv(ser) == b"\xe5"
        assert ping(ser, 7)
        assert not ping(ser, 3, timeout=SILENCE_TIMEOUT)
        t, raw = req_ud2(ser, 7)
    assert raw[5] == 7 and values(t) == [1234, 456]
    assert s.stop() == 0
    assert "primary address 3 -> 7" in s.log()


def test_read_only_refuses_address_change(slave_factory):
    s = slave_factory("--read-only")
    with s.master() as ser:
        send(ser, frame_hex("68 06 06 68 53 03 51 01 7A 07 29 16"))
        assert recv(ser) == b"\xe5"
        assert not ping(ser, 7, timeout=SILENCE_TIMEOUT)
        t, raw = req_ud2(ser, 3)
        assert raw[6] == 0x70     # the refusal is reported as a CI 70 application error
        t, raw = req_ud2(ser, 3, fcb=True)   # a new request (10 5B has FCV set, FCB 0)
        assert values(t) == [1234, 456]


@pytest.mark.parametrize("how", [signal.SIGTERM, signal.SIGKILL])
def test_state_survives_restart(slave_factory, tmp_path, how):
    state = str(tmp_path / "state.json")
    s = slave_factory("--state", state)
    with s.master() as ser:
        send(ser, frame_hex("68 06 06 68 53 03 51 01 7A 07 29 16"))
        assert recv(ser) == b"\xe5"
        assert ping(ser, 7)
        # a new ID too (0C 79: 8 BCD digits)
        send(ser, long_frame(0x53, 7, 0x51, frame_hex("0C 79 21 43 65 87")))
        assert recv(ser) == b"\xe5"
        t, _ = req_ud2(ser, 7)
        assert ident(t) == "87654321"
    status = s.stop(how)
    assert status == (0 if how == signal.SIGTERM else -signal.SIGKILL)
    with open(state) as f:
        saved = json.load(f)
    assert saved["meters"]["0"]["address"] == 7
    s2 = slave_factory("--state", state)
    with s2.master() as ser:
        assert ping(ser, 7)
        assert not ping(ser, 3, timeout=SILENCE_TIMEOUT)
        t, _ = req_ud2(ser, 7)
    assert ident(t) == "87654321"
    assert s2.stop() == 0


def test_corrupt_state_file_is_a_warning(slave_factory, tmp_path):
    state = tmp_path / "state.json"
    state.write_text("{not json")
    s = slave_factory("--state", str(state))
    with s.master() as ser:
        assert ping(ser, 3)
    assert s.stop() == 0
    assert "unreadable" in s.log() and "Traceback" not in s.log()
    assert json.loads(state.read_text())["meters"]["0"]["address"] == 3


def test_selective_readout_and_application_reset(slave_factory):
    s = slave_factory()
    with s.master() as ser:
        # CI 51 with a data-field-8 record: read out only the voltage (FD 49)
        send(ser, long_frame(0x53, 3, 0x51, frame_hex("08 FD 49")))
        assert recv(ser) == b"\xe5"
        t, _ = req_ud2(ser, 3)
        assert values(t) == [1234]
        # mbus-tcp-application-reset ... 3 sends this
        send(ser, frame_hex("68 03 03 68 53 03 50 A6 16"))
        assert recv(ser) == b"\xe5"
        t, _ = req_ud2(ser, 3, fcb=True)   # toggled FCB: fresh data
        assert values(t) == [1234, 456]


def test_repeat_after_a_snd_ud_is_a_valid_frame(slave_factory):
    s = slave_factory()
    with s.master() as ser:
        req_ud2(ser, 3)
        send(ser, frame_hex("68 03 03 68 53 03 50 A6 16"))
        assert recv(ser) == b"\xe5"
        send(ser, short(0x5B, 3))       # same FCB as the first REQ_UD2: a repeat
        data = recv(ser)
        assert data and data[0] == 0x68


def test_baud_switch_then_talk_at_9600(slave_factory, tmp_path):
    state = str(tmp_path / "state.json")
    s = slave_factory("--state", state)
    with s.master() as ser:
        send(ser, frame_hex("68 03 03 68 53 03 BD 13 16"))   # CI BD: 9600 baud
        assert recv(ser) == b"\xe5"
    with s.master(baud=9600) as ser:
        assert ping(ser, 3)
        t, _ = req_ud2(ser, 3)
        assert values(t) == [1234, 456]
    assert s.stop() == 0
    assert "switched to 9600 baud" in s.log()
    with open(state) as f:
        assert json.load(f)["baud"] == 9600
    s2 = slave_factory("--state", state)
    s2.stop()
    assert "Baudrate:        9600" in s2.log()


def test_link_is_created_and_removed(slave_factory, tmp_path):
    link = str(tmp_path / "mbus0")
    s = slave_factory("--link", link)
    assert os.path.realpath(link) == os.path.realpath(s.path)
    import serial
    with serial.Serial(link, 2400, parity="E", timeout=3) as ser:
        assert ping(ser, 3)
    assert s.stop(signal.SIGINT) == 0
    assert not os.path.lexists(link)


def test_bus_primary_scan_and_wildcard_secondary_scan(slave_factory, tmp_path):
    bus = tmp_path / "bus.json"
    ids = [31415926, 27182818, 16180339]
    bus.write_text(json.dumps({"meters": [
        {"address": a, "id": i, "manufacturer": "TST", "medium": "water",
         "records": ["0413%08x" % a]} for a, i in zip((1, 2, 4), ids)]}))
    s = slave_factory("--bus", str(bus))
    with s.master() as ser:
        found = [a for a in range(0, 7) if ping(ser, a, timeout=SILENCE_TIMEOUT)]
        assert found == [1, 2, 4]
        assert sorted(secondary_scan(ser)) == sorted("%08d" % i for i in ids)


def secondary_scan(ser):
    """The wildcard search of libmbus's mbus-serial-scan-secondary: fix the ID one digit
    at a time (most significant first); an E5 followed by a clean RSP_UD from 253 is one
    meter, a garbled reply (several meters answering at once) means: go one digit deeper."""
    found = []

    def probe(mask):
        send(ser, short(0x40, 0xFD))     # deselect whoever was selected
        recv(ser, SILENCE_TIMEOUT)
        ser.reset_input_buffer()
        meterbus.send_select_frame(ser, mask + "FFFFFFFF")
        ack = recv(ser, SILENCE_TIMEOUT)
        if ack is None:
            return "none"
        if ack != b"\xe5":
            return "collision"
        send(ser, short(0x5B, 0xFD))
        data = recv(ser)
        if not data:
            return "collision"
        try:
            t = meterbus.load(data)
        except Exception:
            return "collision"
        found.append(ident(t))
        return "single"

    def scan(prefix):
        for d in "0123456789":
            mask = (prefix + d).ljust(8, "F")
            r = probe(mask)
            if r == "collision" and len(prefix) < 7:
                scan(prefix + d)
    scan("")
    return found
