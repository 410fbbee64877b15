"""ports/poller.py: the TCP server's one wait for all its sockets, with each of its three
system calls (epoll on Linux, poll on other Unixes, select on Windows)."""
import select
import socket

import pytest

from tests.hostutil import use_poller

from mbus_ports.poller import READ, READ_ANY, WRITE, Poller


@pytest.fixture(params=["epoll", "poll", "select"])
def pair(request, monkeypatch):
    """(a Poller of that kind with socket a registered as "client", a, its peer b)."""
    kind = request.param
    use_poller(kind, monkeypatch)
    p = Poller()
    a, b = socket.socketpair()
    p.register(a, "client")
    yield p, a, b
    p.close()
    a.close()
    b.close()


def test_read_write_and_unregister(pair):
    p, a, b = pair
    assert p.wait(0) == []                      # nothing to read yet
    b.send(b"\x10\x5b\x03\x5e\x16")
    events = p.wait(1.0)
    assert [(p.data[fd], bool(ev & READ_ANY), bool(ev & WRITE)) for fd, ev in events] \
        == [("client", True, False)]
    a.recv(64)
    p.modify(a, "client", True)                 # a reply left over: wait to write
    events = p.wait(1.0)
    assert [(p.data[fd], ev & WRITE) for fd, ev in events] == [("client", WRITE)]
    p.modify(a, "client", False)
    assert p.wait(0) == []
    p.unregister(a)
    p.unregister(a)                             # twice: no error
    b.send(b"x")
    assert p.wait(0) == []                      # forgotten


def test_a_closed_peer_reads_as_ready(pair):
    # the read then sees the end of the stream: the server closes the client
    p, a, b = pair
    b.close()
    events = p.wait(1.0)
    assert len(events) == 1 and events[0][1] & READ_ANY
    assert a.recv(64) == b""


def test_read_bit_is_pollin():
    assert READ == select.POLLIN and WRITE == select.POLLOUT
