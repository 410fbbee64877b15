"""The emulated Raspberry Pi Pico (tools/pico-sim): the node harness and its Python side."""
