"""The exact bytes of two more masters, replayed against `mbus-slave` as a process.
wmbusmeters (src/mbus_rawtty.cc, src/meters.cc, src/threads.cc): a broadcast SND_NKE
`10 40 FF 3F 16` at start, then `10 7B A CS 16` at every --pollinterval, never toggled,
5 s reply timeout. jMBus (org/openmuc/jmbus/MBusConnection.java, over TCP): one FCB per
address from 7B, toggled at every read(); linkReset() = SND_NKE; write() = SND_UD C=73 CI 51;
selectComponent() = 53 FD 52, deselectComponent() = 53 FD 56; it checks neither the checksum
nor the address of a reply, so we do.
"""
import json
import socket
import time

import meterbus
import pytest

from tests.hostutil import (TcpSlave, send, recv, short, long_frame,
                            REPLY_TIMEOUT, SILENCE_TIMEOUT)

WATER = "examples/water-meter.json"   # address 2: the README's wmbusmeters recipe (p2)
POLL_GAP = 1.1                        # seconds between polls (water counter: 1 l/s)
ID_1, ID_2 = bytes.fromhex("78563412"), bytes.fromhex("21436587")   # LSB first, as sent


def hexs(frame):
    return " ".join("%02X" % b for b in frame) if frame else repr(frame)


def check_rsp_ud(frame, address, who):
    """A complete, valid RSP_UD (CI 72) from `address`; explicit messages for each fault."""
    assert frame, "%s: no reply from address %d (got %r)" % (who, address, frame)
    assert frame[0] == 0x68 and len(frame) >= 21, "%s: not an RSP_UD: %s" % (who, hexs(frame))
    assert frame[1] == frame[2] and frame[3] == 0x68 and len(frame) == frame[1] + 6, \
        "%s: bad long-frame header or length: %s" % (who, hexs(frame))
    assert frame[-1] == 0x16, "%s: stop byte %02X: %s" % (who, frame[-1], hexs(frame))
    cs = sum(frame[4:-2]) & 0xFF
    assert frame[-2] == cs, "%s: checksum %02X, should be %02X: %s" % (
        who, frame[-2], cs, hexs(frame))
    assert frame[4] & 0xCF == 0x08 and frame[6] == 0x72, \
        "%s: C=%02X CI=%02X, not an RSP_UD with CI 72" % (who, frame[4], frame[6])
    assert frame[5] == address, (
        "%s: the reply carries A=%02X, not %02X: a stale repeat of an earlier reply "
        "(same FCB as the last REQ_UD2 this meter answered), not a fresh RSP_UD: %s"
        % (who, frame[5], address, hexs(frame)))
    return frame


def access_number(frame):
    return frame[15]


def total_volume(frame):
    """The first record (total volume, VIF 13) decoded by pymeterbus."""
    return meterbus.load(frame).records[0].value


# -- wmbusmeters ------------------------------------------------------------------------
def wmbusmeters_session(ser, address, polls=3):
    """wmbusmeters' bytes: the broadcast SND_NKE at start, then REQ_UD2 7B every poll."""
    send(ser, short(0x40, 0xFF))
    got = recv(ser, SILENCE_TIMEOUT)
    assert got is None, "SND_NKE to 255 must not be answered, got %s" % hexs(got)
    time.sleep(1)   # deviceReset() sleeps 1 s after it
    replies = []
    for i in range(polls):
        if i:
            time.sleep(POLL_GAP)
        poll = short(0x7B, address)
        send(ser, poll)
        who = "wmbusmeters poll %d (%s)" % (i + 1, hexs(poll))
        replies.append(check_rsp_ud(recv(ser, 5), address, who))   # it waits 5 s
    return replies


def test_wmbusmeters_polls_get_fresh_values(slave_factory):
    """7B, 7B, 7B a pollinterval apart: a single-telegram meter answers each with fresh
    values and a new access number (by default; --strict-repeat is the EN 13757-2 repeat)."""
    s = slave_factory("--meter", WATER)
    with s.master() as ser:
        replies = wmbusmeters_session(ser, 2)
    for before, after in zip(replies, replies[1:]):
        repeated = before == after
        assert not repeated, (
            "wmbusmeters sends 10 7B 02 7D 16 every poll and never toggles the FCB: the "
            "slave answered a poll %.1f s later with the byte-identical previous telegram "
            "(a same-FCB repeat), so wmbusmeters would never see the meter change:\n%s"
            % (POLL_GAP, hexs(after)))
    volumes = [total_volume(r) for r in replies]
    assert volumes[0] < volumes[1] < volumes[2], \
        "total volume did not grow between polls (1 l/s counter): %r" % volumes
    acc = [access_number(r) for r in replies]
    assert [(b - a) & 0xFF for a, b in zip(acc, acc[1:])] == [1, 1], \
        "the access number must count once per new telegram: %r" % acc


@pytest.mark.parametrize("how", ["flag", "meter-file"])
def test_wmbusmeters_polls_with_strict_repeat(slave_factory, tmp_path, how):
    """--strict-repeat (or "strict_repeat": true): EN 13757-2 to the letter, a same-FCB
    REQ_UD2 gets the previous telegram again, byte for byte."""
    if how == "flag":
        s = slave_factory("--meter", WATER, "--strict-repeat")
    else:
        with open(WATER) as f:
            cfg = json.load(f)
        cfg["strict_repeat"] = True
        path = tmp_path / "strict-water.json"
        path.write_text(json.dumps(cfg))
        s = slave_factory("--meter", str(path))
    with s.master() as ser:
        replies = wmbusmeters_session(ser, 2)
    identical = replies[0] == replies[1] == replies[2]
    assert identical, (
        "with strict repeats every same-FCB REQ_UD2 must get the first telegram again, "
        "byte for byte:\n%s" % "\n".join(hexs(r) for r in replies))


# -- jMBus ------------------------------------------------------------------------------
class JMBus:
    """MBusConnection's bytes over a raw TCP socket (newTcpBuilder(host, port).build())."""

    def __init__(self, host, port):
        self.sock = socket.create_connection((host, port), timeout=REPLY_TIMEOUT)
        self.fcb = [True] * 254     # frameCountBits: all true at construction

    def _recv_exact(self, n):
        data = b""
        while len(data) < n:
            chunk = self.sock.recv(n - len(data))
            assert chunk, "connection closed after %s" % hexs(data)
            data += chunk
        return data

    def receive(self, timeout=REPLY_TIMEOUT):
        """receiveMessage(): E5, or 68 L and then L+4 bytes; None on a timeout."""
        self.sock.settimeout(timeout)
        try:
            first = self._recv_exact(1)
        except socket.timeout:
            return None
        if first == b"\xe5":
            return first
        assert first == b"\x68", "jMBus: Received unknown message: %02X" % first[0]
        ln = self._recv_exact(1)
        return first + ln + self._recv_exact(ln[0] + 4)

    def read(self, address, reply_from=None):
        """read(): REQ_UD2 with this address's FCB, toggled at every send."""
        c = 0x7B if self.fcb[address] else 0x5B
        self.fcb[address] = not self.fcb[address]
        self.sock.sendall(short(c, address))
        return check_rsp_ud(self.receive(), address if reply_from is None else reply_from,
                            "jMBus read(%d) %s" % (address, hexs(short(c, address))))

    def link_reset(self, address):
        self.sock.sendall(short(0x40, address))
        assert self.receive() == b"\xe5", "jMBus linkReset(%d): no E5" % address
        self.fcb[address] = True

    def send_long(self, c, a, ci, data=b"", timeout=REPLY_TIMEOUT):
        self.sock.sendall(long_frame(c, a, ci, data))
        return self.receive(timeout)


def two_meter_bus(tmp_path):
    path = tmp_path / "bus.json"
    path.write_text(json.dumps({"meters": [
        {"address": 1, "id": 12345678, "medium": "water"},
        {"address": 2, "id": 87654321, "medium": "heat"}]}))
    return str(path)


@pytest.fixture
def jmbus(tmp_path):
    s = TcpSlave(["--bus", two_meter_bus(tmp_path)], tmp_path)
    conn = JMBus(s.host, s.port)
    yield conn
    conn.sock.close()
    s.stop()


def test_jmbus_per_address_fcb_and_set_address(jmbus):
    one = jmbus.read(1)                         # 10 7B 01 7C 16
    assert one[7:11] == ID_1, "address 1 is not meter 12345678: %s" % hexs(one)
    two = jmbus.read(2)                         # 10 7B 02 7D 16
    assert two[7:11] == ID_2, "address 2 is not meter 87654321: %s" % hexs(two)
    # write(1, 01 7A 05): 68 06 06 68 73 01 51 01 7A 05 45 16
    ack = jmbus.send_long(0x73, 1, 0x51, b"\x01\x7a\x05")
    assert ack == b"\xe5", "set address 1 -> 5 (C=73): got %s, not E5" % hexs(ack)
    five = jmbus.read(5)                        # a new address for jMBus: 10 7B 05 80 16
    assert five[7:11] == ID_1, "address 5 is not meter 12345678: %s" % hexs(five)
    assert access_number(five) != access_number(one), \
        "the first read at address 5 repeated the telegram read at address 1"
    again = jmbus.read(5)                       # toggled: 10 5B 05 60 16
    assert access_number(again) == (access_number(five) + 1) & 0xFF
    jmbus.sock.sendall(short(0x7B, 1))
    assert jmbus.receive(SILENCE_TIMEOUT) is None, "address 1 still answers after the move"


def test_jmbus_link_reset_and_secondary_selection(jmbus):
    jmbus.link_reset(2)                         # 10 40 02 42 16, FCB back to 1
    two = jmbus.read(2)
    secondary = two[7:15]                       # SecondaryAddress.newFromLongHeader
    ack = jmbus.send_long(0x53, 0xFD, 0x52, secondary)   # selectComponent()
    assert ack == b"\xe5", "selectComponent: got %s, not E5" % hexs(ack)
    selected = jmbus.read(0xFD, reply_from=2)   # frameCountBits[253]: 10 7B FD 78 16
    assert selected[7:15] == secondary
    ack = jmbus.send_long(0x53, 0xFD, 0x56, secondary)   # deselectComponent(): CI 56
    assert ack == b"\xe5", "deselectComponent (CI 56): got %s, not E5" % hexs(ack)
    jmbus.sock.sendall(short(0x5B, 0xFD))
    assert jmbus.receive(SILENCE_TIMEOUT) is None, "a deselected meter answered at 253"
