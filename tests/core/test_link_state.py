# Link state after SND_UD (FCB, repeat buffer, readout cursor), buses with several meters
# at one address, REQ_UD1 retries, repeats with live values, the SND_UD record walk and
# the telegram layout. Byte-exact where a master would see the bytes.
from mbus_core import frame
from mbus_core.bus import Bus
from mbus_core.meter import Meter, manufacturer_code
from mbus_core.replay import replay_meter
from mbus_core.slave import Slave
from mbus_testutil import h, hexs, short, long, replies, demo_meter, demo_bus, many_records_meter

E5 = h("E5")
REQ_3_FCB = h("10 7B 03 7E 16")
SET_ADDR_7 = h("68 06 06 68 73 03 51 01 7A 07 49 16")


def one(bus, data):
    out = replies(bus, data)
    assert len(out) <= 1, out
    return out[0] if out else None


def rsp(a, access, ident="78 56 34 12", man="74 52", ver_med="01 00", records=None):
    """The demo meter's RSP_UD as a master must see it."""
    recs = records if records is not None else "02 FD 49 D2 04 02 16 C8 01"
    data = h(ident + man + ver_med) + bytes((access,)) + h("00 00 00") + h(recs)
    return long(0x08, a, 0x72, data)


def check(got, want, what):
    assert got == want, "%s: got %s want %s" % (what, hexs(got) if got else None, hexs(want))


def test_read_after_set_address_carries_new_address():
    bus = demo_bus()
    check(one(bus, REQ_3_FCB), rsp(3, 0), "first read")
    check(one(bus, SET_ADDR_7), E5, "set address")
    # jMBus starts every address at FCB=1: the same FCB as the read before
    check(one(bus, h("10 7B 07 82 16")), rsp(7, 1), "read at the new address")


def _abc():
    man = manufacturer_code("ABC")
    return man, "%02X %02X" % (man & 0xFF, man >> 8)


# (what, SND_UD that changes what a telegram carries, the next read with the same FCB)
FRESH_AFTER = [
    ("set id", long(0x73, 3, 0x51, h("0C 79 21 43 65 87")), rsp(3, 1, ident="21 43 65 87")),
    ("set identity", long(0x73, 3, 0x51, h("07 79 21 43 65 87 " + _abc()[1] + " 05 07")),
     rsp(3, 1, ident="21 43 65 87", man=_abc()[1], ver_med="05 07")),
    ("application reset", h("68 03 03 68 73 03 50 C6 16"), rsp(3, 1)),
    ("selective readout", long(0x73, 3, 0x51, h("08 16")), rsp(3, 1, records="02 16 C8 01")),
]


def test_read_after_a_changing_snd_ud_is_fresh():
    for what, command, want in FRESH_AFTER:
        bus = demo_bus()
        one(bus, REQ_3_FCB)
        check(one(bus, command), E5, what)
        check(one(bus, REQ_3_FCB), want, "read after " + what)


def test_fcb_counts_on_snd_ud_too():
    # A master that toggles FCB on every frame: 7B, 53, 7B. The second 7B is new.
    bus = Bus([many_records_meter(60)])
    t0 = one(bus, REQ_3_FCB)
    check(one(bus, long(0x53, 3, 0x52, h("78 56 34 12 FF FF FF FF"))), E5, "SND_UD")
    t1 = one(bus, REQ_3_FCB)
    assert t1[15] == 1 and t1[19:-2] != t0[19:-2], "the next telegram"
    # and a repeat of it is the whole telegram again, not the E5 of the SND_UD
    again = one(bus, REQ_3_FCB)
    assert again[19:-2] == t1[19:-2]


def test_set_address_moves_every_meter_at_that_address():
    meters = [Meter(address=3, id=10000001 + i) for i in range(3)]
    bus = Bus(meters)
    check(one(bus, long(0x53, 3, 0x51, h("01 7A 09"))), E5, "set address 3 -> 9")
    assert [m.address for m in meters] == [9, 9, 9]
    assert one(bus, short(0x40, 3)) is None
    assert one(bus, short(0x40, 9)) == E5 and bus.collisions == 2


def test_retried_req_ud1_gets_the_alarm_again():
    m = demo_meter()
    bus = Bus([m])
    m.alarm = h("02 FD 17 01 00")
    first = one(bus, h("10 7A 03 7D 16"))
    check(first, rsp(3, 0, records="02 FD 17 01 00"), "alarm")
    check(one(bus, h("10 7A 03 7D 16")), first, "alarm again (the reply was lost)")
    check(one(bus, h("10 5A 03 5D 16")), E5, "toggled: the alarm was delivered")


def test_alarm_telegram_uses_the_meters_header():
    m = demo_meter(ci=0x7A)
    m.alarm = h("02 FD 17 01 00")
    got = one(Bus([m]), h("10 7A 03 7D 16"))
    check(got, long(0x08, 3, 0x7A, h("00 00 00 00 02 FD 17 01 00")), "CI 7A alarm")


class Growing:
    """A record whose value grows on every encode (a live counter)."""
    dynamic = True

    def __init__(self):
        self.value = 1030

    def encode(self):
        self.value += 1
        return bytes((0x04, 0x13, self.value & 0xFF, self.value >> 8, 0, 0))


def test_repeats_carry_live_values_by_default():
    bus = Bus([demo_meter(records=[Growing()])])
    values = []
    for _ in range(3):
        r = one(bus, short(0x7B, 3))   # wmbusmeters: 7B forever
        values.append(r[21] | (r[22] << 8))
    assert values == [1031, 1032, 1033], values


def test_strict_repeat_option_repeats_byte_for_byte():
    bus = Bus([Slave(demo_meter(records=[Growing()]), strict_repeat=True)])
    first = one(bus, short(0x7B, 3))
    assert one(bus, short(0x7B, 3)) == first
    assert one(bus, short(0x5B, 3)) != first


def test_live_repeat_never_skips_a_telegram():
    bus = Bus([many_records_meter(60)])
    t0 = one(bus, short(0x7B, 3))
    t1 = one(bus, short(0x5B, 3))
    again = one(bus, short(0x5B, 3))   # lost reply: the same telegram (fresh access number)
    assert again[19:-2] == t1[19:-2] and t1[19:-2] != t0[19:-2]
    assert one(bus, short(0x7B, 3))[19:-2] == t0[19:-2]   # two telegrams: wraps


def test_data_send_walks_bcd_and_binary_lvars():
    for lvar in ("C4 12 34 56 78", "E2 34 12", "D2 99 99"):
        bus = demo_bus()
        data = h("0D FD 11 " + lvar + " 01 7A 09")
        check(one(bus, long(0x53, 3, 0x51, data)), E5, lvar)
        assert bus.slaves[0].meter.address == 9, lvar
        err = one(bus, short(0x7B, 9))   # the LVAR record is not writable: error 00
        check(err, long(0x08, 9, 0x70, h("00")), lvar)


def test_selective_readout_with_any_vif():
    recs = [h("04 13 01 00 00 00"), h("44 13 02 00 00 00"), h("42 6C 01 01")]
    bus = Bus([demo_meter(records=recs)])
    one(bus, long(0x53, 3, 0x51, h("48 7E")))   # storage 1, any VIF
    r = one(bus, REQ_3_FCB)
    check(r[19:-2], h("44 13 02 00 00 00 42 6C 01 01"), "storage 1 records")


def test_set_date_time_is_refused_with_an_error():
    bus = demo_bus()
    check(one(bus, long(0x53, 3, 0x51, h("04 6D 32 0B 6B 2B"))), E5, "set date/time")
    check(one(bus, REQ_3_FCB), long(0x08, 3, 0x70, h("00")), "error reply")


def test_last_telegram_uses_the_whole_room():
    # 40 records of 6 bytes = 240 bytes: exactly the room after a 12-byte header
    m = many_records_meter(40)
    r = one(Bus([m]), REQ_3_FCB)
    assert m.telegram_count() == 1 and r[1] == 255 and r[-3] != 0x1F


def test_split_never_overflows_a_telegram():
    for n in (39, 40, 41, 79, 80, 81):
        m = many_records_meter(n)
        bus = Bus([m])
        m.refresh()
        got = b""
        for k in range(m.telegram_count()):
            r = one(bus, short(0x5B | (0x20 * (k & 1)), 3))
            assert len(r) <= frame.MAX_FRAME
            more = k + 1 < m.telegram_count()
            assert (r[-3] == 0x1F) == more, (n, k)
            got += r[19:-3] if more else r[19:-2]
        assert got == b"".join(m.records), n


def test_replay_of_msb_first_header():
    man = manufacturer_code("ABC")
    app = bytes((0x76, 0x12, 0x34, 0x56, 0x78, man >> 8, man & 0xFF, 0x05, 0x07,
                 0x00, 0x00, 0x00, 0x00, 0x04, 0x13, 0x01, 0x00, 0x00, 0x00))
    m = replay_meter([app], address=3)
    assert (m.id, m.manufacturer, m.version, m.medium) == (12345678, man, 5, 7)
    sel = long(0x73, 0xFD, 0x52, h("78 56 34 12") + bytes((man & 0xFF, man >> 8)) + h("05 07"))
    assert one(Bus([m]), sel) == E5
