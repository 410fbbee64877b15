# The one /board.json loader of the MicroPython boards (pico, esp32, generic): each board
# file has its defaults and calls configure(globals(), DEFAULTS). The same keys work on
# every board. A headless board must keep serving, so a broken file never stops it: it
# logs one line and the board runs on its defaults. Needed only at start: the firmware
# drops this module once the port and the watchdog are made (the board's make_port() and
# wdt(), upy_firmware.board_hooks, import it again if called later).
import json

from mbus_ports.upy_firmware import board_hooks, log

PATH = "/board.json"

# generic's defaults; a board file overrides the ones its hardware fixes
COMMON = {"uart": 1, "tx": None, "rx": None, "tx_enable": None, "tx_active": 1, "led": None,
          "baud": 2400, "wdt_ms": 0, "meter": "/meter.json", "state": "/mbus_state.json"}

# What a key may hold. pin: a number, a name (whatever machine.Pin() takes) or null
# (not used / the port's default); uart: a number or a name; count: a whole number >= 0;
# rate: > 0; bit: 0/1 or false/true; a "?" also allows null. The keys after "state" are
# read by the firmware from board.config (ports/upy_firmware.py).
KEYS = {"uart": "uart", "tx": "pin", "rx": "pin", "tx_enable": "pin", "tx_active": "bit",
        "led": "pin", "baud": "rate", "wdt_ms": "count", "meter": "text", "state": "text",
        "reply_delay_ms": "count?", "baud_fallback_ms": "count", "address": "count",
        "id": "count", "hook": "text?", "mem_report": "bit", "mem_every": "count",
        "readings_min": "count"}
MAX = {"address": 250, "id": 99999999}   # a primary address; eight BCD digits


def _ok(key, v):
    kind = KEYS[key]
    if v is None:
        return kind == "pin" or kind.endswith("?")
    if isinstance(v, str):
        return kind in ("pin", "uart", "text", "text?")
    if kind == "bit":
        return v in (0, 1)   # also false/true
    if isinstance(v, bool) or not isinstance(v, int) or kind in ("text", "text?"):
        return False
    return (v > 0 if kind == "rate" else v >= 0) and v <= MAX.get(key, v)


def read(path=PATH):
    """The settings in `path` as a dict: {} when there is no file, or (after one logged
    line) when it is not JSON, not an object or has a value of the wrong kind. Unknown
    keys are left out with one warning line."""
    try:
        f = open(path)
    except OSError:
        return {}   # no file: the board's defaults
    try:
        try:
            data = json.load(f)
        finally:
            f.close()
    except Exception as e:   # ValueError (bad JSON), MemoryError, a read error
        log("%s: not JSON (%s); using the board's defaults" % (path, e))
        return {}
    if not isinstance(data, dict):
        log("%s: not a JSON object; using the board's defaults" % path)
        return {}
    unknown = sorted(k for k in data if k not in KEYS)
    if unknown:
        log("%s: unknown key(s) ignored: %s" % (path, ", ".join(unknown)))
    for key in sorted(data):
        if key in KEYS and not _ok(key, data[key]):
            log("%s: bad %s value %s; using the board's defaults"
                % (path, key, json.dumps(data[key])))
            return {}
    return dict((k, data[k]) for k in data if k in KEYS)


def make_led(c):
    """The LED pin or None. The default may be a tuple of candidates (the Pico's "LED"
    name exists only on newer firmware; GP25 before)."""
    from machine import Pin
    specs = c["led"] if isinstance(c["led"], tuple) else (c["led"],)
    err = None
    for spec in specs:
        if spec is None:
            return None
        try:
            return Pin(spec, Pin.OUT)
        except (TypeError, ValueError) as e:
            err = e
    raise err


def make_port(c, baud):
    from machine import Pin
    from mbus_ports.upy_uart import UartPort
    txen = None
    if c["tx_enable"] is not None:   # created inactive: no glitch onto the bus
        txen = Pin(c["tx_enable"], Pin.OUT, value=1 - c["tx_active"])
    tx = None if c["tx"] is None else Pin(c["tx"])
    rx = None if c["rx"] is None else Pin(c["rx"])
    return UartPort(uart_id=c["uart"], baud=baud, tx=tx, rx=rx, tx_enable=txen,
                    tx_active=c["tx_active"])


def make_wdt(c):
    if not c["wdt_ms"]:
        return None
    from machine import WDT
    return WDT(timeout=c["wdt_ms"])


def _build(make, c, base, what):
    """make(c); when the port rejects the file's settings (a pin or UART it does not
    have, a watchdog time above its maximum): one line, then make(base)."""
    if all(c[k] == base[k] for k in COMMON):
        return make(c)   # the board's own defaults: an error there is a bug, raise it
    try:
        return make(c)
    except (OSError, TypeError, ValueError) as e:
        log("%s: %s; using the board's default" % (what, e))
        return make(base)


def _base(board):
    base = dict(COMMON)
    base.update(board["DEFAULTS"])
    return base


def configure(board, defaults, path=PATH):
    """Read `path` over COMMON and the board's `defaults`, and set in `board` (the board
    module's globals()) the names the firmware uses: config, BAUD, meter_path,
    state_path, led, make_port(baud) and wdt() (and DEFAULTS, CONFIG_PATH for port() and
    watchdog()). Nothing set here refers to this module, so that dropping it frees its
    code."""
    board["DEFAULTS"] = defaults
    board["CONFIG_PATH"] = path
    base = _base(board)
    c = base
    data = read(path)
    if data:
        c = dict(base)
        c.update(data)
    board["config"] = c
    board["BAUD"] = c["baud"]
    board["meter_path"] = c["meter"]
    board["state_path"] = c["state"]
    board["led"] = _build(make_led, c, base, path + ": led")
    board["make_port"], board["wdt"] = board_hooks(board)
    return c


def port(board, baud):
    """The board's make_port(baud): the UART port from its config (board: the board
    module's globals(), after configure)."""
    return _build(lambda s: make_port(s, baud), board["config"], _base(board),
                  board["CONFIG_PATH"] + ": uart")


def watchdog(board):
    """The board's wdt(): the watchdog from its config, or None (wdt_ms 0)."""
    return _build(make_wdt, board["config"], _base(board), board["CONFIG_PATH"] + ": wdt_ms")
