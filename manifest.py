# Freeze the M-Bus slave core into a MicroPython firmware image (the bytecode stays in
# flash: no RAM for the code, nothing to copy). Make a manifest of your own that keeps the
# port's default modules and adds this one:
#
#     include("$(PORT_DIR)/boards/manifest.py")
#     include("/path/to/mbus-slave/manifest.py")
#
# and build with it, e.g. `make -C ports/rp2 BOARD=RPI_PICO FROZEN_MANIFEST=/path/to/it`.
# The port files and the board file (mbus_ports/, mbus_boards/) stay in /lib:
# `mbus-deploy --board pico --frozen-core` copies only those.
metadata(description="Wired M-Bus (EN 13757-2/-3) slave core", version="0.1.0")

package("mbus_core")
