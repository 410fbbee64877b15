"""A fuzz campaign (hypothesis, a few thousand examples, bounded to well under a minute):

- the frame parser and the SND_UD decoder get well-formed SND_UD frames (CI 50, 51, 52, 56,
  B8..BF and random CIs) with random record contents, and the same frames broken (checksum,
  L fields, stop byte, truncated): nothing raises, a broken frame is never answered, the next
  valid frame is, and the meter keeps producing telegrams that decode;
- the records decoder gets random and mutated user data: it returns or raises its
  documented DecodeError, nothing else.
"""
import os

from hypothesis import HealthCheck, given, settings, strategies as st

from mbus_core import frame
from mbus_core.codec import frame_build
from mbus_core.codec import records as R
from mbus_core.codec import model
from mbus_core.bus import Bus
from mbus_core.meter import Meter
from tests.core.mbus_testutil import demo_meter, h, many_records_meter, feed_cuts as feed



def fuzz(n):
    # derandomized: the same examples on every run, so CI never flakes
    return settings(max_examples=n, deadline=None, derandomize=True,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
FIXTURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fixtures")

NKE_254 = h("10 40 FE 3E 16")
REQ_254 = h("10 7B FE 79 16")

# -- frames ------------------------------------------------------------------------------
DATA_SIZE = (0, 1, 2, 3, 4, 4, 6, 8, 0, 1, 2, 3, 4, 0, 6, 0)
VIFS = [0x7A, 0x79, 0x6D, 0x13, 0x06, 0x78, 0xFD, 0xFB, 0x7C, 0xFC, 0x7F, 0xFF, 0x22, 0x5B]


@st.composite
def record(draw):
    """One data record, mostly well formed, sometimes short or odd."""
    kind = draw(st.integers(0, 9))
    if kind == 0:
        return bytes([draw(st.sampled_from([0x2F, 0x7F, 0x0F, 0x1F]))])
    if kind == 1:
        return draw(st.binary(min_size=1, max_size=12))
    code = draw(st.integers(0, 15))
    dif = code | (draw(st.integers(0, 7)) << 4)
    difes = draw(st.lists(st.integers(0, 0x7F), max_size=3))
    if difes:
        dif |= 0x80
    dib = [dif] + [d | 0x80 for d in difes[:-1]] + difes[-1:]
    vif = draw(st.sampled_from(VIFS) | st.integers(0, 255))
    vib = [vif]
    if vif & 0x7F == 0x7C:
        text = draw(st.binary(max_size=6))
        vib += [len(text)] + list(text)
    if vif & 0x80:
        vifes = draw(st.lists(st.integers(0, 0x7F), min_size=1, max_size=3))
        vib += [v | 0x80 for v in vifes[:-1]] + vifes[-1:]
    if code == 0x0D:
        body = draw(st.binary(max_size=10))
        data = [len(body)] + list(body)
    else:
        data = list(draw(st.binary(min_size=DATA_SIZE[code], max_size=DATA_SIZE[code])))
    rec = bytes(dib + vib + data)
    if kind == 2:  # cut short
        rec = rec[:draw(st.integers(0, len(rec)))]
    return rec


@st.composite
def snd_ud(draw):
    """A well-formed SND_UD long frame: (c, a, ci, user data)."""
    c = draw(st.sampled_from([0x53, 0x73]))
    a = draw(st.sampled_from([3, 4, 0, 253, 254, 255]) | st.integers(0, 255))
    ci = draw(st.sampled_from([0x50, 0x51, 0x51, 0x51, 0x52, 0x56] + list(range(0xB8, 0xC0)))
              | st.integers(0, 255))
    if ci == 0x52 or ci == 0x56:
        ident = draw(st.sampled_from([h("78 56 34 12 FF FF FF FF"), h("FF FF FF FF FF FF FF FF"),
                                      h("21 43 65 87 FF FF FF FF")]) | st.binary(min_size=8, max_size=8))
        data = ident + draw(st.sampled_from([b"", h("0C 78 FF FF FF FF")]) | st.binary(max_size=8))
    elif ci == 0x50:
        data = draw(st.sampled_from([b"", b"\x00", b"\x10"]) | st.binary(max_size=4))
    else:
        data = b"".join(draw(st.lists(record(), max_size=12)))
    return c, a, ci, data[:252]


def breakage(draw, f):
    """The frame f broken in one of the ways a line breaks frames."""
    b = bytearray(f)
    how = draw(st.integers(0, 5))
    if how == 0:  # checksum
        b[-2] = (b[-2] + draw(st.integers(1, 255))) & 0xFF
    elif how == 1:  # the two L fields differ
        b[2] = (b[2] + draw(st.integers(1, 255))) & 0xFF
    elif how == 2:  # both L fields claim another length
        delta = draw(st.integers(-3, 3).filter(lambda d: d != 0))
        new = b[1] + delta
        if not 0 <= new <= 255:
            new = (b[1] + 1) & 0xFF
        b[1] = b[2] = new
    elif how == 3:  # stop byte
        b[-1] = draw(st.integers(0, 255).filter(lambda x: x != 0x16))
    elif how == 4:  # truncated
        b = b[:draw(st.integers(1, len(b) - 1))]
    else:  # one data byte flipped (the checksum no longer fits)
        i = draw(st.integers(4, len(b) - 3))
        b[i] ^= draw(st.integers(1, 255))
    return bytes(b)


def embedded_frame(data):
    """Is there a valid frame starting anywhere after the first byte? The parser hunts
    through a broken frame's bytes, so such a frame is rightly answered."""
    for i in range(1, len(data)):
        p = frame.FrameParser()
        p.feed(data, i)
        if p.kind:
            return True
    return False


def fuzz_bus():
    return Bus([demo_meter(), many_records_meter(50, address=4, id=87654321)])


def check_telegram(reply):
    """A reply is one valid frame; a long one's user data decodes (or is a CI 70 error)."""
    p = frame.FrameParser()
    pos = p.feed(reply)
    assert p.kind and pos == len(reply), reply.hex()
    if p.kind == frame.LONG:
        try:
            R.decode_user_data(bytes(p.buf[6:p.data_end]))
        except R.DecodeError:
            # the meter may echo a master's odd record back in a selective readout;
            # the telegram is still a valid frame
            pass


@fuzz(2500)
@given(st.lists(snd_ud(), min_size=1, max_size=4), st.lists(st.integers(0, 300), max_size=5))
def test_valid_snd_ud_frames(frames, cuts):
    bus = fuzz_bus()
    single = Bus([demo_meter()])
    for c, a, ci, data in frames:
        f = frame_build.build(frame.LONG, c, a, ci, data)
        for r in feed(bus, f, cuts):
            assert r == h("E5")       # SND_UD is acknowledged or left unanswered
        feed(single, f, cuts)
        bus.idle()
        single.idle()
    # the line still works: everyone acknowledges a SND_NKE to 254
    assert feed(bus, NKE_254, cuts) == [h("E5")]
    # and the meter still produces telegrams
    out = feed(single, REQ_254, cuts)
    assert len(out) == 1
    check_telegram(out[0])


@fuzz(3000)
@given(snd_ud(), st.data(), st.lists(st.integers(0, 300), max_size=5))
def test_broken_snd_ud_frames(good, data, cuts):
    c, a, ci, payload = good
    broken = breakage(data.draw, frame_build.build(frame.LONG, c, a, ci, payload))
    bus = fuzz_bus()
    out = feed(bus, broken, cuts)
    if not embedded_frame(broken):
        assert out == [], broken.hex()
    bus.idle()   # the master's gap before its next frame
    assert feed(bus, NKE_254, cuts) == [h("E5")]


@fuzz(1500)
@given(st.binary(max_size=300), snd_ud(), st.lists(st.integers(0, 600), max_size=8))
def test_noise_then_valid_frame(noise, good, cuts):
    bus = fuzz_bus()
    feed(bus, noise, cuts)
    bus.idle()
    c, a, ci, payload = good
    feed(bus, frame_build.build(frame.LONG, c, a, ci, payload), cuts)
    bus.idle()
    assert feed(bus, NKE_254, cuts) == [h("E5")]


# -- the records decoder ------------------------------------------------------------------
def fixture_app_datas():
    out = []
    for folder in ("libmbus-frames", "libmbus-error-frames"):
        path = os.path.join(FIXTURES, folder)
        for name in sorted(os.listdir(path)):
            if not name.endswith(".hex"):
                continue
            with open(os.path.join(path, name)) as f:
                try:
                    frames = model.parse_frames(f.read())
                except ValueError:
                    continue
            for fr in frames:
                if len(fr) > 8 and fr[0] == 0x68:
                    out.append(bytes(fr[6:-2]))
    return out


APP_DATAS = fixture_app_datas()


def decode_or_documented_error(app):
    try:
        out = R.decode_user_data(app)
    except R.DecodeError:
        return
    for rec in out["records"]:
        rec.as_dict()


@fuzz(2000)
@given(st.sampled_from([0x72, 0x76, 0x7A, 0x78, 0x73, 0x70]) | st.integers(0, 255),
       st.lists(record(), max_size=15), st.binary(max_size=20))
def test_decode_user_data_random(ci, recs, tail):
    head = bytes(12) if ci in (0x72, 0x76) else (bytes(4) if ci == 0x7A else b"")
    decode_or_documented_error(bytes([ci]) + head + b"".join(recs) + tail)


@fuzz(2000)
@given(st.binary(max_size=260), st.integers(0, 300))
def test_decode_records_random(data, start):
    try:
        for rec in R.decode_records(data, start % (len(data) + 1)):
            rec.as_dict()
    except R.DecodeError:
        pass


@fuzz(2000)
@given(st.sampled_from(APP_DATAS),
       st.lists(st.tuples(st.integers(0, 300), st.integers(0, 255)), min_size=1, max_size=4),
       st.integers(0, 300))
def test_decode_mutated_fixtures(app, changes, cut):
    b = bytearray(app)
    for pos, value in changes:
        b[pos % len(b)] = value
    decode_or_documented_error(bytes(b))
    decode_or_documented_error(bytes(b[:cut % (len(b) + 1)]))


def test_meter_model_round_trip_of_fixtures():
    # every fixture telegram that decodes can be served again by a replay meter
    for app in APP_DATAS:
        try:
            R.decode_user_data(app)
        except R.DecodeError:
            continue
        m = Meter(address=5)
        m.replay = [app]
        bus = Bus([m])
        out = feed(bus, h("10 5B 05 60 16"), [])
        assert len(out) == 1 and out[0][6:-2] == app
