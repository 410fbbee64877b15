"""mbus-check against what goes wrong in the field: the original pyMbusSlave's behaviour
(a stand-in on a pty that answers every frame at once, bad checksums included), a meter
that never answers, one that answers garbage, a device that does not exist, bad usage:
one clear line, exit status 1 or 2, never a traceback."""
import os
import subprocess
import sys

import pytest

from tests.checkhelp import TIMEOUT, PtyMeter, pymbusslave, run, run_json

CHECK = [sys.executable, "-m", "mbus_tools.check"]


def test_pymbusslave_behaviour_is_named():
    with PtyMeter(pymbusslave(3)) as meter:
        status, _, res = run_json(meter.path, "--addr", 3, "--timeout", TIMEOUT, "--only",
                                  "link,app.access")
    assert status == 1
    timing = res["link.timing"]
    assert timing["status"] == "FAIL" and "early: before the window opens" in timing[
        "message"]
    assert res["link.bad-checksum"]["status"] == "FAIL"
    assert "wrong checksum" in res["link.bad-checksum"]["message"]
    assert [x["label"] for x in res["link.bad-checksum"]["exchanges"]][:2] == [
        "SND_NKE to 3, wrong checksum", "REQ_UD2 to 3, wrong checksum"]
    # one fixed telegram: the access number never moves
    assert res["app.access"]["status"] == "FAIL" and "unchanged" in res["app.access"][
        "message"]
    # 8N1 shows only on a real serial port: the report says so
    assert res["link.parity"]["status"] == "SKIP" and "pty" in res["link.parity"]["message"]


def test_text_report_shows_the_bytes_of_a_failure():
    with PtyMeter(pymbusslave(3)) as meter:
        status, out, err = run(meter.path, "--addr", 3, "--timeout", TIMEOUT, "--only",
                               "link.bad-checksum", "--trace")
    assert status == 1
    assert "SEND 10 40 03 44 16\nRECV E5   (" in err   # --trace: every exchange
    lines = out.splitlines()
    assert lines[2].startswith("FAIL  link.bad-checksum  answers requests with a wrong "
                               "checksum")
    assert lines[3] == "      sent      10 40 03 44 16   (SND_NKE to 3, wrong checksum)"
    assert lines[4].startswith("      received  E5   (first byte after ")
    assert lines[-1] == "Summary: 0 PASS, 1 FAIL, 0 WARN, 0 SKIP"


def test_a_meter_that_never_answers():
    with PtyMeter(lambda frame: b"") as meter:
        status, out, err = run(meter.path, "--addr", 5, "--timeout", TIMEOUT)
    assert status == 1 and out == ""
    assert err == ("mbus-check: no reply from address 5 at 2400 baud (SND_NKE and REQ_UD2, "
                   "3 tries each): check the wiring, --addr and --baud\n")


def test_a_meter_that_answers_garbage():
    with PtyMeter(lambda frame: b"\x3f\xa1\x00\x55") as meter:
        status, out, err = run(meter.path, "--addr", 5, "--timeout", TIMEOUT, "--json")
    assert status == 1 and out == ""
    assert err.startswith("mbus-check: address 5 at 2400 baud answers with no valid M-Bus "
                          "frame (3F A1 00 55)") and err.count("\n") == 1


def _one_line(args, status):
    """Run the installed module as a user would: one stderr line, the status, no
    traceback."""
    out = subprocess.run(CHECK + args, capture_output=True, text=True, timeout=30,
                         stdin=subprocess.DEVNULL)
    assert out.returncode == status, out.stderr
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and "Traceback" not in out.stderr, out.stderr
    return lines[0]


def test_a_device_that_does_not_exist():
    line = _one_line(["/dev/ttyNOSUCH9", "--addr", "5"], 2)
    assert line.startswith("mbus-check: error: cannot open /dev/ttyNOSUCH9: ")


def test_a_gateway_that_refuses():
    import socket
    with socket.socket() as sock:   # a port nobody listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    line = _one_line(["tcp:127.0.0.1:%d" % port, "--addr", "5"], 2)
    assert line.startswith("mbus-check: error: cannot open tcp:127.0.0.1:%d: " % port)


@pytest.mark.parametrize("args, words", [
    ([], "give the DEVICE"),
    (["/dev/null"], "give the meter's --addr or --secondary"),
    (["/dev/null", "--addr", "251"], "primary address must be 0..250"),
    (["/dev/null", "--addr", "5", "--baud", "1000"], "baud rate must be one of"),
    (["/dev/null", "--addr", "5", "--timeout", "0"], "timeout must be"),
    (["/dev/null", "--secondary", "1234"], "want 8 ID digits"),
    (["/dev/null", "--addr", "5", "--only", "link.nosuch"], "no rule 'link.nosuch'"),
])
def test_bad_usage(args, words):
    status, out, err = run(*args)
    assert status == 2 and out == ""
    assert err.startswith("mbus-check: error: ") and words in err and err.count("\n") == 1


def test_list_rules_names_every_rule_and_its_clause():
    from mbus_tools.check_report import RULES
    status, out, _ = run("--list-rules")
    assert status == 0
    for rid, _, clause in RULES:
        assert rid in out and clause in out


def test_console_script_is_installed():
    exe = os.path.join(os.path.dirname(sys.executable), "mbus-check")
    assert os.access(exe, os.X_OK), "pip install -e '.[test]' installs mbus-check"
