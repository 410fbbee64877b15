"""What one request over TCP costs, in counts (never in time: timings are mbus-bench's):
one wait of the poller, one recv and one send on the client's socket, two clock reads,
and none of the port's readinto/flush or LineServer.step, which the server passes by."""
import socket
import time

import pytest

from tests.hostutil import use_poller

from mbus_core.bus import Bus
from mbus_ports import line as line_mod
from mbus_ports import tcp_server
from mbus_ports.host import demo_meter
from mbus_ports.line import LineServer
from mbus_ports.poller import MAX_EVENTS, READ_ANY, Poller
from mbus_ports.tcp_server import TCP_IDLE_MS, TcpServer


def short(c, a):
    return bytes((0x10, c, a, (c + a) & 0xFF, 0x16))


REQS = (short(0x5B, 3), short(0x7B, 3))   # REQ_UD2, the FCB toggled: a fresh telegram


class CountingSocket:
    """Stands for a client's socket on the server's side; notes each method called."""

    def __init__(self, sock, calls):
        self._sock = sock
        self._calls = calls

    def __getattr__(self, name):
        attr = getattr(self._sock, name)
        if not callable(attr):
            return attr

        def call(*args, **kw):
            self._calls.append(name)
            return attr(*args, **kw)
        return call


def counting(calls, name, fn):
    def call(*args, **kw):
        calls.append(name)
        return fn(*args, **kw)
    return call


@pytest.fixture
def served():
    """(server, its one client object, the master's socket)."""
    server = TcpServer(Bus([demo_meter()]), "127.0.0.1", 0)
    master = socket.create_connection(("127.0.0.1", server.port), timeout=5)
    master.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    deadline = time.monotonic() + 5
    while not server.clients and time.monotonic() < deadline:
        server.poll(0.5)
    assert len(server.clients) == 1
    yield server, next(iter(server.clients.values())), master
    master.close()
    server.close()


def read_reply(master):
    got = b""
    while len(got) < 2 or len(got) < got[1] + 6:
        chunk = master.recv(600)
        assert chunk, "the server closed the connection"
        got += chunk
    return got


def test_a_request_is_one_wait_one_recv_one_send_and_two_clock_reads(served, monkeypatch):
    server, client, master = served
    sock_calls, waits, clock, skipped = [], [], [], []
    client.sock = CountingSocket(client.sock, sock_calls)
    client.port.sock = client.sock                     # what the port writes with
    server.poller.wait = counting(waits, "wait", server.poller.wait)
    monkeypatch.setattr(tcp_server, "monotonic",
                        counting(clock, "monotonic", time.monotonic))
    monkeypatch.setattr(tcp_server, "monotonic_ns",
                        counting(clock, "monotonic_ns", time.monotonic_ns))
    monkeypatch.setattr(line_mod, "ticks_us", counting(clock, "ticks_us", line_mod.ticks_us))
    for name in ("readinto", "flush"):
        setattr(client.port, name, counting(skipped, name, getattr(client.port, name)))
    client.line.step = counting(skipped, "step", client.line.step)
    n = 10
    for i in range(n):
        master.sendall(REQS[i & 1])
        server.poll(5)
        reply = read_reply(master)
        assert reply[0] == 0x68 and reply[-1] == 0x16
    assert client.line.requests == client.line.replies == n
    assert sock_calls == ["recv_into", "send"] * n
    assert len(waits) == n
    assert sorted(clock) == ["monotonic"] * n + ["monotonic_ns"] * n   # no ticks_us
    assert skipped == []


def test_a_half_frame_behind_a_request_is_still_dropped_after_the_gap(served):
    server, client, master = served
    master.sendall(REQS[0] + b"\x10\x7b")      # a request, then half of the next
    server.poll(5)
    assert read_reply(master)[0] == 0x68
    parser = client.line.parser
    assert parser.receiving()                         # the half frame waits for its rest
    errors = parser.errors
    t_end = time.monotonic() + TCP_IDLE_MS / 1000 + 0.2
    while time.monotonic() < t_end:            # the gap is a deadline of the poll
        server.poll(t_end - time.monotonic())
    assert not parser.receiving() and parser.errors == errors + 1   # dropped
    master.sendall(b"\x03\x7e\x16")            # its rest alone is no frame
    server.poll(5)
    assert client.line.requests == 1
    master.settimeout(0.2)
    with pytest.raises(socket.timeout):
        master.recv(10)


def test_after_reply_set_on_the_server_reaches_every_line_directly(served):
    server, client, master = served
    called = []
    server.after_reply = lambda: called.append(1)
    assert client.line.after_reply is server.after_reply   # no call in between
    master.sendall(REQS[0])
    server.poll(5)
    read_reply(master)
    assert called == [1]
    server.after_reply = None
    master.sendall(REQS[1])
    server.poll(5)
    read_reply(master)
    assert called == [1] and client.line.after_reply is None
    server.after_reply = lambda: called.append(2)   # a client accepted later has it too
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as other:
        while len(server.clients) < 2:
            server.poll(5)
        other.sendall(REQS[0])
        server.poll(5)
        read_reply(other)
    assert called == [1, 2]


class _Port:
    def __init__(self, at_once):
        if at_once:
            self.writes_at_once = True
        self.calls = []

    def readinto(self, buf):
        return 0

    def write(self, data):
        self.calls.append(("write", bytes(data)))

    def flush(self):
        self.calls.append(("flush",))

    def set_baud(self, rate):
        pass


@pytest.mark.parametrize("at_once", [False, True])
def test_flush_only_where_a_port_may_wait_in_it(at_once):
    port = _Port(at_once)
    line = LineServer(Bus([demo_meter()]), port, reply_delay_ms=0)
    req = bytearray(short(0x40, 3))           # SND_NKE: E5
    line.receive(req, len(req), line_mod.ticks_us())
    line.receive(req, len(req), line_mod.ticks_us())
    want = [("write", b"\xe5")] * 2 if at_once else [("write", b"\xe5"), ("flush",)] * 2
    assert port.calls == want
    assert line.replies == 2


def test_after_a_reply_delay_the_clock_is_read_again(monkeypatch):
    # a delayed reply leaves later than the request came: quiet_ms() counts from then
    port = _Port(True)
    line = LineServer(Bus([demo_meter()]), port, reply_delay_ms=1)
    reads = []
    monkeypatch.setattr(line_mod, "ticks_us", counting(reads, "ticks_us", line_mod.ticks_us))
    req = bytearray(short(0x40, 3))
    line.receive(req, len(req), 0)              # came long ago: sent without a wait
    assert port.calls == [("write", b"\xe5"), ("flush",)]
    assert reads == ["ticks_us", "ticks_us"]    # the delay's check, the reply's time


@pytest.fixture(params=["epoll", "poll", "select"])
def kind(request, monkeypatch):
    kind = request.param
    use_poller(kind, monkeypatch)
    return kind


def test_more_ready_sockets_than_one_wait_returns_are_all_served(kind):
    # epoll hands out at most MAX_EVENTS per wait; the rest stay ready for the next
    p = Poller()
    pairs = [socket.socketpair() for _ in range(MAX_EVENTS + 6)]
    try:
        for i, (a, b) in enumerate(pairs):
            p.register(a, i)
            b.send(b"x")
        served = set()
        waits = 0
        while len(served) < len(pairs) and waits < 5:
            events = p.wait(1.0)
            waits += 1
            if kind == "epoll":
                assert len(events) <= MAX_EVENTS
            for fd, ev in events:
                assert ev & READ_ANY
                i = p.data[fd]
                pairs[i][0].recv(8)
                served.add(i)
        assert served == set(range(len(pairs)))
        assert waits == (2 if kind == "epoll" else 1)
        assert p.wait(0) == []
    finally:
        p.close()
        for a, b in pairs:
            a.close()
            b.close()
