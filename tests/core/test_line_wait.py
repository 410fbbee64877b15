# The shared run loop (ports/line.py) blocks in the port's wait() until bytes come or its
# next deadline, instead of polling (issue 10); the reply delay is timed in microseconds.
# A scripted port that records what it is asked; on both runtimes.
from mbus_testutil import h, demo_bus
from test_line import ScriptedPort

from mbus_ports.line import LineServer, ticks_us, ticks_diff


class WaitingPort(ScriptedPort):
    """A ScriptedPort with wait() that records the timeout it was given and returns at
    once, wake(), and the times of reads and writes."""

    def __init__(self, chunks=()):
        ScriptedPort.__init__(self, chunks)
        self.timeouts = []
        self.read_at = 0       # ticks_us when readinto handed out its last chunk
        self.write_at = []
        self.woken = 0

    def wait(self, timeout_ms):
        self.timeouts.append(timeout_ms)

    def wake(self):
        self.woken += 1

    def readinto(self, buf):
        n = ScriptedPort.readinto(self, buf)
        if n:
            self.read_at = ticks_us()
        return n

    def write(self, data):
        self.write_at.append(ticks_us())
        ScriptedPort.write(self, data)


def test_an_idle_line_waits_without_a_deadline():
    port = WaitingPort()
    line = LineServer(demo_bus(), port, reply_delay_ms=0)
    for _ in range(3):
        line.step()
    assert port.timeouts == [None, None, None]


def test_a_half_frame_makes_its_idle_gap_the_deadline():
    port = WaitingPort([h("10 5B")])
    line = LineServer(demo_bus(), port, reply_delay_ms=0, idle_ms=200)
    line.step()
    assert port.timeouts[0] is None and line.bus.parser.receiving()
    line.step()
    t = port.timeouts[1]
    assert t is not None and 0 < t <= 200, t


def _ticking(answer, turns):
    """`turns` loop turns with an on_tick that returns `answer`: (calls, timeouts)."""
    port = WaitingPort()
    line = LineServer(demo_bus(), port, reply_delay_ms=0)
    line.tick_every_ms = 4000
    calls = []

    def tick():
        calls.append(1)
        return answer
    line.on_tick = tick
    for _ in range(turns):
        line.step()
    return len(calls), port.timeouts


def test_on_tick_runs_when_due_and_says_when_next():
    calls, timeouts = _ticking(3000, 5)
    assert calls == 1
    assert timeouts[0] == 0                 # due at once: the first turn does not wait
    assert 0 < timeouts[1] <= 3000, timeouts


def test_on_tick_without_an_answer_runs_every_tick_every_ms():
    calls, timeouts = _ticking(None, 3)
    assert calls == 1
    assert 0 < timeouts[-1] <= 4000, timeouts    # tick_every_ms, not TICK_EVERY_MS


def test_the_baud_fallback_is_a_deadline():
    port = WaitingPort([h("68 03 03 68 53 03 BD 13 16")])
    line = LineServer(demo_bus(), port, reply_delay_ms=0, baud_fallback_ms=5000)
    line.step()
    assert line.baud == 9600 and port.written == [h("E5")]
    line.step()
    t = port.timeouts[-1]
    assert t is not None and 0 < t <= 5000, t


def test_the_reply_is_not_sent_before_the_delay():
    # an ordering, not a timing: the reply leaves at least the delay after the request
    # was read (microseconds, on the same clock)
    port = WaitingPort([h("10 40 03 43 16"), h("10 5B 03 5E 16")])
    line = LineServer(demo_bus(), port, reply_delay_ms=20)
    line.step()
    first = port.read_at
    line.step()
    assert len(port.written) == 2
    assert ticks_diff(port.write_at[0], first) >= 20000
    assert ticks_diff(port.write_at[1], port.read_at) >= 20000


def test_stop_wakes_the_port():
    port = WaitingPort()
    line = LineServer(demo_bus(), port, reply_delay_ms=0)
    line.stop()
    assert port.woken == 1 and not line.running
