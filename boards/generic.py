# Any board with a machine.UART: the UART id and pins come from /board.json, e.g.
#   {"uart": 1, "tx": 4, "rx": 5, "tx_enable": null, "tx_active": 1, "baud": 2400,
#    "wdt_ms": 0, "led": null, "meter": "/meter.json", "state": "/mbus_state.json",
#    "reply_delay_ms": null}
# Pins are numbers or names (whatever machine.Pin() takes on that port); a missing "tx" /
# "rx" keeps the port's default pins for that UART. wdt_ms 0: no watchdog.
import json

from machine import Pin

from mbus_ports.upy_uart import UartPort

NAME = "generic"
CONFIG_PATH = "/board.json"
DEFAULTS = {"uart": 1, "tx": None, "rx": None, "tx_enable": None, "tx_active": 1,
            "baud": 2400, "wdt_ms": 0, "led": None, "meter": "/meter.json",
            "state": "/mbus_state.json"}


def load_config(path=CONFIG_PATH):
    c = dict(DEFAULTS)
    try:
        with open(path) as f:
            data = json.load(f)
    except OSError:
        return c
    except ValueError as e:
        print("mbus: %s: bad JSON (%s); using the defaults" % (path, e))
        return c
    if isinstance(data, dict):
        c.update(data)
    return c


def configure(c):
    """Use the settings dict c (load_config() output) from now on."""
    global config, BAUD, meter_path, state_path, led
    config = c
    BAUD = c["baud"]
    meter_path = c["meter"]
    state_path = c["state"]
    led = None if c["led"] is None else Pin(c["led"], Pin.OUT)


configure(load_config())


def _pin(v):
    return None if v is None else Pin(v)


def make_port(baud):
    c = config
    txen = None
    if c["tx_enable"] is not None:
        txen = Pin(c["tx_enable"], Pin.OUT)
    return UartPort(uart_id=c["uart"], baud=baud, tx=_pin(c["tx"]), rx=_pin(c["rx"]),
                    tx_enable=txen, tx_active=c["tx_active"])


def wdt():
    if not config["wdt_ms"]:
        return None
    from machine import WDT
    return WDT(timeout=config["wdt_ms"])
