"""`mbus-slave --device tcp:PORT` under load, on 127.0.0.1 only, bounded in count and time:
100 concurrent clients with 100 requests each are all answered correctly while others
disconnect mid-frame, trickle bytes slower than the idle timeout (slowloris: cut off) and
flood garbage (ignored or cut off); the server's memory stays flat over repeated bursts."""
import random
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from mbus_core import frame
from mbus_core.codec import frame_build

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"),
                                reason="reads /proc/PID/status")

IDLE_TIMEOUT = 1.0
METERS = 5          # --random-meters 5: addresses 1..5


def short(c, a):
    return bytes((0x10, c, a, (c + a) & 0xFF, 0x16))


class Server:
    def __init__(self, *extra):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "mbus_ports", "--device", "tcp:0", "--log-level", "warning",
             "--random-meters", str(METERS), "--seed", "1", "--max-clients", "300",
             "--tcp-idle-timeout", str(IDLE_TIMEOUT)] + list(extra),
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = self.proc.stdout.readline()
        m = re.search(r"Listening on 127\.0\.0\.1:(\d+)", line)
        if not m:
            self.stop()
            raise AssertionError("server did not start: %r %s" % (line, self.proc.stderr.read()))
        self.port = int(m.group(1))

    def rss_kb(self):
        with open("/proc/%d/status" % self.proc.pid) as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
        raise AssertionError("no VmRSS")

    def alive(self):
        return self.proc.poll() is None

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        err = self.proc.stderr.read()
        self.proc.stdout.close()
        self.proc.stderr.close()
        return err


@pytest.fixture
def server():
    s = Server()
    yield s
    err = s.stop()
    assert "Traceback" not in err, err[-2000:]


def connect(port):
    s = socket.create_connection(("127.0.0.1", port), timeout=20)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def read_frame(s):
    """One reply: E5 or a long frame; raises on EOF/timeout."""
    buf = b""
    while True:
        chunk = s.recv(300)
        if not chunk:
            raise ConnectionError("closed after %r" % buf)
        buf += chunk
        if buf[0] == 0xE5 and len(buf) == 1:
            return buf
        if len(buf) >= 2 and len(buf) >= buf[1] + 6:
            return buf


def good_client(port, index, n, failures):
    """n requests (REQ_UD2 with toggled FCB, now and then a SND_NKE) to meter 1..5; every
    reply must be the right frame from the right meter."""
    address = 1 + index % METERS
    try:
        with connect(port) as s:
            for i in range(n):
                if i % 10 == 9:
                    s.sendall(short(0x40, address))
                    if read_frame(s) != b"\xe5":
                        failures.append("client %d: SND_NKE not acknowledged" % index)
                        return
                    continue
                s.sendall(short(0x5B if i & 1 else 0x7B, address))
                r = read_frame(s)
                p = frame.FrameParser()
                if p.feed(r) != len(r) or p.kind != frame.LONG:
                    failures.append("client %d: bad reply %s" % (index, r.hex()))
                    return
                if p.c & 0xCF != 0x08 or p.a != address or p.ci != 0x72:
                    failures.append("client %d: reply from %d, C %02X, CI %02X"
                                    % (index, p.a, p.c, p.ci))
                    return
    except (OSError, ConnectionError) as e:
        failures.append("client %d: %s" % (index, e))


def run_clients(port, count, n, target=good_client):
    failures = []
    threads = [threading.Thread(target=target, args=(port, i, n, failures), daemon=True)
               for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not any(t.is_alive() for t in threads), "clients hung"
    return failures


def closed_by_peer(s, timeout):
    """Wait until the server closes s (EOF or reset) or the timeout passes."""
    s.settimeout(0.2)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if s.recv(4096) == b"":
                return True
        except socket.timeout:
            continue
        except OSError:
            return True
    return False


def test_100_clients_100_requests_each(server):
    t = time.monotonic()
    failures = run_clients(server.port, 100, 100)
    assert failures == [], failures[:5]
    assert server.alive()
    print("10000 round trips by 100 clients in %.1f s" % (time.monotonic() - t))


def test_bad_clients_cost_the_good_ones_nothing(server):
    port = server.port
    stop = threading.Event()
    stats = {"mid_frame": 0, "flood_bytes": 0, "slowloris_cut": 0, "slowloris": 0}
    problems = []

    def mid_frame():
        rnd = random.Random(1)
        f = frame_build.build(frame.LONG, 0x53, 1, 0x51, bytes(range(40)))
        while not stop.is_set():
            with connect(port) as s:
                s.sendall(f[:rnd.randint(1, len(f) - 1)])
            stats["mid_frame"] += 1
            time.sleep(0.005)

    def flood():
        rnd = random.Random(2)
        junk = bytes(rnd.randrange(256) for _ in range(65536))
        while not stop.is_set():
            try:
                with connect(port) as s:
                    s.settimeout(5)
                    while not stop.is_set():
                        s.sendall(junk)   # never reads: dropped when its replies pile up
                        stats["flood_bytes"] += len(junk)
            except OSError:
                pass

    def slowloris(i):
        # a byte of a frame now and then, each gap longer than the idle timeout: the
        # server cuts the client off at the first gap
        try:
            with connect(port) as s:
                stats["slowloris"] += 1
                for b in b"\x68\x20\x20":
                    s.sendall(bytes((b,)))
                    if closed_by_peer(s, IDLE_TIMEOUT * 2.5):
                        stats["slowloris_cut"] += 1
                        return
                problems.append("slowloris %d was not cut off" % i)
        except OSError as e:
            problems.append("slowloris %d: %s" % (i, e))

    bad = [threading.Thread(target=mid_frame, daemon=True),
           threading.Thread(target=flood, daemon=True)]
    bad += [threading.Thread(target=slowloris, args=(i,), daemon=True) for i in range(10)]
    for t in bad:
        t.start()
    try:
        time.sleep(0.2)
        failures = run_clients(port, 50, 100)
    finally:
        for t in bad[2:]:
            t.join(30)
        stop.set()
        for t in bad[:2]:
            t.join(30)
    assert failures == [], failures[:5]
    assert problems == [], problems
    assert stats["slowloris_cut"] == 10
    assert stats["mid_frame"] > 0 and stats["flood_bytes"] > 0
    # and after all that, a fresh client is served at once
    assert run_clients(port, 1, 20) == []
    assert server.alive()


def test_memory_stays_flat_over_bursts(server):
    port = server.port

    def burst():
        assert run_clients(port, 60, 50) == []
        for _ in range(30):   # vanishing clients with half frames
            with connect(port) as s:
                s.sendall(b"\x68\x20\x20\x68\x53")

    burst()                     # warm up: imports, caches, allocator pools
    before = server.rss_kb()
    for _ in range(3):
        burst()
    time.sleep(0.3)
    after = server.rss_kb()
    print("RSS %d kB -> %d kB over 3 bursts" % (before, after))
    # generous: a leak of one buffer per request (tens of thousands) would blow through it
    assert after - before < 8 * 1024, "RSS grew from %d kB to %d kB" % (before, after)
