"""mbus-check's own test: mbus-slave with each --fault kind (ports/faults.py) switched on.
The rule that should catch the fault FAILs and names its symptom, with the bytes; a
checker that cannot fail is worthless."""
import re

import pytest

from mbus_ports import faults
from mbus_tools.check_io import Exchange
from tests.checkhelp import DEMO_RSP_UD, TIMEOUT, PtyMeter, big_meter, run, run_json

# the rules whose requests want an answer (no silent waits: a fault run stays short)
ONLY = "link.ack,link.reply,link.frame,link.timing,link.echo,link.gaps,fcb,app"

# fault spec -> (the rule that catches it, words of its message)
CAUGHT = {
    "drop:0.3": ("link.reply", "no reply"),
    "checksum:0.5": ("link.frame", "checksum"),
    "truncate:0.5": ("link.frame", "incomplete frame"),
    "garbage:0.5": ("link.frame", "after the frame's end"),
    "wrong-address:0.5": ("link.frame", "reply to address 9 carries address"),
    "delay:early": ("link.timing", "early: before the window opens"),
    "ignore-fcb": ("fcb.repeat", "the meter ignores the FCB"),
    "busy:every:3": ("app.error", "Application busy"),
    # line faults: the converter's echo, noise before a reply, pauses inside one (longer
    # than pyMeterBus's 200 ms character timeout at 2400 baud), a meter off for 1 s
    "echo": ("link.echo", "an echo of the request (10 40 09 49 16)"),
    "noise:0.5": ("link.frame", "before the frame's start"),
    "gaps:300:0.3": ("link.gaps", "a pause a master's character timeout cuts"),
    "split:300:0.3": ("link.gaps", "a pause a master's character timeout cuts"),
    "power:every:10:1": ("link.reply", "no reply"),
}
LATE = "delay:late"


def test_every_fault_kind_has_a_case():
    covered = {spec.split(":")[0] for spec in list(CAUGHT) + [LATE]}
    # security faults need a decrypting master (mbus-check has no key, see
    # tests/test_security.py); idle-close is a TCP gateway's, not a meter's (see
    # tests/test_line_faults.py; mbus-check over TCP stops with a one-line error)
    assert covered == set(faults.KINDS) - {faults.SECURITY, faults.IDLE_CLOSE}


@pytest.mark.parametrize("spec", sorted(CAUGHT))
def test_fault_is_caught(spec, slave_factory, tmp_path):
    rule, words = CAUGHT[spec]
    s = slave_factory("--meter", big_meter(tmp_path), "--fault", spec, "--fault-seed", "1")
    status, doc, res = run_json(s.path, "--addr", 9, "--timeout", TIMEOUT, "--only", ONLY)
    assert status == 1
    assert res[rule]["status"] == "FAIL", res[rule]
    assert words in res[rule]["message"]
    assert res[rule]["exchanges"], "a failure shows the bytes sent and received"
    assert doc["exit_status"] == 1


def test_late_replies_are_caught(slave_factory):
    s = slave_factory("--fault", LATE)   # the demo meter: one telegram, fewer waits
    status, _, res = run_json(s.path, "--addr", 3, "--timeout", "0.5", "--only",
                              "link.timing")
    assert status == 1
    r = res["link.timing"]
    assert r["status"] == "FAIL" and "late: after the window closed" in r["message"]
    assert all(x["first_byte_ms"] > 187.5 for x in r["exchanges"])


def test_replies_inside_the_window_pass(slave_factory):
    s = slave_factory("--fault", "delay:inside", "--fault-seed", "3")
    status, _, res = run_json(s.path, "--addr", 3, "--timeout", "0.3", "--only",
                              "link.timing")
    assert status == 0 and res["link.timing"]["status"] == "PASS"


def test_a_read_only_meter_fails_the_writes_it_refuses(slave_factory, tmp_path):
    s = slave_factory("--meter", big_meter(tmp_path), "--read-only")
    status, _, res = run_json(s.path, "--addr", 9, "--timeout", TIMEOUT, "--allow-writes",
                              "--only", "write.address")
    assert status == 1
    assert res["write.address"]["message"] == ("set primary address 9 -> 10 got E5, but the "
                                               "meter still answers at 9, not at 10")


# -- line faults, byte for byte against what the slave logged -----------------------------
def _logged(slave, pattern):
    """The groups of every fault line in the slave's log that matches pattern."""
    return [m.groups() for m in re.finditer(pattern, slave.log())]


def test_noise_is_named_byte_for_byte(slave_factory, tmp_path):
    s = slave_factory("--meter", big_meter(tmp_path), "--fault", "noise", "--fault-seed",
                      "5")
    status, _, res = run_json(s.path, "--addr", 9, "--timeout", TIMEOUT, "--only",
                              "link.frame,link.timing")
    r = res["link.frame"]
    assert status == 1 and r["status"] == "FAIL"
    noise = [g[1] for g in _logged(s, r"fault: (\d+) noise bytes \(([0-9A-F ]+)\)")]
    assert noise, s.log()
    # every reply came after noise: each exchange shows it ahead of the frame's start
    seen = [x["received"][:len(n)] for x, n in zip(r["exchanges"], noise)]
    assert seen == noise and len(r["exchanges"]) == len(noise)
    shown = [r["message"].split(": ", 1)[1]] + r["info"][:-1]
    for text in shown:   # "2 byte(s) before the frame's start: 3A C1", as the slave sent
        m = re.match(r"(\d+) byte\(s\) before the frame's start: ([0-9A-F ]+)$", text)
        assert m and m.group(2) in noise and int(m.group(1)) == len(m.group(2).split())
    assert "lose the whole reply" in r["info"][-1]
    # the frame behind the noise is timed, not the noise
    assert res["link.timing"]["status"] == "PASS"


@pytest.mark.parametrize("spec", ["gaps:300", "split:300"])
def test_pauses_are_found_where_the_slave_made_them(spec, slave_factory, tmp_path):
    s = slave_factory("--meter", big_meter(tmp_path), "--fault", spec, "--fault-seed", "2")
    status, _, res = run_json(s.path, "--addr", 9, "--timeout", TIMEOUT, "--only",
                              "link.gaps")
    r = res["link.gaps"]
    assert status == 1 and r["status"] == "FAIL", r
    if spec.startswith("gaps"):
        made = [int(a) for g in _logged(s, r"pauses after byte ([\d, ]+) \(")
                for a in g[0].split(", ")]
    else:
        made = [int(g[0]) for g in _logged(s, r"in two bursts: (\d+) bytes")]
    found = [re.search(r": (\d+) ms after byte (\d+) of", line).groups()
             for line in r["info"][1:] if " ms after byte " in line]
    assert found and [int(after) for _, after in found] == made[:len(found)]


def test_a_known_echo_is_skipped_with_echo(slave_factory):
    s = slave_factory("--fault", "echo")
    status, doc, res = run_json(s.path, "--addr", 3, "--timeout", TIMEOUT, "--echo",
                                "--only", "link")
    assert status == 0 and doc["echo"] is True
    assert res["link.echo"]["status"] == "PASS"
    assert "as --echo says" in res["link.echo"]["message"]
    assert res["link.silent"]["status"] == "PASS"   # an echo is no answer


def test_echo_where_the_line_does_not_echo_warns(slave_factory):
    s = slave_factory()
    status, _, res = run_json(s.path, "--addr", 3, "--timeout", TIMEOUT, "--echo",
                              "--only", "link.echo")
    assert status == 0 and res["link.echo"]["status"] == "WARN"
    assert "--echo, but no request came back" in res["link.echo"]["message"]


def test_a_restarted_access_number_is_noted():
    """A stand-in meter whose access number falls back to 0 once (a power-up between two
    REQ_UD2): app.access still sees three rising numbers, and says it restarted."""
    count = [0]

    def answer(frame):
        if frame[0] == 0x10 and frame[1] & 0x4F == 0x4B and frame[2] == 3:
            count[0] += 1
            t = bytearray(DEMO_RSP_UD)
            t[15] = count[0] if count[0] < 2 else count[0] - 2   # 1, then 0, 1, 2, ...
            t[-2] = sum(t[4:-2]) & 0xFF
            return bytes(t)
        return b"\xe5" if frame[0] == 0x10 and frame[2] == 3 else b""

    with PtyMeter(answer) as m:
        status, _, res = run_json(m.path, "--addr", 3, "--timeout", TIMEOUT, "--only",
                                  "app.access")
    r = res["app.access"]
    assert r["status"] == "WARN" and status == 0
    assert "access number restarted during the run (1 -> 0)" in r["message"]


def test_pauses_are_only_what_the_reader_saw_empty():
    """A reader descheduled between two reads sees the bytes late, not a pause: only a
    read that found the line empty proves one."""
    x = Exchange("REQ_UD2 to 3", b"\x10\x7b\x03\x7e\x16", 2400)
    x.data = DEMO_RSP_UD
    x.chunks = [(10.0, 1), (60.0, len(DEMO_RSP_UD) - 1)]
    x.quiet = [None, None]
    assert x.pauses(11000.0 / 2400) == []
    x.chunks = [(10.0, 12), (260.0, len(DEMO_RSP_UD) - 12)]
    x.quiet = [None, 255.0]
    ((ms, after, size),) = x.pauses(11000.0 / 2400)
    assert (round(ms, 1), after, size) == (240.4, 12, len(DEMO_RSP_UD))


def test_a_gateway_that_drops_idle_connections_is_one_line(tcp_factory, tmp_path):
    """idle-close is no meter's fault (no case above): over TCP, mbus-check stops with a
    one-line error that says what probably happened, never a traceback."""
    s = tcp_factory("--meter", big_meter(tmp_path), "--fault", "idle-close:0.1")
    status, out, err = run("tcp:%s:%d" % (s.host, s.port), "--addr", 9, "--timeout", "0.3",
                           "--only", "link.silent")
    assert status == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("mbus-check: error: tcp:")
    assert "(the gateway dropped the connection: an inactivity timeout?)" in err
