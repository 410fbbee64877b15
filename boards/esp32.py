# ESP32: the M-Bus transceiver (TSS721A or similar) on UART2, TX = GPIO17, RX = GPIO16
# (the DevKit's free UART), 2400 8E1, no TX-enable pin, LED on GPIO2, a 10 s watchdog.
# /board.json changes any of it: the keys are in boards/board_config.py.
from mbus_boards.board_config import configure

NAME = "esp32"
DEFAULTS = {"uart": 2, "tx": 17, "rx": 16, "led": 2, "wdt_ms": 10000}

# sets config, BAUD, meter_path, state_path, led, make_port(baud) and wdt() here
configure(globals(), DEFAULTS)
del configure   # the firmware drops the loader after the start: nothing here keeps it
