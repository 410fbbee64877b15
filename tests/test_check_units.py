"""mbus-check's parts without a process: reply validation, PARMRK decoding, secondary
addresses, telegram positions, the report, and the serial-only rules (parity, gaps)
against the core's Bus behind a stand-in serial line."""
import json
import os

import pytest

from mbus_core.bus import Bus
from mbus_core.meter import Meter
from mbus_tools import check_frames as FR
from mbus_tools import check_link
from mbus_tools.check_io import Exchange, MarkDecoder, line_kind, url_of
from mbus_tools.check_report import FAIL, PASS, Report, Result, selected
from mbus_tools.check_session import Session
from tests.checkhelp import DEMO_RSP_UD

DEMO = DEMO_RSP_UD   # the demo meter's telegram: address 3, checksum 57


# -- replies ---------------------------------------------------------------------------
def test_a_good_reply_has_no_problems():
    assert FR.check_reply(b"\xe5") == ("ack", b"\xe5", [], True)
    assert FR.check_reply(DEMO, 3) == ("long", DEMO, [], True)
    assert FR.check_reply(b"") == (None, b"", [], False)


def _broken(data, want=3):
    kind, _, problems, intact = FR.check_reply(data, want)
    return kind, problems, intact


def test_reply_problems_in_words():
    bad_cs = DEMO[:-2] + b"\x00\x16"
    assert _broken(bad_cs) == ("long", ["checksum 00, the bytes sum to 57"], False)
    assert _broken(DEMO[:-1] + b"\x17")[1] == ["stop byte 17, not 16"]
    assert _broken(DEMO[:2] + b"\x19" + DEMO[3:])[1] == ["L fields differ: 18 and 19"]
    assert _broken(DEMO[:20])[1] == ["incomplete frame: 20 of 30 bytes (L = 24)"]
    assert _broken(b"\x3f\x00")[1][0].startswith("not a frame: starts with 3F")
    master = DEMO[:4] + b"\x53" + DEMO[5:-2] + bytes(((sum(DEMO[4:-2]) + 0x4B) & 0xFF,
                                                      0x16))
    assert _broken(master)[1] == ["C field 53 is a master's (PRM bit set)"]
    assert _broken(b"\x10\x40\x03\x43\x16")[1] == [
        "a short frame (10 C A CS 16) is no reply of a slave"]


def test_wrong_address_and_trailing_bytes_leave_the_frame_usable():
    assert _broken(DEMO, 7) == ("long", ["reply to address 7 carries address 3"], True)
    assert _broken(DEMO + b"\x01\x02") == (
        "long", ["2 byte(s) after the frame's end: 01 02"], True)
    assert _broken(b"\xe5\xe5")[2] is True


# -- PARMRK ----------------------------------------------------------------------------
def test_parity_marks_are_undone_across_chunks():
    d = MarkDecoder()
    assert d.feed(b"\x68\xff\xff\x10") == (b"\x68\xff\x10", [])
    assert d.feed(b"\x01\xff") == (b"\x01", [])          # the escape waits for its rest
    assert d.feed(b"\x00") == (b"", [])
    assert d.feed(b"\x42\x16") == (b"\x42\x16", [0])    # 42 came with a parity error


# -- addresses -------------------------------------------------------------------------
def test_secondary_addresses():
    sec = FR.Secondary.parse("23456789745202FF")   # libmbus order: TST 0x5274, v2, any
    assert (sec.ident, sec.manufacturer, sec.version, sec.medium) == (
        "23456789", 0x5274, 2, 0xFF)
    assert sec.data() == bytes.fromhex("89674523 7452 02 FF")
    assert sec.data(msb_first=True) == bytes.fromhex("23456789 5274 02 FF")
    enhanced = sec.like(fab="90001234")
    assert enhanced.data()[8:] == bytes.fromhex("0C78 34120090")
    assert FR.Secondary.parse("1234567F").ident == "1234567F"
    for bad in ("1234", "1234567A", "12345678XYZ0FFFF"):
        with pytest.raises(ValueError):
            FR.Secondary.parse(bad)


def test_devices_and_urls():
    assert url_of("tcp:gw:10001") == "socket://gw:10001"
    assert url_of("tcp:10001") == "socket://127.0.0.1:10001"
    assert url_of("rfc2217://gw:4001") == "rfc2217://gw:4001"
    assert line_kind("socket://h:1") == line_kind("tcp:h:1") == "net"
    assert line_kind("/dev/null") == "serial"
    master, slave = os.openpty()
    try:
        assert line_kind(os.ttyname(slave)) == "pty"
    finally:
        os.close(master)
        os.close(slave)


# -- telegram positions ----------------------------------------------------------------
def _telegram(values, more=True):
    recs = "".join("0413" + v.to_bytes(4, "little").hex() for v in values)
    user = bytes.fromhex("72 78563412 7452 01 00 00 00 0000 " + recs
                         + ("1F" if more else ""))
    return FR.Telegram(FR.frame_build.build(FR.F.LONG, 0x08, 3, user[0], user[1:]))


def test_position_by_heads_then_by_data():
    readout = [_telegram([1, 2]), _telegram([3, 4]), _telegram([5], more=False)]
    assert FR.position(_telegram([3, 4]), readout) == 1
    assert FR.position(_telegram([1, 9]), readout) == 0    # same place, a fresh value
    assert FR.position(_telegram([5], more=False), readout) == 2
    assert FR.position(_telegram([7, 8]), readout) is None  # ambiguous
    assert FR.position(_telegram([1, 2, 3]), readout) is None


# -- the report ------------------------------------------------------------------------
def test_report_status_summary_and_json():
    rep = Report({"device": "x"})
    rep.add(Result("fcb.repeat", PASS, "fine"))
    assert rep.exit_status() == 0
    x = Exchange("SND_NKE to 5", b"\x10\x40\x05\x45\x16", 2400)
    rep.add(Result("link.ack", FAIL, "no E5", exchanges=[x]))
    assert rep.exit_status() == 1 and rep.summary() == "1 PASS, 1 FAIL, 0 WARN, 0 SKIP"
    doc = json.loads(rep.json_text())
    assert [r["rule"] for r in doc["results"]] == ["link.ack", "fcb.repeat"]   # rule order
    assert doc["results"][0]["exchanges"] == [{"label": "SND_NKE to 5",
                                               "sent": "10 40 05 45 16", "received": "",
                                               "first_byte_ms": None, "baud": 2400}]
    assert "      received  nothing" in rep.text()
    assert selected("link.ack", ["link"]) and selected("link.ack", [])
    assert not selected("link.ack", ["link.a"]) and not selected("fcb.reset", ["link"])


def test_reply_window():
    lo, hi = check_link.window_ms(2400)
    assert round(lo, 2) == 4.58 and hi == 187.5


# -- serial-only rules, on the core behind a stand-in serial line ------------------------
class SerialBus:
    """A Line of kind "serial" whose meter is mbus_core's Bus: replies come a character
    time apart, after `gap_ms` in the middle; `ignore_parity` answers mark-parity
    requests as an 8N1 meter does."""

    kind = "serial"

    def __init__(self, gap_ms=0.0, ignore_parity=False, parity_errors=()):
        self.bus = Bus([Meter(address=3, records=[bytes.fromhex("02FD49D204")])])
        self.baud = 2400
        self.gap_ms = gap_ms
        self.ignore_parity = ignore_parity
        self.parity_errors = list(parity_errors)

    def char_s(self):
        return 11.0 / self.baud

    def exchange(self, frame, label, wait):
        x = Exchange(label, frame, self.baud)
        pos = 0
        while pos < len(frame):
            pos = self.bus.feed(frame, pos, len(frame))
        data = bytes(self.bus.reply[:self.bus.reply_len])
        if data:
            char = self.char_s() * 1000
            x.first_ms = 10.0
            x.chunks = [(10.0 + char * (i + 1) + (self.gap_ms if i >= len(data) // 2
                                                   else 0), 1) for i in range(len(data))]
            x.data = data
            x.parity_errors = list(self.parity_errors)
        return x

    def exchange_bad_parity(self, frame, label, wait):
        if self.ignore_parity:
            return self.exchange(frame, label, wait)
        return Exchange(label, frame, self.baud)


def _session(line):
    s = Session(line, 3, 0.2)
    s.start()
    return s


def test_parity_and_gaps_on_a_good_serial_meter():
    s = _session(SerialBus())
    assert check_link.check_parity(s).status == PASS
    gaps = check_link.check_gaps(s)
    assert gaps.status == PASS and gaps.message.startswith("longest pause inside a reply 0.0")


def test_an_8n1_meter_on_a_serial_line():
    s = _session(SerialBus(ignore_parity=True))
    r = check_link.check_parity(s)
    assert r.status == FAIL and "parity errors (an 8N1 meter?)" in r.message
    s = _session(SerialBus(parity_errors=[4]))
    r = check_link.check_parity(s)
    assert r.status == FAIL and "replies with parity errors" in r.message


def test_a_pause_inside_a_reply_warns():
    s = _session(SerialBus(gap_ms=40))
    r = check_link.check_gaps(s)
    assert r.status == "WARN" and "40.0 ms" in r.message
