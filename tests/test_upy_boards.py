"""The board files (boards/pico.py, esp32.py, generic.py), their /board.json loader and the
UART adapter under the MicroPython unix port, with a stand-in `machine` module (a machine.py
first on sys.path overrides the built-in one): which UART they open with which settings,
that the firmware answers through it, switches the baud rate with uart.init(), drives a
TX-enable pin around each reply, feeds the watchdog and persists a changed address; that
every /board.json key works alike on every board and a bad file keeps the defaults."""
import json
import os
import shutil
import subprocess
import sys

import pytest

from mbus_tools import deploy

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FAKE_MACHINE = '''
LOG = []


class Pin:
    OUT = 1
    IN = 0

    def __init__(self, id, mode=None, value=None):
        if id == "NOPE":  # a pin this port does not have
            raise ValueError("invalid pin")
        self.id = id
        self.v = value or 0
        LOG.append(["Pin", id])

    def value(self, v=None):
        if v is None:
            return self.v
        self.v = v
        LOG.append(["pin", self.id, v])

    def __repr__(self):
        return "Pin(%r)" % (self.id,)


class UART:
    INPUT = []

    def __init__(self, id, **kw):
        if id == 7:  # a UART this port does not have
            raise ValueError("UART(7) doesn't exist")
        kw = dict(kw)
        for k in ("tx", "rx"):
            if k in kw:
                kw[k] = repr(kw[k])
        LOG.append(["UART", id, kw])

    def init(self, **kw):
        LOG.append(["init", kw])

    def readinto(self, buf):
        if not UART.INPUT:
            return None
        d = UART.INPUT.pop(0)
        for i in range(len(d)):
            buf[i] = d[i]
        return len(d)

    def write(self, data):
        LOG.append(["write", bytes(data).hex()])
        return len(data)

    def flush(self):
        LOG.append(["flush"])


class WDT:
    def __init__(self, timeout):
        LOG.append(["WDT", timeout])

    def feed(self):
        LOG.append(["feed"])
'''

DRIVER = '''
import builtins
import json
import machine

_open = builtins.open


def _open_here(path, *args):
    # the board reads /board.json at import; the test's file is in the working directory
    return _open("board.json" if path == "/board.json" else path, *args)


builtins.open = _open_here
import mbus_boards.%(board)s as board
from mbus_ports import upy_firmware as fw
if %(paths)s:
    board.meter_path = "meter.json"
    board.state_path = "state.json"
machine.UART.INPUT = [bytes.fromhex(h) for h in (
    "105B035E16",                      # REQ_UD2 to 3 (the demo meter)
    "68060668530351017A052716",        # SND_UD: set primary address 5
    "6803036853 05BD1516".replace(" ", ""),  # baud switch to 9600 (at address 5)
    "107B058016",                      # REQ_UD2 to 5 (FCB toggled), at the new rate
)]
import sys
STARTED = []


def turn(f):
    # what stays loaded while serving: the modules, what the board package still holds
    if not STARTED:
        pkg = sys.modules["mbus_boards"]
        STARTED.append(sorted(sys.modules))
        STARTED.append("board_config" in pkg.__dict__)


fw.run(board, steps=12, turn=turn)
print("STARTED " + json.dumps(STARTED))
print("MODULES " + json.dumps(sorted(sys.modules)))
print("RESULT " + json.dumps(machine.LOG))
'''


def run_board(tmp_path, board, files=None, board_json=None, state="state.json",
              driver=DRIVER):
    """Run the firmware with the board file `board` for 12 loop turns (or `driver`, which
    prints RESULT ...); board_json: the text of /board.json (a dict is dumped). Returns
    (machine log, stdout, saved state)."""
    mpy = os.path.join(os.path.dirname(sys.executable), "micropython")
    if not os.access(mpy, os.X_OK):
        mpy = shutil.which("micropython")
    lib = tmp_path / "lib"
    for src, dest in deploy.shipped_files(board):
        (lib / dest).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(os.path.join(ROOT, src), str(lib / dest))
    (tmp_path / "machine.py").write_text(FAKE_MACHINE)
    files = dict(files or {})
    if board_json is not None:
        files["board.json"] = (board_json if isinstance(board_json, str)
                               else json.dumps(board_json))
    for name, text in files.items():
        (tmp_path / name).write_text(text)
        if name != "board.json" and name.endswith(".json"):  # a meter: compiled on the
            compiled = deploy.compile_meter(str(tmp_path / name))  # host, as mbus-deploy
            (tmp_path / (name[:-5] + ".mbus.json")).write_text(compiled)
    paths = state == "state.json"  # else /board.json names the meter and state files
    (tmp_path / "driver.py").write_text(driver % {"board": board, "paths": paths})
    env = dict(os.environ, MICROPYPATH=":" + str(lib))
    out = subprocess.run([mpy, "driver.py"], cwd=str(tmp_path), env=env, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr
    lines = [ln for ln in out.stdout.splitlines() if ln.startswith("RESULT ")]
    assert lines, out.stdout + out.stderr
    state = json.loads((tmp_path / state).read_text())
    return json.loads(lines[0][7:]), out.stdout, state


def check_serving(log, state):
    writes = [e[1] for e in log if e[0] == "write"]
    assert writes[0].startswith("68") and writes[0][12:14] == "72"   # RSP_UD, CI 72
    assert writes[1:3] == ["e5", "e5"]
    assert writes[3].startswith("68") and writes[3][10:12] == "05"   # answered at 5
    inits = [e[1] for e in log if e[0] == "init"]
    assert inits and inits[0]["baudrate"] == 9600
    assert inits[0]["bits"] == 8 and inits[0]["parity"] == 0 and inits[0]["stop"] == 1
    assert inits[0]["timeout_char"] >= 2
    assert state["meters"]["0"]["address"] == 5 and state["baud"] == 9600


def test_pico_uart0_gp0_gp1_8e1_watchdog(tmp_path):
    log, out, state = run_board(tmp_path, "pico")
    uart = [e for e in log if e[0] == "UART"][0]
    assert uart[1] == 0
    kw = uart[2]
    assert kw["tx"] == "Pin(0)" and kw["rx"] == "Pin(1)"
    assert (kw["baudrate"], kw["bits"], kw["parity"], kw["stop"]) == (2400, 8, 0, 1)
    assert kw["timeout_char"] >= 2 and kw["timeout"] > 0
    assert ["WDT", 8000] in log and log.count(["feed"]) == 12
    assert ["Pin", "LED"] in log
    check_serving(log, state)


def test_esp32_uart2_pins_17_16(tmp_path):
    log, out, state = run_board(tmp_path, "esp32")
    uart = [e for e in log if e[0] == "UART"][0]
    assert uart[1] == 2 and uart[2]["tx"] == "Pin(17)" and uart[2]["rx"] == "Pin(16)"
    assert ["WDT", 10000] in log
    check_serving(log, state)


def test_esp32_pins_from_board_json(tmp_path):
    cfg = {"uart": 1, "tx": 10, "rx": 9, "wdt_ms": 0}
    log, out, state = run_board(tmp_path, "esp32", board_json=cfg)
    uart = [e for e in log if e[0] == "UART"][0]
    assert uart[1] == 1 and uart[2]["tx"] == "Pin(10)" and uart[2]["rx"] == "Pin(9)"
    assert not [e for e in log if e[0] == "WDT"]


def test_generic_board_from_json_with_tx_enable(tmp_path):
    cfg = {"uart": 3, "tx": 4, "rx": 5, "tx_enable": 6, "baud": 2400, "wdt_ms": 5000}
    log, out, state = run_board(tmp_path, "generic", board_json=cfg)
    uart = [e for e in log if e[0] == "UART"][-1]
    assert uart[1] == 3 and uart[2]["tx"] == "Pin(4)" and uart[2]["rx"] == "Pin(5)"
    assert ["WDT", 5000] in log
    # TX-enable: high before the first byte, low only after the flush
    seq = [e for e in log if e[0] in ("write", "flush") or (e[0] == "pin" and e[1] == 6)]
    first = [i for i, e in enumerate(seq) if e[0] == "write"][0]
    assert seq[first - 1] == ["pin", 6, 1]
    assert seq[first + 1] == ["flush"] and seq[first + 2] == ["pin", 6, 0]
    check_serving(log, state)


@pytest.mark.parametrize("path", ["ports/upy_uart.py", "ports/upy_firmware.py",
                                  "boards/pico.py", "boards/esp32.py", "boards/generic.py",
                                  "boards/unix.py", "boards/board_config.py"])
def test_board_side_imports_are_installed_names(path):
    """Inside ports/ and boards/ siblings are imported as on a device: mbus_ports.x."""
    import ast
    with open(os.path.join(ROOT, path)) as f:
        tree = ast.parse(f.read())
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            assert node.level == 0
            assert not (node.module or "").startswith(("ports", "boards"))


def test_config_modules_unloaded_and_generated_values_still_served(tmp_path):
    """Once the meters are built the firmware drops the JSON model, the record codec and
    the VIF/unit tables (most of the core's RAM); counters and random walks keep working."""
    with open(os.path.join(ROOT, "examples", "water-meter.json")) as f:
        meter = json.load(f)
    meter["address"] = 3
    log, out, state = run_board(tmp_path, "pico", files={"meter.json": json.dumps(meter)})
    modules = json.loads([ln for ln in out.splitlines() if ln.startswith("MODULES ")][0][8:])
    for name in ("mbus_core.codec.model", "mbus_core.codec.records", "mbus_core.codec.vif",
                 "mbus_ports.config"):
        assert name not in modules
    assert "mbus_core.live_record" in modules and "mbus_core.generators" in modules
    writes = [e[1] for e in log if e[0] == "write"]
    first = bytes.fromhex(writes[0])
    assert first[6] == 0x72 and first[7:11] == bytes.fromhex("89674523")  # ID 23456789
    assert len(first) > 19 + 8 * 4  # the eight records of the water meter


# -- /board.json: one loader (boards/board_config.py), the same keys on every board -------

BOARDS = ("pico", "esp32", "generic")
DEFAULT_UART = {"pico": [0, "Pin(0)", "Pin(1)"], "esp32": [2, "Pin(17)", "Pin(16)"],
                "generic": [1, None, None]}
DEFAULT_WDT = {"pico": 8000, "esp32": 10000, "generic": None}
DEFAULT_LED = {"pico": "LED", "esp32": 2, "generic": None}


def board_lines(out):
    """What the board said about /board.json (one line per problem)."""
    return [ln for ln in out.splitlines() if ln.startswith("mbus: ") and "board.json" in ln]


def check_tx_enable(log, pin, active):
    """Inactive from the start, active from before the first byte until after the flush."""
    seq = [e for e in log if e[0] in ("write", "flush") or (e[0] == "pin" and e[1] == pin)]
    assert seq[0] == ["pin", pin, 1 - active], seq
    first = [i for i, e in enumerate(seq) if e[0] == "write"][0]
    assert seq[first - 1] == ["pin", pin, active], seq
    assert seq[first + 1] == ["flush"] and seq[first + 2] == ["pin", pin, 1 - active], seq


def check_defaults(log, board):
    uart = [e for e in log if e[0] == "UART"][-1]
    want = DEFAULT_UART[board]
    assert [uart[1], uart[2].get("tx"), uart[2].get("rx")] == want
    wdts = [e[1] for e in log if e[0] == "WDT"]
    assert wdts == ([] if DEFAULT_WDT[board] is None else [DEFAULT_WDT[board]])
    leds = [e[1] for e in log if e[0] == "Pin" and e[1] not in (0, 1, 16, 17)]
    assert leds == ([] if DEFAULT_LED[board] is None else [DEFAULT_LED[board]])


@pytest.mark.parametrize("board", BOARDS)
def test_active_low_tx_enable(tmp_path, board):
    """An active-low TX-enable ("tx_active": 0) is low while sending, high otherwise."""
    log, out, state = run_board(tmp_path, board, board_json={"tx_enable": 5, "tx_active": 0})
    check_tx_enable(log, 5, 0)
    check_serving(log, state)


@pytest.mark.parametrize("board", BOARDS)
def test_every_key_works_on_every_board(tmp_path, board):
    with open(os.path.join(ROOT, "examples", "water-meter.json")) as f:
        meter = json.load(f)
    meter["address"] = 3
    cfg = {"uart": 1, "tx": 10, "rx": 9, "tx_enable": 5, "tx_active": 1, "led": 15,
           "baud": 4800, "wdt_ms": 3000, "meter": "water.json", "state": "saved.json",
           "id": 11223344, "reply_delay_ms": 0, "hook": None}
    log, out, state = run_board(tmp_path, board, files={"water.json": json.dumps(meter)},
                                board_json=cfg, state="saved.json")
    assert board_lines(out) == []
    uart = [e for e in log if e[0] == "UART"]
    assert len(uart) == 1
    assert [uart[0][1], uart[0][2]["tx"], uart[0][2]["rx"]] == [1, "Pin(10)", "Pin(9)"]
    assert uart[0][2]["baudrate"] == 4800
    assert [e for e in log if e[0] == "WDT"] == [["WDT", 3000]]
    pins = sorted(str(e[1]) for e in log if e[0] == "Pin")
    assert pins == ["10", "15", "5", "9"]                # no default LED besides pin 15
    assert ["pin", 15, 1] in log and ["pin", 15, 0] in log  # toggles per reply
    check_tx_enable(log, 5, 1)
    writes = [bytes.fromhex(e[1]) for e in log if e[0] == "write"]
    assert writes[0][7:11] == bytes.fromhex("44332211")  # "id" over the meter file's
    assert len(writes[0]) > 19 + 8 * 4                   # the water meter's records
    assert "meter file water.json, state file saved.json" in out
    check_serving(log, state)


@pytest.mark.parametrize("board", BOARDS)
def test_null_led_and_no_watchdog(tmp_path, board):
    log, out, state = run_board(tmp_path, board, board_json={"led": None, "wdt_ms": 0})
    assert not [e for e in log if e[0] == "WDT"]
    assert not [e for e in log if e[0] == "Pin" and e[1] not in (0, 1, 16, 17)]
    check_serving(log, state)


@pytest.mark.parametrize("board", BOARDS)
@pytest.mark.parametrize("text", ['{"uart": 1,', '[1, 2]', '{"tx_active": "low"}',
                                  '{"tx_enable": 5, "tx_active": 2}', '{"wdt_ms": "8s"}',
                                  '{"uart": 1, "led": [25]}', '{"meter": 3}',
                                  '{"baud": 0}', '{"address": 300}'],
                         ids=["not-json", "not-object", "tx_active-text", "tx_active-2",
                              "wdt-text", "led-list", "meter-number", "baud-0",
                              "address-300"])
def test_bad_board_json_logs_one_line_and_keeps_the_defaults(tmp_path, board, text):
    log, out, state = run_board(tmp_path, board, board_json=text)
    assert len(board_lines(out)) == 1, out
    assert "Traceback" not in out
    check_defaults(log, board)
    assert not [e for e in log if e[0] == "pin" and e[1] == 5]
    check_serving(log, state)


@pytest.mark.parametrize("board", BOARDS)
def test_unknown_keys_warn_in_one_line_and_the_rest_applies(tmp_path, board):
    log, out, state = run_board(tmp_path, board,
                                board_json={"uart": 1, "tx_enabel": 5, "colour": "red"})
    lines = board_lines(out)
    assert len(lines) == 1 and "tx_enabel" in lines[0] and "colour" in lines[0], out
    assert [e[1] for e in log if e[0] == "UART"] == [1]
    assert not [e for e in log if e[0] == "Pin" and e[1] == 5]
    check_serving(log, state)


@pytest.mark.parametrize("board", ("pico", "esp32"))
def test_a_uart_or_pin_the_port_lacks_falls_back_to_the_defaults(tmp_path, board):
    """The stand-in has no UART 7 and no pin "NOPE": one line each, the defaults serve."""
    log, out, state = run_board(tmp_path, board, board_json={"uart": 7, "led": "NOPE"})
    lines = board_lines(out)
    assert len(lines) == 2, out
    assert "Traceback" not in out
    check_defaults(log, board)
    check_serving(log, state)


def test_the_loader_is_shipped_with_every_board():
    for board in deploy.BOARDS:
        dests = [d for _, d in deploy.shipped_files(board)]
        assert "mbus_boards/board_config.py" in dests
        assert dests.index("mbus_boards/board_config.py") < dests.index(
            "mbus_boards/%s.py" % board)


# -- start-only code leaves the heap ---------------------------------------------------------

def out_json(out, tag):
    return json.loads([ln for ln in out.splitlines() if ln.startswith(tag + " ")][0]
                      [len(tag) + 1:])


@pytest.mark.parametrize("board", BOARDS)
def test_the_loader_and_the_start_are_dropped_while_serving(tmp_path, board):
    """While serving, the /board.json loader, the start module, the compiled-form loader
    and the state file's module are not loaded: their code is off the heap."""
    log, out, state = run_board(tmp_path, board, board_json={"tx_enable": 5})
    modules, pkg_has_loader = out_json(out, "STARTED")
    for name in ("mbus_boards.board_config", "mbus_ports.upy_start", "mbus_core.compiled",
                 "mbus_ports.state", "mbus_core.notes"):
        assert name not in modules, name
    assert not pkg_has_loader   # the package's attribute would keep it alive
    assert "mbus_boards.%s" % board in modules and "mbus_ports.upy_firmware" in modules
    check_tx_enable(log, 5, 1)   # the settings of /board.json apply all the same
    check_serving(log, state)


AGAIN = DRIVER.replace("fw.run(board, steps=12, turn=turn)", '''fw.run(board, steps=12, turn=turn)
machine.LOG[:] = []
board.make_port(2400)   # a second start: the board file imports its loader again
board.wdt()
''')


def test_the_board_builds_its_port_and_watchdog_again_after_the_drop(tmp_path):
    log, out, state = run_board(tmp_path, "generic", driver=AGAIN,
                                board_json={"uart": 3, "wdt_ms": 4000, "uart_": 1})
    assert [e[:2] for e in log if e[0] in ("UART", "WDT")] == [["UART", 3], ["WDT", 4000]]
    assert "mbus_boards.board_config" in out_json(out, "MODULES")
    assert len(board_lines(out)) == 1   # the unknown key, said once: not read again


@pytest.mark.parametrize("board", BOARDS)
def test_nothing_in_the_board_module_keeps_the_loader(monkeypatch, board):
    """The board module's functions (make_port, wdt) do not belong to the loader: a
    function defined in boards/board_config.py would keep the loader's globals (its code
    and tables) alive after the firmware dropped it. CPython, with a stand-in machine
    module (only the LED is made at import)."""
    import importlib
    import types
    machine = types.ModuleType("machine")
    exec(FAKE_MACHINE, machine.__dict__)
    monkeypatch.setitem(sys.modules, "machine", machine)
    name = "mbus_boards." + board
    monkeypatch.delitem(sys.modules, name, raising=False)
    mod = importlib.import_module(name)
    monkeypatch.delitem(sys.modules, name)
    funcs = [v for v in vars(mod).values() if callable(v)]
    assert {f.__name__ for f in funcs} == {"make_port", "wdt"}
    loader = importlib.import_module("mbus_boards.board_config")
    for f in funcs:
        assert f.__globals__ is not vars(loader), f
    assert "board_config" not in vars(mod) and "configure" not in vars(mod)

