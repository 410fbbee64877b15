"""Helpers for the mbus-check tests: run the checker in this process, meter files, the
MicroPython firmware under tools/upy-sim, and stand-in meters on a pty (a few lines of
Python that answer the way a broken meter does)."""
import contextlib
import io
import json
import os
import re
import select
import signal
import subprocess
import sys
import threading
import tty

from mbus_tools import check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TIMEOUT = "0.2"   # just past the reply window at 2400 baud (187.5 ms): silence still counts
START_WAIT = 60


def run(*argv):
    """mbus-check ARGV, in this process: (exit status, stdout, stderr)."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            status = check.main([str(a) for a in argv])
        except SystemExit as e:   # argparse's usage errors
            status = e.code
    return status, out.getvalue(), err.getvalue()


def run_json(*argv):
    """mbus-check ARGV --json: (exit status, {rule: result})."""
    status, out, err = run(*(argv + ("--json",)))
    assert out, "no report (status %s): %s" % (status, err)
    doc = json.loads(out)
    return status, doc, dict((r["rule"], r) for r in doc["results"])


def problems(results):
    """The rules that FAIL or WARN, with their messages."""
    return dict((k, r["message"]) for k, r in results.items() if r["status"] in ("FAIL",
                                                                                 "WARN"))


def big_meter(tmp_path, address=9, **extra):
    """A meter of a 3-telegram readout, a fabrication number (record VIF 78) and an LVAR
    text record."""
    recs = [{"quantity": "model/version", "value": "HEAT-1"}]
    recs += ["0413" + i.to_bytes(4, "little").hex() for i in range(1, 101)]
    cfg = {"address": address, "id": 11223344, "manufacturer": "ABC", "medium": "water",
           "fabrication": "90001234", "records": recs}
    cfg.update(extra)
    path = tmp_path / ("meter-%d.json" % address)
    path.write_text(json.dumps(cfg))
    return str(path)


class UpySim:
    """tools/upy-sim as a subprocess (the MicroPython firmware on a pty): .path."""

    def __init__(self, *args):
        self.proc = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "upy-sim")]
                                     + list(args), cwd=ROOT, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self.path = None
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.match(r"Point your M-Bus master at (\S+)$", line.strip())
            if m:
                self.path = m.group(1)
                break
        threading.Thread(target=self._drain, daemon=True).start()
        if self.path is None:
            self.stop()
            raise AssertionError("upy-sim did not start:\n" + "".join(self.lines))

    def _drain(self):
        for line in self.proc.stdout:
            self.lines.append(line)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=START_WAIT)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return "".join(self.lines)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def _split(buf):
    """(frame or None, bytes used) at the start of buf; (None, 0): wait for more."""
    if buf[0] == 0x10:
        return (bytes(buf[:5]), 5) if len(buf) >= 5 else (None, 0)
    if buf[0] == 0x68:
        if len(buf) < 2 or len(buf) < buf[1] + 6:
            return None, 0
        return bytes(buf[:buf[1] + 6]), buf[1] + 6
    return None, 1   # not a frame start: skip it


class PtyMeter:
    """A stand-in meter on a new pty: answer(frame) -> the bytes it sends back at once
    (b"": silence). Frames are cut by their start byte and L field alone: no checksum."""

    def __init__(self, answer):
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)
        self.path = os.ttyname(self.slave)
        self.answer = answer
        self.requests = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self):
        buf = bytearray()
        while not self._stop.is_set():
            if not select.select([self.master], [], [], 0.02)[0]:
                buf.clear()   # an idle line drops a half frame
                continue
            try:
                buf += os.read(self.master, 512)
            except OSError:
                continue
            while buf:
                frame, used = _split(buf)
                if not used:
                    break
                del buf[:used]
                if frame:
                    self.requests.append(frame)
                    reply = self.answer(frame)
                    if reply:
                        os.write(self.master, reply)

    def close(self):
        self._stop.set()
        self._thread.join(timeout=5)
        os.close(self.master)
        os.close(self.slave)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# the demo meter's telegram (README "The trace"): address 3, ID 12345678, access number 0
DEMO_RSP_UD = bytes.fromhex("68 18 18 68 08 03 72 78 56 34 12 74 52 01 00 00 00 00 00 "
                            "02 FD 49 D2 04 02 16 C8 01 57 16")


def pymbusslave(address=3):
    """How the original pyMbusSlave answers (8N1, which a pty cannot show): every frame to
    its address at once, before the EN 13757-2 window opens, its checksum unchecked;
    SND_NKE and SND_UD with E5, REQ_UD2 with one fixed telegram."""
    def answer(frame):
        c, a = (frame[1], frame[2]) if frame[0] == 0x10 else (frame[4], frame[5])
        if a not in (address, 254):
            return b""
        if frame[0] == 0x10 and c & 0x4F == 0x4B:
            return DEMO_RSP_UD
        return b"\xe5"
    return answer
