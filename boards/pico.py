# Raspberry Pi Pico / Pico W (RP2040): the M-Bus transceiver (TSS721A or similar) on
# UART0, TX = GP0, RX = GP1, 2400 8E1. Optional TX-enable pin (None: not used), the
# on-board LED toggles on every reply, a 8 s watchdog (the RP2040 maximum is 8.3 s).
# Edit the constants below or put overrides in /board.json (same keys as boards/generic).
from machine import Pin

from mbus_ports.upy_uart import UartPort

NAME = "pico"
UART_ID = 0
TX_PIN = 0
RX_PIN = 1
TX_ENABLE_PIN = None
BAUD = 2400
WDT_MS = 8000
meter_path = "/meter.json"
state_path = "/mbus_state.json"
config = {}

try:
    led = Pin("LED", Pin.OUT)   # Pico and Pico W
except (TypeError, ValueError):
    led = Pin(25, Pin.OUT)


def load_overrides(path="/board.json"):
    """Settings from /board.json (when it exists) over the defaults above."""
    global UART_ID, TX_PIN, RX_PIN, TX_ENABLE_PIN, BAUD, WDT_MS
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
    BAUD = c.get("baud", BAUD)
    WDT_MS = c.get("wdt_ms", WDT_MS)
    config.update(c)


load_overrides()


def make_port(baud):
    txen = None if TX_ENABLE_PIN is None else Pin(TX_ENABLE_PIN, Pin.OUT, value=0)
    return UartPort(uart_id=UART_ID, baud=baud, tx=Pin(TX_PIN), rx=Pin(RX_PIN),
                    tx_enable=txen)


def wdt():
    if not WDT_MS:
        return None
    from machine import WDT
    return WDT(timeout=WDT_MS)
