# The shared run loop (ports/line.py) with a scripted port, on both runtimes.
from mbus_testutil import h, demo_bus

from mbus_ports.line import LineServer, reply_window_ms, default_reply_delay_ms


class ScriptedPort:
    def __init__(self, chunks):
        self.chunks = list(chunks)
        self.written = []
        self.bauds = []
        self.flushes = 0

    def readinto(self, buf):
        if not self.chunks:
            return 0
        data = self.chunks.pop(0)
        for i in range(len(data)):
            buf[i] = data[i]
        return len(data)

    def write(self, data):
        self.written.append(bytes(data))

    def flush(self):
        self.flushes += 1

    def set_baud(self, rate):
        self.bauds.append(rate)


def run(chunks, **kw):
    port = ScriptedPort(chunks)
    kw.setdefault("reply_delay_ms", 0)
    line = LineServer(demo_bus(), port, **kw)
    for _ in range(len(chunks) + 2):
        line.step()
    return line, port


def test_request_in_pieces_is_answered_once():
    line, port = run([h("10 5B"), h("03"), h("5E 16")])
    assert len(port.written) == 1 and port.written[0][:4] == h("68 18 18 68")
    assert port.flushes == 1 and line.requests == 1


def test_two_requests_in_one_chunk_both_answered():
    line, port = run([h("10 40 03 43 16 10 5B 03 5E 16")])
    assert port.written[0] == h("E5") and port.written[1][6] == 0x72


def test_trace_lines():
    seen = []
    run([h("10 40 03 43 16")], trace=lambda d, b: seen.append((d, b)))
    assert seen == [("RECV", h("10 40 03 43 16")), ("SEND", h("E5"))]


def test_baud_switch_after_ack_and_fallback_without_frames():
    line, port = run([h("68 03 03 68 53 03 BD 13 16")], baud_fallback_ms=1)
    assert port.written == [h("E5")]
    assert port.bauds[0] == 9600
    # no valid frame at the new rate: back to 2400 once the fallback time passed
    import time
    time.sleep(0.01)
    line.step()
    assert port.bauds == [9600, 2400] and line.baud == 2400


def test_baud_switch_kept_when_master_talks_at_new_rate():
    line, port = run([h("68 03 03 68 53 03 BD 13 16"), h("10 40 03 43 16")],
                     baud_fallback_ms=1)
    import time
    time.sleep(0.01)
    line.step()
    assert port.bauds == [9600] and line.baud == 9600


def test_idle_gap_drops_half_frame():
    line, port = run([h("10 5B 03")], idle_ms=0)
    assert not line.bus.parser.receiving()
    assert port.written == []


def test_reply_window():
    lo, hi = reply_window_ms(2400)
    assert 4.5 < lo < 4.6 and 187 < hi < 188
    for baud in (300, 2400, 9600, 38400):
        lo, hi = reply_window_ms(baud)
        d = default_reply_delay_ms(baud)
        assert lo <= d <= hi, baud


def test_frames_found_in_rescanned_bytes_are_all_answered():
    # A broken long frame (no stop byte) hides a REQ_UD2 and a SND_NKE: both come out of
    # the parser's rescan after the chunk is used up, and both are answered at once.
    chunk = h("68 0D 0D 68 10 5B 03 5E 16 10 40 03 43 16 00 00 00 00 00")
    line, port = run([chunk])
    assert len(port.written) == 2, port.written
    assert port.written[0][6] == 0x72 and port.written[1] == h("E5")
    assert not line.bus.parser.receiving()
