# Link layer: the frame parser fed whole, byte by byte, in random chunks, with garbage
# around, and the frame writers.
from mbus_core import frame
from mbus_core.codec import frame_build
from mbus_testutil import h, hexs, Lcg

SHORT_NKE = h("10 40 03 43 16")
CONTROL_RESET = h("68 03 03 68 53 03 50 A6 16")
LONG_SELECT = h("68 0B 0B 68 73 FD 52 78 56 34 12 FF FF FF FF D2 16")
LONG_SET_ADDR = h("68 06 06 68 53 03 51 01 7A 07 29 16")
VALID = (SHORT_NKE, CONTROL_RESET, LONG_SELECT, LONG_SET_ADDR)


def frames_in(data, chunks=None):
    """Feed data to a fresh parser; list of (kind, c, a, ci, user data hex)."""
    p = frame.FrameParser()
    out = []
    pos = 0
    k = 0
    while pos < len(data):
        size = len(data) - pos if chunks is None else chunks[k % len(chunks)]
        k += 1
        end = min(pos + size, len(data))
        q = pos
        while q < end:
            q = p.feed(data, q, end)
            if p.kind:
                out.append((p.kind, p.c, p.a, p.ci, hexs(p.buf[p.data_start:p.data_end])))
        pos = end
    return out


def expected(f):
    if f[0] == 0x10:
        return (frame.SHORT, f[1], f[2], -1, "")
    kind = frame.CONTROL if f[1] == 3 else frame.LONG
    return (kind, f[4], f[5], f[6], hexs(f[7:-2]))


def test_each_frame_whole():
    for f in VALID:
        assert frames_in(f) == [expected(f)], hexs(f)


def test_each_frame_byte_by_byte():
    for f in VALID:
        assert frames_in(f, [1]) == [expected(f)], hexs(f)


def test_each_frame_random_chunks():
    rnd = Lcg(7)
    for f in VALID:
        for _ in range(20):
            chunks = [1 + rnd.next(9) for _ in range(8)]
            assert frames_in(f, chunks) == [expected(f)], (hexs(f), chunks)


def test_all_frames_back_to_back_with_garbage_around():
    rnd = Lcg(3)
    data = b""
    want = []
    for f in VALID:
        # garbage without start bytes, so that no frame can begin inside it
        junk = bytes(b for b in rnd.bytes(12) if b not in (0x10, 0x68))
        data += junk + f
        want.append(expected(f))
    data += b"\x01\x02\x03"
    for chunks in (None, [1], [2, 3, 5], [64]):
        assert frames_in(data, chunks) == want, chunks


def test_trailing_bytes_do_not_disturb_the_frame():
    data = SHORT_NKE + h("99 98 97")
    assert frames_in(data) == [expected(SHORT_NKE)]


def test_short_frame_bad_checksum_is_dropped():
    assert frames_in(h("10 40 03 44 16")) == []


def test_short_frame_bad_stop_is_dropped():
    assert frames_in(h("10 40 03 43 17")) == []


def test_long_frame_bad_checksum_is_dropped():
    bad = bytearray(LONG_SELECT)
    bad[-2] ^= 1
    assert frames_in(bytes(bad)) == []


def test_long_frame_bad_stop_is_dropped():
    bad = bytearray(LONG_SELECT)
    bad[-1] = 0x17
    assert frames_in(bytes(bad)) == []


def test_long_frame_length_fields_differ():
    assert frames_in(h("68 03 04 68 53 03 50 A6 16")) == []


def test_long_frame_length_below_three():
    assert frames_in(h("68 02 02 68 53 03 56 16")) == []


def test_long_frame_second_start_byte_wrong():
    assert frames_in(h("68 03 03 69 53 03 50 A6 16")) == []


def test_lone_ack_byte_is_ignored():
    assert frames_in(h("E5") + SHORT_NKE) == [expected(SHORT_NKE)]


def test_resync_finds_frame_inside_a_broken_long_frame():
    # "68 05 05 68" claims 11 bytes; the valid short frame inside them is still found
    data = h("68 05 05 68") + SHORT_NKE + h("00 00")
    for chunks in (None, [1], [3]):
        assert frames_in(data, chunks) == [expected(SHORT_NKE)], chunks


def test_resync_after_broken_frame_and_following_frames():
    data = h("10 40 03 99 16") + SHORT_NKE + LONG_SELECT
    assert frames_in(data) == [expected(SHORT_NKE), expected(LONG_SELECT)]
    assert frames_in(data, [1]) == [expected(SHORT_NKE), expected(LONG_SELECT)]


def test_idle_drops_half_frame():
    p = frame.FrameParser()
    p.feed(LONG_SELECT, 0, 6)
    assert p.receiving()
    p.idle()
    assert not p.receiving()
    pos = p.feed(LONG_SELECT, 6, len(LONG_SELECT))
    assert pos == len(LONG_SELECT) and p.kind == 0
    p.feed(SHORT_NKE)
    assert p.kind == frame.SHORT


def test_largest_long_frame():
    data = bytes(range(252))
    f = frame_build.build(frame.LONG, 0x08, 1, 0x72, data)
    assert len(f) == frame.MAX_FRAME
    assert f[1] == f[2] == 255
    assert frames_in(f) == [expected(f)]
    assert frames_in(f, [1]) == [expected(f)]


def test_counters():
    p = frame.FrameParser()
    p.feed(h("10 40 03 99 16"))
    p.feed(SHORT_NKE)
    assert p.frames == 1 and p.errors >= 1


def test_writers():
    buf = bytearray(frame.MAX_FRAME)
    assert frame.write_ack(buf) == 1 and buf[0] == 0xE5
    n = frame_build.write_short(buf, 0x5B, 0x03)
    assert bytes(buf[:n]) == h("10 5B 03 5E 16")
    n = frame_build.write_long(buf, 0x53, 0x03, 0x50)
    assert bytes(buf[:n]) == CONTROL_RESET
    n = frame_build.write_long(buf, 0x53, 0x03, 0x51, h("01 7A 07"))
    assert bytes(buf[:n]) == LONG_SET_ADDR
    assert frame_build.build(frame.LONG, 0x73, 0xFD, 0x52, h("78 56 34 12 FF FF FF FF")) == LONG_SELECT


def test_write_long_rejects_oversized_data():
    try:
        frame_build.write_long(bytearray(300), 0x08, 1, 0x72, bytes(253))
    except ValueError:
        return
    assert False, "no error"


def test_whole_short_frame_leaves_the_parser_as_bytes_do():
    # a chunk that starts with a whole short frame takes a shortcut; what it leaves must
    # be what five single bytes leave
    def state(p):
        return (p.kind, p.c, p.a, p.ci, p.data_start, p.data_end, p.frames, p.errors,
                p.receiving(), p.has_pending(), bytes(p.buf[:5]))
    for data in (h("10 7B FE 79 16"), h("10 5B 03 5E 16 10 7B 03 7E 16"),
                 h("10 5B 03 00 16 10 7B 03 7E 16"), h("10 5B 03 5E 15 68")):
        whole, single = frame.FrameParser(), frame.FrameParser()
        pos = whole.feed(data, 0, len(data))
        single.feed(data, 0, 1)
        k = 1
        while not single.kind and k < len(data):
            single.feed(data, k, k + 1)
            k += 1
        assert state(whole) == state(single), data.hex()
        assert pos == (k if single.kind else len(data))
