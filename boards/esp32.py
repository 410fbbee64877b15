# ESP32: the M-Bus transceiver (TSS721A or similar) on UART2, TX = GPIO17, RX = GPIO16
# (the DevKit's free UART), 2400 8E1. Pins, TX-enable, LED and watchdog can be changed in
# /board.json: {"uart": 2, "tx": 17, "rx": 16, "tx_enable": null, "led": 2, "wdt_ms": 10000}
from machine import Pin

from mbus_ports.upy_uart import UartPort

NAME = "esp32"
UART_ID = 2
TX_PIN = 17
RX_PIN = 16
TX_ENABLE_PIN = None
LED_PIN = 2
BAUD = 2400
WDT_MS = 10000
meter_path = "/meter.json"
state_path = "/mbus_state.json"
config = {}


def load_overrides(path="/board.json"):
    """Settings from /board.json (when it exists) over the defaults above."""
    global UART_ID, TX_PIN, RX_PIN, TX_ENABLE_PIN, LED_PIN, BAUD, WDT_MS
    try:
        import json
        with open(path) as f:
            c = json.load(f)
    except (OSError, ValueError):
        return
    UART_ID = c.get("uart", UART_ID)
    TX_PIN = c.get("tx", TX_PIN)
    RX_PIN = c.get("rx", RX_PIN)
    TX_ENABLE_PIN = c.get("tx_enable", TX_ENABLE_PIN)
    LED_PIN = c.get("led", LED_PIN)
    BAUD = c.get("baud", BAUD)
    WDT_MS = c.get("wdt_ms", WDT_MS)
    config.update(c)


load_overrides()
led = None if LED_PIN is None else Pin(LED_PIN, Pin.OUT)


def make_port(baud):
    txen = None if TX_ENABLE_PIN is None else Pin(TX_ENABLE_PIN, Pin.OUT, value=0)
    return UartPort(uart_id=UART_ID, baud=baud, tx=Pin(TX_PIN), rx=Pin(RX_PIN),
                    tx_enable=txen)


def wdt():
    if not WDT_MS:
        return None
    from machine import WDT
    return WDT(timeout=WDT_MS)
