"""End to end over TCP: `python -m mbus_ports --device tcp:0` (an ephemeral port on
127.0.0.1), pymeterbus over pyserial's socket:// URL, raw sockets for the rude clients."""
import json
import socket
import threading
import time

import pytest

import meterbus

from mbus_core import frame
from mbus_core.codec import frame_build

from tests.hostutil import (ping, req_ud2, select, send, recv, values, ident,
                            frame_hex, short, SILENCE_TIMEOUT, REPLY_TIMEOUT)


def test_ping_read_and_select_over_tcp(tcp_factory):
    s = tcp_factory()
    assert s.host == "127.0.0.1"
    with s.master() as ser:
        assert ping(ser, 3)
        t, raw = req_ud2(ser, 3)
        assert values(t) == [1234, 456] and ident(t) == "12345678"
        assert select(ser, "12345678FFFFFFFF")
        t, _ = req_ud2(ser, 0xFD, fcb=True)
        assert ident(t) == "12345678"
    assert s.stop() == 0
    assert "127.0.0.1" in s.log() and "loopback" in s.log()


def test_address_change_is_seen_by_every_client(tcp_factory):
    """The meters are shared, as on one wire behind a gateway."""
    s = tcp_factory()
    with s.master() as a, s.master() as b:
        send(a, frame_hex("68 06 06 68 53 03 51 01 7A 07 29 16"))
        assert recv(a) == b"\xe5"
        assert ping(b, 7)
        assert not ping(b, 3, timeout=SILENCE_TIMEOUT)


def _client(port, n, errors, lock):
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as sk:
            f = sk.makefile("rb")
            for i in range(n):
                if i % 2:
                    sk.sendall(short(0x40, 3))
                    assert f.read(1) == b"\xe5"
                else:
                    sk.sendall(short(0x5B | (0x20 if i % 4 else 0), 3))
                    head = f.read(4)
                    assert head[0] == 0x68 and head[1] == head[2], head
                    rest = f.read(head[1] + 2)
                    t = meterbus.load(head + rest)
                    assert [r.value for r in t.records] == [1234, 456]
                    assert ident(t) == "12345678"
    except Exception as e:  # collect, the main thread asserts
        with lock:
            errors.append(repr(e))


def test_many_concurrent_clients(tcp_factory):
    s = tcp_factory()
    errors = []
    lock = threading.Lock()
    threads = [threading.Thread(target=_client, args=(s.port, 20, errors, lock))
               for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    assert s.stop() == 0
    assert s.log().count(" connected (") == 20


def test_half_frame_and_vanishing_client_disturb_nobody(tcp_factory):
    s = tcp_factory()
    half = socket.create_connection(("127.0.0.1", s.port), timeout=10)
    half.sendall(frame_hex("68 06 06 68 53 03"))      # a SND_UD cut off
    with s.master() as ser:
        assert ping(ser, 3)
        t, _ = req_ud2(ser, 3)
        assert values(t) == [1234, 456]
        half.close()                                   # gone, mid-frame
        assert ping(ser, 3)
        # the cut-off SND_UD (set address 7) never happened
        assert not ping(ser, 7, timeout=SILENCE_TIMEOUT)
    # a client that sends garbage and a broken frame, then a valid one, is still answered
    with s.master() as ser:
        send(ser, frame_hex("00 FF 68 03 03 68 53 03 50 00 16") + short(0x40, 3))
        assert recv(ser) == b"\xe5"
    assert s.stop() == 0
    assert "half frame dropped" in s.log()


def test_max_clients_refuses_the_extra_one(tcp_factory):
    s = tcp_factory("--max-clients", "2")
    a = s.master()
    b = s.master()
    try:
        assert ping(a, 3) and ping(b, 3)
        with socket.create_connection(("127.0.0.1", s.port), timeout=10) as c:
            c.settimeout(REPLY_TIMEOUT * 3)
            try:
                data = c.recv(10)
            except ConnectionResetError:
                data = b""
            assert data == b""                      # closed at once
        assert ping(a, 3)
    finally:
        a.close()
        b.close()
    assert s.stop() == 0
    assert "refused" in s.log()


def test_idle_client_is_closed(tcp_factory):
    s = tcp_factory("--tcp-idle-timeout", "1")
    with socket.create_connection(("127.0.0.1", s.port), timeout=30) as c:
        try:
            data = c.recv(10)
        except ConnectionResetError:
            data = b""
        assert data == b""
    assert s.stop() == 0
    assert "no valid frame for 1 s" in s.log()


def test_client_trickling_bytes_is_closed_all_the_same(tcp_factory):
    """Slowloris: a byte of noise every 0.2 s never completes a frame, so the idle timeout
    (counted from the last valid frame) cuts the client off; a talking client stays."""
    import time
    s = tcp_factory("--tcp-idle-timeout", "1")
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as slow, \
            s.master() as good:
        closed = False
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            assert ping(good, 3)
            try:
                slow.sendall(b"\x00")
                slow.settimeout(0.2)
                if slow.recv(10) == b"":
                    closed = True
                    break
            except socket.timeout:
                pass
            except OSError:
                closed = True
                break
        assert closed
        assert ping(good, 3)
    assert s.stop() == 0
    assert "no valid frame for 1 s" in s.log()


def test_tcp_host_port_and_ipv6(tcp_factory):
    s = tcp_factory(device="tcp:127.0.0.1:0")
    with s.master() as ser:
        assert ping(ser, 3)
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    try:
        socket.socket(socket.AF_INET6).bind(("::1", 0))
    except OSError:
        pytest.skip("no IPv6 loopback")
    s6 = tcp_factory(device="tcp:[::1]:0")
    assert s6.host == "::1"
    with s6.master() as ser:
        assert ping(ser, 3)


def test_random_bus_over_tcp_with_trace(tcp_factory):
    s = tcp_factory("--random-meters", "3", "--seed", "7", "--trace")
    with s.master() as ser:
        found = [a for a in range(0, 5) if ping(ser, a, timeout=SILENCE_TIMEOUT)]
        assert found == [1, 2, 3]
        t, _ = req_ud2(ser, 2)
        assert len(t.records) >= 2
    line = s.wait_line("SEND (001): E5")
    assert line.endswith("]")


def test_fault_injection_over_tcp(tcp_factory):
    """--fault works on the TCP server too: every reply of meter 3 has a wrong checksum."""
    s = tcp_factory("--fault", "checksum@3")
    with socket.create_connection(("127.0.0.1", s.port), timeout=10) as sk:
        sk.sendall(short(0x5B, 3))
        f = sk.makefile("rb")
        head = f.read(4)
        assert head[:1] == b"\x68"
        rest = f.read(head[1] + 2)
        body = rest[:-2]
        assert rest[-1] == 0x16 and rest[-2] != sum(body) & 0xFF
    s.stop()
    assert "fault: " in s.log()


def _rsp(ser, request):
    send(ser, request)
    r = recv(ser, REPLY_TIMEOUT)
    assert r and r[0] == 0x68, "no RSP_UD to %s: %r" % (frame_hex(request), r)
    return r


def test_scripted_session_link_state_shared_addresses_alarm_live_values(tcp_factory, tmp_path):
    """Issue 9's scripted session, raw frames over TCP: the read after a set-address
    carries the new address; three meters at one address all move; a retried REQ_UD1
    gets the alarm again; a growing counter changes over three `10 7B 01` polls."""
    counter = {"quantity": "volume", "unit": "l", "type": "int32",
               "value": {"counter": {"start": 1000, "rate": 10}}}
    bus = tmp_path / "bus.json"
    bus.write_text(json.dumps({"meters": [
        {"address": 1, "id": 11111111, "records": [counter],
         "alarm": [{"quantity": "error flags", "type": "int8", "value": 1}]},
        {"address": 3, "id": 33333331}, {"address": 3, "id": 33333332},
        {"address": 3, "id": 33333333}, {"address": 5, "id": 55555555}]}))
    s = tcp_factory("--bus", str(bus))
    with s.master() as ser:
        assert _rsp(ser, short(0x7B, 5))[5] == 5
        send(ser, frame_build.build(frame.LONG, 0x73, 5, 0x51, b"\x01\x7a\x07"))
        assert recv(ser, REPLY_TIMEOUT) == b"\xe5"
        moved = _rsp(ser, short(0x7B, 7))   # the same FCB as the read before
        assert moved[5] == 7 and moved[15] == 1, frame_hex(moved)

        send(ser, frame_build.build(frame.LONG, 0x53, 3, 0x51, b"\x01\x7a\x09"))
        assert recv(ser, REPLY_TIMEOUT) == b"\xe5"       # three E5 on the wire: one E5
        send(ser, short(0x40, 3))
        assert recv(ser, SILENCE_TIMEOUT) is None, "a meter stayed at address 3"
        send(ser, short(0x5B, 9))
        r = recv(ser, REPLY_TIMEOUT)     # all three answer: the wire carries their AND
        assert r is False or r[7:11] == bytes.fromhex("30333333"), r

        first = _rsp(ser, short(0x7A, 1))               # REQ_UD1: the alarm
        assert first[4] == 0x08 and first[-6:-2] == bytes.fromhex("01FD1701")
        assert _rsp(ser, short(0x7A, 1)) == first       # retried: the alarm again
        send(ser, short(0x5A, 1))
        assert recv(ser, REPLY_TIMEOUT) == b"\xe5"      # toggled: delivered

        volumes = []
        for i in range(3):
            if i:
                time.sleep(1)
            r = _rsp(ser, short(0x7B, 1))
            volumes.append(int.from_bytes(r[21:25], "little"))
        assert volumes[0] < volumes[1] < volumes[2], volumes
