"""--wire-timing: replies paced at the line's baud rate and frame format, measured at the
master's side (issue 16). Only loose bounds: at least 80 % of the wire time, never tight
timings; the upper bounds only tell pacing from no pacing or from the wrong rate."""
import json
import socket
import sys
import time

import pytest

from tests.hostutil import frame_hex, short, send, recv

pytestmark = pytest.mark.skipif(not sys.platform.startswith(("linux", "darwin", "freebsd")),
                                reason="needs POSIX ptys")

ADDR = 9


def long_meter(tmp_path):
    """A meter whose telegram is as long as they get: 40 six-byte records, L = 255,
    261 bytes on the wire (1.2 s at 2400 baud 8E1)."""
    path = tmp_path / "long.json"
    records = ["0413" + i.to_bytes(4, "little").hex() for i in range(1, 41)]
    path.write_text(json.dumps({"address": ADDR, "id": 11223344, "manufacturer": "ABC",
                                "medium": "water", "records": records}))
    return str(path)


def wire_s(nbytes, baud, bits=11):
    return nbytes * bits / baud


def timed_reply(ser, request):
    """Send `request`; (reply, seconds from the request to its first byte, to its last)."""
    ser.reset_input_buffer()
    t0 = time.monotonic()
    ser.write(request)
    data = b""
    first = last = None
    deadline = t0 + 10
    while time.monotonic() < deadline:
        chunk = ser.read(max(1, ser.in_waiting))
        now = time.monotonic()
        if chunk:
            if first is None:
                first = now
            last = now
            data += chunk
            if data[0] == 0x68 and len(data) >= 2 and len(data) >= data[1] + 6:
                break
            if data[0] == 0xE5:
                break
    assert first is not None, "no reply"
    return data, first - t0, last - t0


def check_paced(data, t_first, t_last, baud, bits=11):
    n = len(data)
    assert n > 200 and data[-1] == 0x16, data.hex(" ")
    wire = wire_s(n, baud, bits)
    # the master gets the last byte one wire time after the reply starts
    assert t_last >= 0.8 * wire, (n, baud, t_first, t_last, wire)
    assert t_last - t_first >= 0.8 * wire_s(n - 1, baud, bits), (n, t_first, t_last)
    assert t_last < 2 * wire + 1.0, (n, baud, t_last, wire)
    return wire


def test_frame_format_bits():
    from mbus_ports.paced import char_bits
    assert char_bits("E", 1) == 11      # 8E1: start, 8 data, parity, stop
    assert char_bits("N", 1) == 10
    assert char_bits("O", 2) == 12
    assert char_bits("N", 2) == 11


@pytest.mark.parametrize("baud", [2400, 9600])
def test_pty_reply_takes_the_wire_time(slave_factory, tmp_path, baud):
    s = slave_factory("--meter", long_meter(tmp_path), "--baud", str(baud), "--wire-timing")
    with s.master(baud) as ser:
        data, t_first, t_last = timed_reply(ser, short(0x5B, ADDR))
    wire = check_paced(data, t_first, t_last, baud)
    print("pty %d baud: %d bytes, first byte after %.3f s, last after %.3f s (wire %.3f s)"
          % (baud, len(data), t_first, t_last, wire))
    assert "paced" in s.log()


def test_pty_8n1_paces_ten_bits(slave_factory, tmp_path):
    s = slave_factory("--meter", long_meter(tmp_path), "--parity", "N", "--wire-timing")
    with s.master() as ser:
        data, t_first, t_last = timed_reply(ser, short(0x5B, ADDR))
    check_paced(data, t_first, t_last, 2400, bits=10)


def test_pty_without_the_flag_replies_at_once(slave_factory, tmp_path):
    s = slave_factory("--meter", long_meter(tmp_path))
    with s.master() as ser:
        data, t_first, t_last = timed_reply(ser, short(0x5B, ADDR))
    assert t_last < 0.5 * wire_s(len(data), 2400), (len(data), t_last)


def test_pty_paces_at_the_new_rate_after_a_baud_switch(slave_factory, tmp_path):
    s = slave_factory("--meter", long_meter(tmp_path), "--wire-timing")
    with s.master() as ser:
        send(ser, frame_hex("68 03 03 68 53 09 BD 19 16"))   # CI BD: 9600 baud
        assert recv(ser) == b"\xe5"                           # at the old rate
    with s.master(baud=9600) as ser:
        data, t_first, t_last = timed_reply(ser, short(0x5B, ADDR))
    check_paced(data, t_first, t_last, 9600)
    assert t_last < 0.8 * wire_s(len(data), 2400), "still paced at 2400 baud"


class Client:
    def __init__(self, port):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)

    def send(self, request):
        t0 = time.monotonic()
        self.sock.sendall(request)
        return t0

    def receive(self, t0):
        data = b""
        first = None
        while not (data[:1] == b"\xe5" or (len(data) >= 2 and len(data) >= data[1] + 6)):
            chunk = self.sock.recv(512)
            assert chunk, "connection closed"
            if first is None:
                first = time.monotonic()
            data += chunk
        return data, first - t0, time.monotonic() - t0

    def close(self):
        self.sock.close()


def test_tcp_paces_replies_without_blocking_other_clients(tcp_factory, tmp_path):
    """Two masters on one bus behind a gateway: A's long reply is paced; B's request is
    read at once (the trace shows it), its E5 waits for the bus, as on one wire."""
    s = tcp_factory("--meter", long_meter(tmp_path), "--wire-timing", "--trace")
    a, b = Client(s.port), Client(s.port)
    try:
        assert b.receive(b.send(short(0x40, 254)))[0] == b"\xe5"   # B is connected
        t0 = a.send(short(0x5B, ADDR))
        time.sleep(0.05)
        tb = b.send(short(0x40, ADDR))
        s.wait_line("RECV (005): %s" % short(0x40, ADDR).hex(" ").upper(), timeout=5)
        t_read = time.monotonic() - t0
        data, t_first, t_last = a.receive(t0)
        wire = check_paced(data, t_first, t_last, 2400)
        assert t_read < 0.6 * wire, "B's request was read only after A's reply"
        e5, b_first, b_last = b.receive(tb)
        assert e5 == b"\xe5"
        # the bus is busy with A's reply: B's E5 comes after it, and not much later
        assert b_last + (tb - t0) >= 0.8 * wire
        assert b_last + (tb - t0) < t_last + 1.0
    finally:
        a.close()
        b.close()
    assert s.stop() == 0


def test_tcp_paces_at_the_new_rate_after_a_baud_switch(tcp_factory, tmp_path):
    s = tcp_factory("--meter", long_meter(tmp_path), "--wire-timing")
    c = Client(s.port)
    try:
        assert c.receive(c.send(frame_hex("68 03 03 68 53 09 BD 19 16")))[0] == b"\xe5"
        t0 = c.send(short(0x5B, ADDR))
        data, t_first, t_last = c.receive(t0)
    finally:
        c.close()
    check_paced(data, t_first, t_last, 9600)
    assert t_last < 0.8 * wire_s(len(data), 2400), "still paced at 2400 baud"
    assert "baud rate switched to 9600 (replies paced at it)" in s.log()


def test_flag_is_off_by_default():
    from mbus_ports import cli
    args = cli.build_parser().parse_args(["--wire-timing"])
    assert args.wire_timing is True
    assert cli.build_parser().parse_args([]).wire_timing is False
