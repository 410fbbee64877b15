# mbus_core: the sans-IO M-Bus slave core (EN 13757-2 link layer, EN 13757-3 application
# layer). Runs unchanged on CPython and MicroPython; imports nothing but struct,
# micropython and itself.
__version__ = "0.1.0"
