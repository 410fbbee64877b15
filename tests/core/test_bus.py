# A bus of many meters on one line: routing and what overlapping replies look like.
from mbus_core.bus import Bus
from mbus_core.meter import Meter
from mbus_testutil import h, long, short, replies

E5 = h("E5")


def meters(n):
    return [Meter(address=i + 1, id=10000000 + i, records=[h("04 13") + bytes((i, 0, 0, 0))])
            for i in range(n)]


def one(bus, data):
    out = replies(bus, data)
    return out[0] if out else None


def test_primary_scan_finds_each_meter_once():
    bus = Bus(meters(5))
    found = [a for a in range(251) if one(bus, short(0x40, a)) == E5]
    assert found == [1, 2, 3, 4, 5]


def test_each_meter_answers_its_own_address():
    bus = Bus(meters(250))
    for a in (1, 77, 250):
        r = one(bus, short(0x5B, a))
        assert r[5] == a and r[21] == a - 1


def test_two_meters_on_one_address_collide_as_bitwise_and():
    m1 = Meter(address=5, id=11111111, records=[h("01 FD 1B 0F")])
    m2 = Meter(address=5, id=22222222, records=[h("01 FD 1B F0")])
    bus = Bus([m1, m2])
    r = one(bus, short(0x5B, 5))
    a = one(Bus([Meter(address=5, id=11111111, records=[h("01 FD 1B 0F")])]), short(0x5B, 5))
    b = one(Bus([Meter(address=5, id=22222222, records=[h("01 FD 1B F0")])]), short(0x5B, 5))
    assert r == bytes(x & y for x, y in zip(a, b))
    assert bus.collisions == 1


def test_broadcast_254_and_of_all_replies():
    bus = Bus(meters(3))
    r = one(bus, short(0x40, 254))
    assert r == E5  # E5 & E5 & E5
    r = one(bus, short(0x5B, 254))
    assert r[6] == 0x72 and bus.collisions == 2


def test_different_lengths_overlap_keeps_longer_tail():
    m1 = Meter(address=5, records=[h("01 FD 1B 0F")])
    m2 = Meter(address=5, records=[h("01 FD 1B 0F 02 FD 1B 00 00")])
    r = one(Bus([m1, m2]), short(0x5B, 5))
    b = one(Bus([Meter(address=5, records=[h("01 FD 1B 0F 02 FD 1B 00 00")])]), short(0x5B, 5))
    assert len(r) == len(b)
    assert r[-5:] == b[-5:]


def test_wildcard_selection_selects_all_matching_then_collide():
    bus = Bus(meters(12))  # IDs 10000000..10000011
    assert one(bus, long(0x73, 0xFD, 0x52, h("FF FF 00 10 FF FF FF FF"))) == E5
    assert sum(1 for s in bus.slaves if s.selected) == 12
    # narrow down to the IDs whose last digit is 1 (low nibble of the first byte)
    assert one(bus, long(0x73, 0xFD, 0x52, h("F1 00 00 10 FF FF FF FF"))) == E5
    sel = [s.meter.id for s in bus.slaves if s.selected]
    assert sel == [10000001, 10000011]
    r = one(bus, short(0x5B, 253))
    assert r is not None and bus.collisions >= 1
    assert one(bus, long(0x73, 0xFD, 0x52, h("11 00 00 10 FF FF FF FF"))) == E5
    r = one(bus, short(0x5B, 253))
    assert r[7:11] == h("11 00 00 10")


def test_secondary_scan_walk_like_libmbus():
    # libmbus narrows the ID digit by digit from the most significant one (F = any)
    ids = [12345678, 12999999, 87654321]
    bus = Bus([Meter(address=0, id=i) for i in ids])
    found = []

    def probe(mask):
        req = bytes.fromhex(mask[6:8] + mask[4:6] + mask[2:4] + mask[0:2]) + h("FF FF FF FF")
        out = replies(bus, long(0x73, 0xFD, 0x52, req))
        return bool(out)

    def walk(prefix):
        for d in "0123456789":
            mask = (prefix + d + "F" * 8)[:8]
            if probe(mask):
                if len(prefix) == 7:
                    found.append(int(prefix + d))
                else:
                    walk(prefix + d)
    walk("")
    assert found == sorted(ids)


def test_address_change_moves_routing():
    bus = Bus(meters(3))
    assert one(bus, long(0x53, 2, 0x51, h("01 7A 09"))) == E5
    assert one(bus, short(0x40, 2)) is None
    assert one(bus, short(0x40, 9)) == E5
    assert bus.slaves[1].meter.address == 9


def test_selected_meter_keeps_selection_across_others():
    bus = Bus(meters(3))
    one(bus, long(0x73, 0xFD, 0x52, h("02 00 00 10 FF FF FF FF")))
    r = one(bus, short(0x5B, 253))
    assert r[7:11] == h("02 00 00 10")
    assert one(bus, short(0x40, 253)) == E5
    assert one(bus, short(0x5B, 253)) is None


def test_two_lines_onto_the_same_meters_keep_their_own_half_frames():
    from mbus_core.frame import FrameParser
    bus = Bus(meters(3))
    line_a, line_b = FrameParser(), FrameParser()
    req_a = short(0x5B, 1)
    req_b = short(0x40, 2)
    bus.feed_line(line_a, req_a, 0, 3)          # half a frame on line A
    bus.feed_line(line_b, req_b)                # a whole one on line B
    assert bytes(bus.reply[:bus.reply_len]) == E5
    bus.feed_line(line_a, req_a, 3, 5)          # line A completes its frame
    assert bus.reply[:bus.reply_len][5] == 1    # the RSP_UD of meter 1
    # an address set through one line holds for the other
    bus.feed_line(line_b, long(0x53, 2, 0x51, h("01 7A 09")))
    bus.feed_line(line_a, short(0x40, 9))
    assert bytes(bus.reply[:bus.reply_len]) == E5
