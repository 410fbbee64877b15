"""The exact bytes libmbus's command-line tools send (tests/data/libmbus-traces.md, a
capture of mbus-serial-* and mbus-tcp-* with -d against a one-meter slave), replayed against
`mbus-slave` on a real pty and a real TCP socket. Every RECV line of the capture must come
back byte for byte (the access numbers too: the blocks ran in this order against one slave
process), and where the capture shows no reply the slave stays silent; the only exceptions
are the commands whose acknowledgement libmbus does not print (set address, application
reset): those must be E5, as EN 13757-2 wants."""
import os
import re

import pytest

from tests.hostutil import PtySlave, TcpSlave, send, recv, ping, SILENCE_TIMEOUT

TRACES = os.path.join(os.path.dirname(__file__), "data", "libmbus-traces.md")
ACKED_BUT_NOT_PRINTED = {"68 06 06 68 53 03 51 01 7A 07 29 16", "68 03 03 68 53 03 50 A6 16"}


def blocks():
    """[(title, [(send_hex, expected_hex or None), ...]), ...] in the file's order."""
    out = []
    with open(TRACES) as f:
        text = f.read()
    for part in text.split("### ")[1:]:
        title = part.splitlines()[0].strip()
        steps = []
        for line in part.splitlines()[1:]:
            m = re.match(r"(SEND|RECV) \(\d+\): ((?:[0-9A-F]{2}(?: |$))+)", line)
            if not m:
                continue
            data = m.group(2).strip()
            if m.group(1) == "SEND":
                steps.append([data, None])
            elif steps:
                steps[-1][1] = data
        out.append((title, steps))
    return out


def play(ser, steps):
    for sent, want in steps:
        if want is None and sent in ACKED_BUT_NOT_PRINTED:
            want = "E5"
        send(ser, bytes.fromhex(sent))
        got = recv(ser, None if want else SILENCE_TIMEOUT)
        shown = " ".join("%02X" % b for b in got) if got else got
        assert shown == want, "after SEND %s: got %s, libmbus saw %s" % (sent, shown, want)


def by_title(prefix):
    found = [b for b in blocks() if b[0].startswith(prefix)]
    assert found, prefix
    return found


def test_trace_file_has_every_tool():
    titles = [t for t, _ in blocks()]
    for tool in ("mbus-serial-request-data -d", "mbus-serial-request-data-multi-reply",
                 "mbus-serial-scan -d", "mbus-serial-scan-secondary", "mbus-serial-set-address",
                 "mbus-tcp-application-reset", "mbus-serial-switch-baudrate"):
        assert any(t.startswith(tool) for t in titles), tool
    steps = [step for _, b in blocks() for step in b]
    assert len(steps) == 32 and sum(1 for _, want in steps if want) == 9


@pytest.fixture
def pty_slave(tmp_path):
    s = PtySlave([], tmp_path)   # the default meter is the one of the capture
    yield s
    s.stop()


def test_serial_tools_in_capture_order(pty_slave):
    serial_blocks = [b for b in blocks() if b[0].startswith("mbus-serial-")
                     and "switch-baudrate" not in b[0]]
    with pty_slave.master() as ser:
        for title, steps in serial_blocks:
            play(ser, steps)
        # mbus-serial-set-address moved the meter from 3 to 7
        assert ping(ser, 7)
        assert not ping(ser, 3, SILENCE_TIMEOUT)


def test_switch_baudrate(pty_slave):
    (title, steps), = by_title("mbus-serial-switch-baudrate")
    with pty_slave.master() as ser:
        play(ser, steps)
    with pty_slave.master(baud=9600) as ser:
        assert ping(ser, 3)


def test_tcp_application_reset(tmp_path):
    (title, steps), = by_title("mbus-tcp-application-reset")
    s = TcpSlave([], tmp_path)
    try:
        with s.master() as sock:
            play(sock, steps)
            assert ping(sock, 3)
    finally:
        s.stop()
