"""mbus-check against our own meters: mbus-slave on a pty and over TCP, and the
MicroPython firmware under tools/upy-sim. Every check passes; the ones that cannot run
there say why (SKIP)."""
import json

from mbus_tools.check_report import RULE_IDS
from tests.checkhelp import TIMEOUT, UpySim, big_meter, problems, run, run_json

# what a pty or TCP cannot show (parity, gaps), what one meter cannot (collisions), and a
# variable-data meter has no CI 73 fixed data
SKIPS = {"link.parity", "link.gaps", "link.collision", "app.fixed"}


def assert_all_pass(status, results):
    assert problems(results) == {}
    assert status == 0
    assert set(results) == set(RULE_IDS)
    assert {k for k, r in results.items() if r["status"] == "SKIP"} == SKIPS


def test_slave_on_a_pty_passes_every_check(slave_factory, tmp_path):
    s = slave_factory("--meter", big_meter(tmp_path))
    status, doc, res = run_json(s.path, "--addr", 9, "--timeout", TIMEOUT, "--allow-writes")
    assert_all_pass(status, res)
    assert doc["line"] == "pty" and doc["telegrams"] == 3
    assert "same position, fresh values" in res["fcb.repeat"]["message"]
    assert "90001234" in res["sec.enhanced"]["message"]
    assert "a pty carries no parity" in res["link.parity"]["message"]
    # the multi-telegram readout was walked: telegram 1 and 2 end with 1F
    assert len(res["app.special"]["info"]) == 2


def test_slave_over_tcp_passes_every_check(tcp_factory, tmp_path):
    s = tcp_factory("--meter", big_meter(tmp_path))
    status, doc, res = run_json("tcp:%s:%d" % (s.host, s.port), "--addr", 9, "--timeout",
                                TIMEOUT, "--allow-writes")
    assert_all_pass(status, res)
    assert doc["line"] == "net"
    assert any("TCP" in i for i in res["link.timing"]["info"])


def test_micropython_firmware_passes_every_check(tmp_path):
    with UpySim("--meter", big_meter(tmp_path)) as sim:
        status, doc, res = run_json(sim.path, "--addr", 9, "--timeout", TIMEOUT,
                                    "--allow-writes")
        # a second run on the same pty (which nobody parks: see check_io.park_pty)
        again = run(sim.path, "--addr", 9, "--timeout", TIMEOUT, "--only", "link.ack")
        out = sim.stop()
    assert_all_pass(status, res)
    assert again[0] == 0, again
    assert "Traceback" not in out


def test_text_report_of_a_pyserial_url(tcp_factory, tmp_path):
    s = tcp_factory("--meter", big_meter(tmp_path))
    status, out, err = run(s.url(), "--addr", 9, "--timeout", TIMEOUT, "--only",
                           "link.ack,fcb")
    assert status == 0, out + err
    lines = out.splitlines()
    assert lines[0].startswith("mbus-check socket://") and "address 9" in lines[0]
    assert lines[1].startswith("Meter: ID 11223344, ABC, version 1, medium 07 (Water)")
    rows = [ln.split()[:2] for ln in lines if ln[:4] in ("PASS", "FAIL", "WARN", "SKIP")]
    assert rows == [["PASS", r] for r in ("link.ack", "fcb.repeat", "fcb.advance",
                                          "fcb.reset", "fcb.readout-end")]
    assert lines[-1] == "Summary: 5 PASS, 0 FAIL, 0 WARN, 0 SKIP"


def test_strict_repeats_are_byte_identical(slave_factory, tmp_path):
    s = slave_factory("--meter", big_meter(tmp_path), "--strict-repeat")
    status, doc, res = run_json(s.path, "--addr", 9, "--timeout", TIMEOUT, "--only", "fcb")
    assert status == 0 and problems(res) == {}
    assert "byte-identical" in res["fcb.repeat"]["message"]


def test_found_by_secondary_address_with_ci56_select(slave_factory, tmp_path):
    s = slave_factory("--meter", big_meter(tmp_path, address=17), "--ci56", "select")
    status, doc, res = run_json(s.path, "--secondary", "11223344", "--ci56", "select",
                                "--timeout", TIMEOUT, "--only", "sec,app.identity")
    assert status == 0 and problems(res) == {}
    assert doc["address"] == 17   # learned from the RSP_UD at 253
    assert res["sec.ci56"]["status"] == "PASS"


def test_fixed_data_and_short_header_meters(slave_factory, tmp_path):
    fixed = {"ci": "fixed", "fixed": {"unit1": 19, "counter1": 1234, "unit2": 19,
                                      "counter2": 5}}
    s = slave_factory("--bus", _bus(tmp_path, [dict(address=4, id=44556677, **fixed),
                                               dict(address=5, id=55667788, ci="7A")]))
    status, _, res = run_json(s.path, "--addr", 4, "--timeout", TIMEOUT, "--only",
                              "app,sec.select")
    assert status == 0 and problems(res) == {}
    assert res["app.fixed"]["status"] == "PASS" and "1234" in res["app.fixed"]["message"]
    assert res["sec.select"]["status"] == "PASS"
    # CI 7A carries no ID: secondary addressing needs it from --secondary
    status, _, res = run_json(s.path, "--addr", 5, "--timeout", TIMEOUT, "--only",
                              "app.header,sec.select")
    assert res["sec.select"]["status"] == "SKIP" and "--secondary" in res["sec.select"][
        "message"]
    status, _, res = run_json(s.path, "--addr", 5, "--secondary", "55667788", "--timeout",
                              TIMEOUT, "--only", "app.header,sec.select")
    assert status == 0 and res["sec.select"]["status"] == "PASS"


def _bus(tmp_path, meters):
    path = tmp_path / "bus.json"
    path.write_text(json.dumps({"meters": meters}))
    return str(path)

