# mbus_core.codec: what only the host and the tools import, never a board: the VIF table,
# records built from quantities and units and decoded back, the JSON meter model,
# captured traffic. The runtime (mbus_core's own modules) serves what it produces.
