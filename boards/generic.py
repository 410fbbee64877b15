# Any board with a machine.UART: UART 1 on the port's default pins, 2400 8E1, no TX-enable
# pin, no LED, no watchdog until /board.json says otherwise, e.g.
#   {"uart": 1, "tx": 4, "rx": 5, "tx_enable": 6, "tx_active": 0, "led": 25, "wdt_ms": 5000}
# Pins are numbers or names (whatever machine.Pin() takes on that port); a missing or null
# "tx" / "rx" keeps the port's default pins for that UART. Every key: boards/board_config.py.
from mbus_boards.board_config import configure

NAME = "generic"
DEFAULTS = {}   # board_config.COMMON is this board

# sets config, BAUD, meter_path, state_path, led, make_port(baud) and wdt() here
configure(globals(), DEFAULTS)
del configure   # the firmware drops the loader after the start: nothing here keeps it
