# Conformance of the slave state machine: addresses, SND_NKE, REQ_UD2 with FCB,
# multi-telegram readout, REQ_UD1, secondary selection, SND_UD commands. The request
# bytes are those libmbus's tools send (shared/docs/libmbus-traces.md).
from mbus_core import frame
from mbus_core.codec import frame_build
from mbus_core.bus import Bus
from mbus_core.slave import Slave
from mbus_testutil import h, hexs, short, long, replies, demo_meter, demo_bus, many_records_meter

NKE_3 = h("10 40 03 43 16")
NKE_253 = h("10 40 FD 3D 16")
NKE_255 = h("10 40 FF 3F 16")
REQ_3 = h("10 5B 03 5E 16")
REQ_3_FCB = h("10 7B 03 7E 16")
REQ_253 = h("10 5B FD 58 16")
SELECT_ME = h("68 0B 0B 68 73 FD 52 78 56 34 12 FF FF FF FF D2 16")
SELECT_WILD_1 = h("68 0B 0B 68 73 FD 52 FF FF FF 1F FF FF FF FF DA 16")
SELECT_WILD_0 = h("68 0B 0B 68 73 FD 52 FF FF FF 0F FF FF FF FF CA 16")
FIRST_RSP = h("68 18 18 68 08 03 72 78 56 34 12 74 52 01 00 00 00 00 00 "
              "02 FD 49 D2 04 02 16 C8 01 57 16")
E5 = h("E5")


def one(bus, data):
    out = replies(bus, data)
    assert len(out) <= 1, out
    return out[0] if out else None


# (what, frames sent before, request, expected reply or None for silence)
CONFORMANCE = [
    ("SND_NKE to own address", [], NKE_3, E5),
    ("SND_NKE to 0 (not ours)", [], h("10 40 00 40 16"), None),
    ("SND_NKE to 254", [], h("10 40 FE 3E 16"), E5),
    ("SND_NKE to 255 acts silently", [], NKE_255, None),
    ("SND_NKE to 253 unselected", [], NKE_253, None),
    ("SND_NKE to 253 when selected", [SELECT_ME], NKE_253, E5),
    ("SND_NKE to 251", [], h("10 40 FB 3B 16"), None),
    ("SND_NKE to 252", [], h("10 40 FC 3C 16"), None),
    ("REQ_UD2 first reply as in the libmbus trace", [], REQ_3, FIRST_RSP),
    ("REQ_UD2 to another address", [], h("10 5B 04 5F 16"), None),
    ("REQ_UD2 to 254", [], h("10 5B FE 59 16"), FIRST_RSP),
    ("REQ_UD2 to 255 never answered", [], h("10 5B FF 5A 16"), None),
    ("REQ_UD2 to 253 unselected", [], REQ_253, None),
    ("REQ_UD2 to 253 selected", [SELECT_ME],
     REQ_253, FIRST_RSP),
    ("REQ_UD1 without alarm", [], h("10 5A 03 5D 16"), E5),
    ("select by full secondary address", [], SELECT_ME, E5),
    ("select by wildcard 1FFFFFFF? (ID 12345678 -> digit 1 first)", [], SELECT_WILD_1, E5),
    ("wildcard that does not match", [], SELECT_WILD_0, None),
    ("select to a primary address is not a selection", [],
     h("68 0B 0B 68 73 03 52 78 56 34 12 FF FF FF FF D8 16"), E5),
    ("application reset", [], h("68 03 03 68 53 03 50 A6 16"), E5),
    ("application reset with subcode", [], long(0x53, 3, 0x50, h("10")), E5),
    ("set primary address", [], h("68 06 06 68 53 03 51 01 7A 07 29 16"), E5),
    ("baud switch 9600", [], h("68 03 03 68 53 03 BD 13 16"), E5),
    ("unknown CI acknowledged", [], long(0x53, 3, 0x33), E5),
    ("RSP_UD from another slave ignored", [], long(0x08, 3, 0x72, bytes(12)), None),
    ("long frame with REQ_UD2 C field ignored", [], long(0x5B, 3, 0x51), None),
    ("bad checksum ignored", [], h("10 5B 03 5F 16"), None),
]


def test_conformance_table():
    for what, before, request, want in CONFORMANCE:
        for chunks in (None, [1], [2, 3]):
            bus = demo_bus()
            for f in before:
                replies(bus, f)
            got = replies(bus, request, chunks)
            got = got[0] if got else None
            assert got == want, "%s: got %s want %s" % (
                what, hexs(got) if got else None, hexs(want) if want else None)


def test_garbage_before_and_after_requests():
    bus = demo_bus()
    data = h("00 FF 33") + REQ_3 + h("55 AA")
    assert replies(bus, data) == [FIRST_RSP]
    bus = demo_bus()
    assert replies(bus, data, [1]) == [FIRST_RSP]


def test_access_number_counts_per_new_telegram():
    bus = demo_bus()
    seen = []
    for i in range(4):
        one(bus, NKE_3)
        r = one(bus, REQ_3)
        seen.append(r[15])
    assert seen == [0, 1, 2, 3]


def test_same_fcb_repeats_reply_unchanged():
    bus = Bus([Slave(demo_meter(), strict_repeat=True)])
    one(bus, NKE_3)
    first = one(bus, REQ_3_FCB)
    again = one(bus, REQ_3_FCB)
    assert again == first
    toggled = one(bus, REQ_3)
    assert toggled != first and toggled[15] == first[15] + 1


def test_fcv_clear_never_repeats():
    bus = demo_bus()
    a = one(bus, short(0x4B, 3))
    b = one(bus, short(0x4B, 3))
    assert a[15] + 1 == b[15]


def test_snd_nke_resets_fcb_state():
    bus = demo_bus()
    first = one(bus, REQ_3)
    one(bus, NKE_3)
    after = one(bus, REQ_3)   # same FCB, but after SND_NKE: fresh data
    assert after[15] == first[15] + 1


def test_multi_telegram_readout():
    m = many_records_meter(60)  # 360 bytes of records: two telegrams
    bus = Bus([m])
    one(bus, NKE_3)
    fcb = 0x20
    telegrams = []
    for i in range(3):
        r = one(bus, short(0x5B | fcb, 3))
        telegrams.append(r)
        fcb ^= 0x20
    assert m.telegram_count() == 2
    t0, t1, t2 = telegrams
    # every telegram but the last ends with DIF 1F
    assert t0[-3] == 0x1F and t1[-3] != 0x1F
    assert t0[15] == 0 and t1[15] == 1 and t2[15] == 2
    # after the last telegram the readout starts over
    assert t2[19:-2] == t0[19:-2]
    # the records of both telegrams together are all the records, in order
    recs = t0[19:-3] + t1[19:-2]
    assert recs == b"".join(m.records)
    assert len(t0) <= frame.MAX_FRAME


def test_multi_telegram_repeat_of_middle_telegram():
    bus = Bus([many_records_meter(60)])
    one(bus, NKE_3)
    t0 = one(bus, short(0x7B, 3))
    t1 = one(bus, short(0x5B, 3))
    again = one(bus, short(0x5B, 3))
    assert again[19:-2] == t1[19:-2] and t1[19:-2] != t0[19:-2]


def test_snd_nke_restarts_multi_telegram_readout():
    bus = Bus([many_records_meter(60)])
    one(bus, NKE_3)
    t0 = one(bus, short(0x7B, 3))
    one(bus, NKE_3)
    again = one(bus, short(0x7B, 3))
    assert again[19:-2] == t0[19:-2]


def test_req_ud1_delivers_alarm_and_rsp_ud_has_acd():
    m = demo_meter()
    bus = Bus([m])
    m.alarm = h("02 FD 17 01 00")  # error flags record
    r = one(bus, REQ_3)
    assert r[4] == 0x28  # RSP_UD with ACD
    a = one(bus, h("10 7A 03 7D 16"))
    assert a[4] == 0x08 and a[6] == 0x72 and a[19:-2] == h("02 FD 17 01 00")
    assert one(bus, h("10 5A 03 5D 16")) == E5
    r = one(bus, REQ_3)
    assert r[4] == 0x08


def test_selection_then_deselect_by_other_selection():
    bus = demo_bus()
    assert one(bus, SELECT_ME) == E5
    assert one(bus, REQ_253) is not None
    assert one(bus, SELECT_WILD_0) is None   # another meter selected: we are not
    assert one(bus, REQ_253) is None


def test_selection_wildcards_on_each_field():
    m = demo_meter()  # 12345678 TST v1 medium 0
    man = m.manufacturer
    cases = [
        ("FF FF FF FF FF FF FF FF", True),
        ("78 56 34 12 %02X %02X 01 00" % (man & 0xFF, man >> 8), True),
        ("F8 5F 3F 1F FF FF FF FF", True),
        ("F7 FF FF FF FF FF FF FF", False),
        ("78 56 34 12 FF FF 02 FF", False),
        ("78 56 34 12 FF FF FF 07", False),
        ("78 56 34 12 00 00 FF FF", False),
        ("78 56 34 12 FF FF 01 00", True),
    ]
    for sel, want in cases:
        bus = Bus([demo_meter()])
        got = one(bus, long(0x73, 0xFD, 0x52, h(sel)))
        assert (got == E5) == want, sel
        assert bus.slaves[0].selected == want


def test_enhanced_selection_with_fabrication_number():
    sel = "78 56 34 12 FF FF FF FF 0C 78 %s"
    for fab, req, want in ((11223344, "44 33 22 11", True), (11223344, "44 33 22 10", False),
                           (11223344, "FF FF FF FF", True), (None, "44 33 22 11", False),
                           (11223344, "4F 3F FF FF", True)):
        bus = Bus([demo_meter(fabrication=fab)])
        got = one(bus, long(0x73, 0xFD, 0x52, h(sel % req)))
        assert (got == E5) == want, (fab, req)


def test_ci56_switch():
    msb = h("12 34 56 78 FF FF FF FF")
    bus = Bus([Slave(demo_meter(), ci56="select")])
    assert one(bus, long(0x73, 0xFD, 0x56, msb)) == E5
    assert one(bus, REQ_253) is not None
    bus = Bus([Slave(demo_meter())])  # default: CI 56 deselects
    one(bus, SELECT_ME)
    assert one(bus, long(0x73, 0xFD, 0x56)) == E5
    assert one(bus, REQ_253) is None
    try:
        Slave(demo_meter(), ci56="maybe")
    except ValueError:
        return
    assert False


def test_set_primary_address_then_answer_there():
    bus = demo_bus()
    changes = []
    bus.on_change = lambda s, what: changes.append((what, s.meter.address))
    assert one(bus, h("68 06 06 68 53 03 51 01 7A 07 29 16")) == E5
    assert changes == [("address", 7)]
    assert one(bus, NKE_3) is None
    assert one(bus, h("10 40 07 47 16")) == E5
    r = one(bus, h("10 5B 07 62 16"))
    assert r[5] == 7


def test_set_address_out_of_range_is_refused_with_error_reply():
    bus = demo_bus()
    assert one(bus, long(0x53, 3, 0x51, h("01 7A FB"))) == E5
    assert bus.slaves[0].meter.address == 3
    r = one(bus, REQ_3)
    assert r == h("68 04 04 68 08 03 70 00 7B 16")
    assert one(bus, short(0x7B, 3))[6] == 0x72  # the error is reported once


def test_set_id():
    bus = demo_bus()
    changes = []
    bus.on_change = lambda s, what: changes.append(what)
    assert one(bus, long(0x53, 3, 0x51, h("0C 79 21 43 65 87"))) == E5
    assert bus.slaves[0].meter.id == 87654321 and changes == ["id"]
    r = one(bus, REQ_3)
    assert r[7:11] == h("21 43 65 87")
    # select by the new ID
    assert one(bus, long(0x73, 0xFD, 0x52, h("21 43 65 87 FF FF FF FF"))) == E5


def test_set_id_rejects_non_bcd():
    bus = demo_bus()
    one(bus, long(0x53, 3, 0x51, h("0C 79 2A 43 65 87")))
    assert bus.slaves[0].meter.id == 12345678
    assert one(bus, REQ_3)[6] == 0x70


def test_set_full_identity():
    bus = demo_bus()
    one(bus, long(0x53, 3, 0x51, h("07 79 21 43 65 87 A5 15 07 04")))
    m = bus.slaves[0].meter
    assert (m.id, m.manufacturer, m.version, m.medium) == (87654321, 0x15A5, 7, 4)
    r = one(bus, REQ_3)
    assert r[7:15] == h("21 43 65 87 A5 15 07 04")


def test_selective_and_global_readout():
    m = demo_meter(records=[h("04 13 01 00 00 00"), h("02 FD 49 D2 04"), h("02 16 C8 01")])
    bus = Bus([m])
    # ask for the voltage record only (data field 8 = selection for readout)
    assert one(bus, long(0x53, 3, 0x51, h("08 FD 49"))) == E5
    r = one(bus, REQ_3)
    assert r[19:-2] == h("02 FD 49 D2 04")
    # global readout: everything again
    assert one(bus, long(0x53, 3, 0x51, h("7F"))) == E5
    r = one(bus, REQ_3_FCB)
    assert r[19:-2] == h("04 13 01 00 00 00 02 FD 49 D2 04 02 16 C8 01")


def test_application_reset_clears_selection():
    m = demo_meter(records=[h("04 13 01 00 00 00"), h("02 FD 49 D2 04")])
    bus = Bus([m])
    one(bus, long(0x53, 3, 0x51, h("08 13")))
    assert one(bus, REQ_3)[19:-2] == h("04 13 01 00 00 00")
    one(bus, h("68 03 03 68 53 03 50 A6 16"))
    assert one(bus, REQ_3_FCB)[19:-2] == h("04 13 01 00 00 00 02 FD 49 D2 04")


def test_baud_switch_reported_after_ack():
    bus = demo_bus()
    changes = []
    bus.on_change = lambda s, what: changes.append(what)
    for ci, rate in ((0xB8, 300), (0xBB, 2400), (0xBD, 9600), (0xBF, 38400)):
        assert one(bus, long(0x53, 3, ci)) == E5
        assert bus.new_baud == rate
    assert changes == ["baud"] * 4
    one(bus, REQ_3)
    assert bus.new_baud == 0


def test_read_only_refuses_changes():
    bus = Bus([Slave(demo_meter(), read_only=True)])
    assert one(bus, h("68 06 06 68 53 03 51 01 7A 07 29 16")) == E5
    assert bus.slaves[0].meter.address == 3
    assert one(bus, REQ_3) == h("68 04 04 68 08 03 70 00 7B 16")
    assert one(bus, long(0x53, 3, 0xBD)) == E5 and bus.new_baud == 0
    one(bus, long(0x53, 3, 0x51, h("0C 79 21 43 65 87")))
    assert bus.slaves[0].meter.id == 12345678


def test_unknown_ci_reported_as_unimplemented():
    bus = demo_bus()
    assert one(bus, long(0x53, 3, 0x33, h("01 02"))) == E5
    assert one(bus, REQ_3) == h("68 04 04 68 08 03 70 01 7C 16")


def test_truncated_data_send_record():
    bus = demo_bus()
    assert one(bus, long(0x53, 3, 0x51, h("0C 79 21 43"))) == E5
    assert one(bus, REQ_3)[6:8] == h("70 04")


def test_broadcast_255_acts_without_answer():
    bus = demo_bus()
    assert one(bus, long(0x53, 0xFF, 0x51, h("01 7A 09"))) is None
    assert bus.slaves[0].meter.address == 9


def test_status_and_signature_in_header():
    bus = demo_bus(status=0x04, signature=0xBEEF)
    r = one(bus, REQ_3)
    assert r[16] == 0x04 and r[17:19] == h("EF BE")


def test_short_header_and_no_header_options():
    r = one(Bus([demo_meter(ci=0x7A)]), REQ_3)
    assert r[6] == 0x7A and r[7:11] == h("00 00 00 00") and r[11:-2] == h("02 FD 49 D2 04 02 16 C8 01")
    r = one(Bus([demo_meter(ci=0x78)]), REQ_3)
    assert r[6] == 0x78 and r[7:-2] == h("02 FD 49 D2 04 02 16 C8 01")


def test_fixed_data_structure():
    # CI 73: ID, access, status, medium/unit bytes, two BCD counters
    m = demo_meter(ci=0x73, medium=7, fixed=(0x0C, 1234, 0x13, 5678))
    r = one(Bus([m]), REQ_3)
    assert r[6] == 0x73
    assert r[7:23] == h("78 56 34 12 00 00 CC 53 34 12 00 00 78 56 00 00")


def test_replay_meter_answers_verbatim():
    from mbus_core.replay import replay_meter
    app = h("72 95 08 12 11 83 14 02 04 17 00 00 00 04 13 01 02 03 04")
    m = replay_meter([app], address=5)
    bus = Bus([m])
    r = one(bus, h("10 5B 05 60 16"))
    assert r[4:6] == h("08 05") and r[6:-2] == app
    assert (m.id, m.version, m.medium) == (11120895, 2, 4)
    # selectable by its captured identity
    bus = Bus([replay_meter([app], address=5)])
    assert one(bus, long(0x73, 0xFD, 0x52, h("95 08 12 11 FF FF FF FF"))) == E5


def test_meter_rejects_bad_identity():
    for kw in ({"id": 100000000}, {"address": 251}, {"manufacturer": "T1T"}, {"ci": 0x71}):
        try:
            demo_meter(**kw)
        except ValueError:
            continue
        assert False, kw


def test_ignore_fcb_quirk_never_repeats():
    bus = Bus([Slave(demo_meter(), ignore_fcb=True)])
    a = one(bus, REQ_3_FCB)
    b = one(bus, REQ_3_FCB)
    assert b[15] == a[15] + 1


def test_busy_reply():
    bus = Bus([Slave(demo_meter())])
    bus.slaves[0].busy = True
    assert one(bus, REQ_3) == h("68 04 04 68 08 03 70 08 83 16")
    bus.slaves[0].busy = False
    assert one(bus, REQ_3_FCB)[6] == 0x72
    assert bus.responder is bus.slaves[0]


def test_selective_readout_with_plain_text_unit_and_vife():
    # DIF 02, VIF FC (plain text, extension), "HR%" reversed, VIFE 74, data
    text_rec = h("02 FC 03 48 52 25 74 D4 11")
    m = demo_meter(records=[h("02 FD 49 D2 04"), text_rec])
    bus = Bus([m])
    one(bus, long(0x53, 3, 0x51, h("08 FC 03 48 52 25 74")))
    assert one(bus, REQ_3)[19:-2] == text_rec


class FlakySensor:
    """A record whose value callback fails while `broken` is set."""
    dynamic = True

    def __init__(self):
        self.broken = False

    def encode(self):
        if self.broken:
            raise OSError("sensor not answering")
        return h("02 FD 49 D2 04")


def test_failing_value_callback_flags_status_and_meter_keeps_answering():
    sensor = FlakySensor()
    m = demo_meter(records=[sensor, h("02 16 C8 01")], status=0x04)
    bus = Bus([m])
    r = one(bus, REQ_3)
    assert r[16] == 0x04 and r[19:-2] == h("02 FD 49 D2 04 02 16 C8 01")
    sensor.broken = True
    r = one(bus, REQ_3_FCB)
    assert r[16] == 0x14 and r[19:-2] == h("02 16 C8 01")
    assert m.errors == 1
    sensor.broken = False
    r = one(bus, REQ_3)
    assert r[16] == 0x04 and r[19:-2] == h("02 FD 49 D2 04 02 16 C8 01")


def test_record_too_long_for_any_telegram_is_left_out():
    huge = bytes((0x0D, 0xFD, 0x11, 0xF0)) + bytes(240)  # LVAR text longer than a telegram
    m = demo_meter(records=[h("02 FD 49 D2 04"), huge])
    r = one(Bus([m]), REQ_3)
    assert r[19:-2] == h("02 FD 49 D2 04") and m.errors == 1


def test_repeat_after_an_acknowledged_snd_ud_is_the_whole_telegram():
    bus = Bus([Slave(demo_meter(), strict_repeat=True)])
    one(bus, REQ_3_FCB)
    # a SND_UD that changes nothing the telegram carries (FCB toggled: 7B, 53, 7B)
    assert one(bus, long(0x53, 3, 0x52, h("78 56 34 12 FF FF FF FF"))) == E5
    second = one(bus, REQ_3_FCB)
    assert one(bus, REQ_3_FCB) == second  # the telegram again, byte for byte, not E5


def test_every_kind_of_reply_is_a_valid_frame():
    """Checksums of every reply layout, checked by our own parser."""
    from mbus_core.replay import replay_meter
    meters = [demo_meter(), demo_meter(ci=0x7A, status=0x13, signature=0x0102),
              demo_meter(ci=0x78), demo_meter(ci=0x73, medium=7, fixed=(0x0C, 1234, 0x13, 99)),
              many_records_meter(60, manufacturer="ZZZ", version=200, medium=255),
              replay_meter([h("72 95 08 12 11 83 14 02 04 17 00 00 00 04 13 01 02 03 04"),
                            h("72 95 08 12 11 83 14 02 04 18 00 00 00 02 FD 49 D2 04")],
                           address=3)]
    for m in meters:
        bus = Bus([m])
        m.alarm = None
        frames = [one(bus, short(0x5B | fcb, 3)) for fcb in (0x20, 0, 0x20, 0)]
        m.alarm = h("02 FD 17 01 00")
        frames.append(one(bus, short(0x7B, 3)))
        frames.append(one(bus, short(0x7A, 3)))
        for f in frames:
            p = frame.FrameParser()
            assert p.feed(f) == len(f) and p.kind == frame.LONG, hexs(f)


def test_the_packed_rsp_ud_is_the_framed_telegram():
    # Meter.write_rsp_ud packs a CI 72 telegram's frame head and data header in one go
    # (the hot path of a readout); it must send what framing write_telegram's
    # application data sends, for every header value and with an alarm waiting (ACD).
    cases = ((0, 0, None, 0, "TST", 3), (0x13, 0xABCD, b"\x01\xfd\x17\x01", 99999999,
                                        0x7FFF, 250), (0xFF, 0xFFFF, None, 1, "ZZZ", 0))
    for status, sig, alarm, ident, man, address in cases:
        m = many_records_meter(50, id=ident, manufacturer=man, address=address, version=0xFE,
                               medium=0x16)
        m.status = status
        m.signature = sig
        m.alarm = alarm
        m.refresh()
        assert m.telegram_count() == 2
        for index in range(2):
            app = bytearray(frame.MAX_FRAME)
            k = m.write_telegram(index, app, 0, 0x42)
            c = 0x28 if alarm else 0x08
            expect = frame_build.build(frame.LONG, c, address, app[0], bytes(app[1:k]))
            got = bytearray(frame.MAX_FRAME)
            n = m.write_rsp_ud(index, got, 0x42)
            assert hexs(got[:n]) == hexs(expect), (status, sig, alarm, index)
