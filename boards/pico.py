# Raspberry Pi Pico / Pico W (RP2040): the M-Bus transceiver (TSS721A or similar) on
# UART0, TX = GP0, RX = GP1, 2400 8E1, no TX-enable pin, the on-board LED toggles on every
# reply ("LED" on Pico W and newer firmware, else GP25), an 8 s watchdog (the RP2040
# maximum is 8.3 s). /board.json changes any of it: the keys are in boards/board_config.py.
from mbus_boards.board_config import configure

NAME = "pico"
DEFAULTS = {"uart": 0, "tx": 0, "rx": 1, "led": ("LED", 25), "wdt_ms": 8000}

# sets config, BAUD, meter_path, state_path, led, make_port(baud) and wdt() here
configure(globals(), DEFAULTS)
del configure   # the firmware drops the loader after the start: nothing here keeps it
