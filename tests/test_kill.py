"""SIGKILL the slave while a master changes its primary address, 60 times: the state file
(--state FILE) always holds the old or the new address, never a mix or a broken file; once
the master saw the E5 and one more reply, the new one (the file is written right after the
E5 has gone out, before the next request is read); and the restarted slave answers at that
address."""
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time

import pytest

from mbus_core import frame
from mbus_core.codec import frame_build

pytestmark = pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs SIGKILL")

ROUNDS = 60


def short(c, a):
    return bytes((0x10, c, a, (c + a) & 0xFF, 0x16))


def start(state):
    proc = subprocess.Popen([sys.executable, "-m", "mbus_ports", "--device", "tcp:0",
                             "--state", state, "--log-level", "warning"],
                            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    line = proc.stdout.readline().decode()
    m = re.search(r"Listening on 127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        proc.wait(10)
        raise AssertionError("slave did not start: %r %s" % (line, proc.stderr.read()))
    return proc, int(m.group(1))


def read_reply(s, timeout=5):
    s.settimeout(timeout)
    buf = b""
    while True:
        chunk = s.recv(300)
        if not chunk:
            return buf
        buf += chunk
        if buf[:1] == b"\xe5" or (len(buf) >= 2 and len(buf) >= buf[1] + 6):
            return buf


def saved_address(path):
    with open(path) as f:
        text = f.read()
    state = json.loads(text)            # never a half-written or corrupt file
    return state["meters"]["0"]["address"]


def test_sigkill_during_address_changes_never_corrupts_the_state(tmp_path):
    path = str(tmp_path / "state.json")
    rnd = random.Random(6)
    current = 3                         # mbus-slave's demo meter
    outcomes = {"old": 0, "new": 0, "tmp": 0}
    for round_ in range(ROUNDS):
        proc, port = start(path)
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                # the restarted slave took its address from the state file
                s.sendall(short(0x5B, current))
                r = read_reply(s)
                assert len(r) > 6 and r[5] == current, (round_, current, r.hex())
                new = rnd.choice([a for a in range(1, 251) if a != current])
                s.sendall(frame_build.build(frame.LONG, 0x53, current, 0x51, bytes((0x01, 0x7A, new))))
                acked = False
                how = round_ % 3
                if how == 0:            # kill right away: before, during or after the save
                    pass
                elif how == 1:          # kill a random moment later
                    time.sleep(rnd.random() * 0.01)
                else:                   # kill after the E5 and the next reply
                    acked = read_reply(s) == b"\xe5"
                    assert acked
                    s.sendall(short(0x7B, new))
                    assert read_reply(s)[5:6] == bytes((new,))
                proc.send_signal(signal.SIGKILL)
                proc.wait(10)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait(10)
            proc.stdout.close()
            proc.stderr.close()
        if os.path.exists(path + ".tmp"):
            outcomes["tmp"] += 1        # killed between writing the new file and the rename
            os.remove(path + ".tmp")
        got = saved_address(path)
        assert got in (current, new), (round_, current, new, got)
        if acked:
            assert got == new, (round_, current, new, got)
        outcomes["new" if got == new else "old"] += 1
        current = got
    assert outcomes["new"] > 0
    print("after SIGKILL: %(old)d x old address, %(new)d x new address, %(tmp)d x killed "
          "mid-save" % outcomes)
