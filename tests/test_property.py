"""Property-based tests of the core: random and mutated byte streams never raise, a
frame with a bad checksum is never answered, and a valid request after garbage is."""
from hypothesis import given, settings, strategies as st, HealthCheck

from mbus_core import frame
from mbus_core.codec import frame_build
from mbus_core.bus import Bus
from tests.core.mbus_testutil import demo_meter, h, many_records_meter, feed_cuts as feed_chunks

REQUESTS = [
    h("10 40 03 43 16"), h("10 5B 03 5E 16"), h("10 7B 03 7E 16"), h("10 5A 03 5D 16"),
    h("10 40 FD 3D 16"), h("68 0B 0B 68 73 FD 52 78 56 34 12 FF FF FF FF D2 16"),
    h("10 5B FD 58 16"), h("68 03 03 68 53 03 50 A6 16"),
    h("68 06 06 68 53 03 51 01 7A 07 29 16"), h("68 03 03 68 53 03 BD 13 16"),
    frame_build.build(frame.LONG, 0x53, 3, 0x51, h("08 FD 49 7F 0C 79 21 43 65 87")),
    frame_build.build(frame.LONG, 0x53, 0xFE, 0x51, h("04 6D 19 0F 8A 17")),
]


def fresh_bus():
    return Bus([demo_meter(), many_records_meter(50, address=4, id=87654321)])


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=600), st.lists(st.integers(0, 600), max_size=8))
def test_random_bytes_never_raise(data, cuts):
    bus = fresh_bus()
    feed_chunks(bus, data, cuts)
    bus.idle()


def checksum_broken(f):
    """The same frame with its checksum off by one."""
    b = bytearray(f)
    b[-2] = (b[-2] + 1) & 0xFF
    return bytes(b)


@settings(max_examples=300)
@given(st.sampled_from(REQUESTS), st.binary(max_size=40), st.lists(st.integers(0, 80), max_size=6))
def test_bad_checksum_never_answered(req, noise, cuts):
    bus = fresh_bus()
    # noise without start bytes cannot hide another frame; the broken frame stands alone
    noise = bytes(b for b in noise if b not in (0x10, 0x68))
    assert feed_chunks(bus, noise + checksum_broken(req) + noise, cuts) == []


@settings(max_examples=300)
@given(st.sampled_from(REQUESTS), st.integers(0, len(REQUESTS) - 1), st.integers(0, 300),
       st.integers(0, 255), st.lists(st.integers(0, 80), max_size=6))
def test_mutated_frames_never_raise(req, other, pos, value, cuts):
    data = bytearray(req + REQUESTS[other])
    data[pos % len(data)] = value
    bus = fresh_bus()
    feed_chunks(bus, bytes(data), cuts)


@settings(max_examples=300)
@given(st.binary(max_size=300), st.lists(st.integers(0, 300), max_size=6))
def test_valid_request_after_garbage_and_idle_is_answered(garbage, cuts):
    bus = fresh_bus()
    feed_chunks(bus, garbage, cuts)
    bus.idle()  # the gap before the master's frame
    out = feed_chunks(bus, h("10 40 03 43 16"), cuts)
    assert out == [h("E5")]


@settings(max_examples=300)
@given(st.binary(max_size=60).filter(lambda b: 0x10 not in b and 0x68 not in b))
def test_valid_request_right_after_noise_is_answered(noise):
    # noise with no start byte in it never hides the frame that follows, even unbroken
    bus = fresh_bus()
    out = feed_chunks(bus, noise + h("10 5B 03 5E 16") + noise, [])
    assert len(out) == 1 and out[0][:7] == h("68 18 18 68 08 03 72")
