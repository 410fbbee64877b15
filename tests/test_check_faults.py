"""mbus-check's own test: mbus-slave with each --fault kind (ports/faults.py) switched on.
The rule that should catch the fault FAILs and names its symptom, with the bytes; a
checker that cannot fail is worthless."""
import pytest

from mbus_ports import faults
from tests.checkhelp import TIMEOUT, big_meter, run_json

# the rules whose requests want an answer (no silent waits: a fault run stays short)
ONLY = "link.ack,link.reply,link.frame,link.timing,fcb,app"

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
}
LATE = "delay:late"


def test_every_fault_kind_has_a_case():
    covered = {spec.split(":")[0] for spec in list(CAUGHT) + [LATE]}
    # security faults need a decrypting master (mbus-check has no key): tests/test_security.py
    assert covered == set(faults.KINDS) - {faults.SECURITY}


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
