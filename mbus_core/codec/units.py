# Quantities and units by name, for people writing meter descriptions.
#
# QUANTITIES: (quantity names, families). A family is (units, codes):
#   units: ((unit name, power of ten of the family's base unit), ...)
#   codes: ((vif prefix bytes, first code, exponent of the first code, count), ...)
#          the n-th code of a run has the exponent first + n (in the base unit)
# TIMED: quantities whose unit picks the code directly (no power of ten)
# PLAIN: quantities without a unit: one VIF, the value is sent as it is.

_E = b""
_FD = b"\xfd"
_FB = b"\xfb"

WH = ((("Wh", 0), ("kWh", 3), ("MWh", 6), ("GWh", 9)),
      ((_E, 0x00, -3, 8), (_FB, 0x00, 5, 2)))
J = ((("J", 0), ("kJ", 3), ("MJ", 6), ("GJ", 9)),
     ((_E, 0x08, 0, 8), (_FB, 0x08, 8, 2)))
W = ((("W", 0), ("kW", 3), ("MW", 6)),
     ((_E, 0x28, -3, 8), (_FB, 0x28, 5, 2)))
JH = ((("J/h", 0), ("kJ/h", 3), ("MJ/h", 6), ("GJ/h", 9)),
      ((_E, 0x30, 0, 8), (_FB, 0x30, 8, 2)))
M3 = ((("m3", 0), ("m^3", 0), ("l", -3), ("ml", -6)),
      ((_E, 0x10, -6, 8), (_FB, 0x10, 2, 2)))
FT3 = ((("ft3", 0), ("feet^3", 0)), ((_FB, 0x21, -1, 1),))
GAL = ((("gal", 0), ("gallon", 0)), ((_FB, 0x22, -1, 2),))
KG = ((("kg", 0), ("g", -3), ("t", 3)),
      ((_E, 0x18, -3, 8), (_FB, 0x18, 5, 2)))
M3H = ((("m3/h", 0), ("m^3/h", 0), ("l/h", -3)), ((_E, 0x38, -6, 8),))
M3MIN = ((("m3/min", 0), ("m^3/min", 0), ("l/min", -3)), ((_E, 0x40, -7, 8),))
M3S = ((("m3/s", 0), ("m^3/s", 0), ("l/s", -3), ("ml/s", -6)), ((_E, 0x48, -9, 8),))
KGH = ((("kg/h", 0), ("g/h", -3), ("t/h", 3)), ((_E, 0x50, -3, 8),))
BAR = ((("bar", 0), ("mbar", -3)), ((_E, 0x68, -3, 4),))
V = ((("V", 0), ("mV", -3), ("kV", 3)), ((_FD, 0x40, -9, 16),))
A = ((("A", 0), ("mA", -3), ("kA", 3)), ((_FD, 0x50, -12, 16),))
CUR = ((("currency", 0),), ((_FD, 0x00, -3, 4),))
DEBIT = ((("currency", 0),), ((_FD, 0x04, -3, 4),))
C_NAMES = (("C", 0), ("\u00b0C", 0), ("degC", 0))
F_NAMES = (("F", 0), ("\u00b0F", 0), ("degF", 0))
K_NAMES = (("K", 0), ("mK", -3))


def _temp(code, fcode):
    return ((C_NAMES, ((_E, code, -3, 4),)), (F_NAMES, ((_FB, fcode, -3, 4),)))


QUANTITIES = (
    (("energy",), (WH, J)),
    (("volume",), (M3, FT3, GAL)),
    (("mass",), (KG,)),
    (("power",), (W, JH)),
    (("volume flow", "flow"), (M3H, M3MIN, M3S)),
    (("mass flow",), (KGH,)),
    (("flow temperature",), _temp(0x58, 0x58)),
    (("return temperature",), _temp(0x5C, 0x5C)),
    (("temperature difference",), ((K_NAMES, ((_E, 0x60, -3, 4),)),
                                   (F_NAMES, ((_FB, 0x60, -3, 4),)))),
    (("external temperature", "temperature"), _temp(0x64, 0x64)),
    (("pressure",), (BAR,)),
    (("voltage",), (V,)),
    (("current",), (A,)),
    (("credit",), (CUR,)),
    (("debit",), (DEBIT,)),
)

SEC = (("s", 0), ("min", 1), ("h", 2), ("d", 3))
LONG = (("h", 0), ("d", 1), ("month", 2), ("year", 3))
SEC6 = (("s", 0), ("min", 1), ("h", 2), ("d", 3), ("month", 4), ("year", 5))

# (names, unit table, vif prefix, first code)
TIMED = (
    (("on time",), SEC, _E, 0x20),
    (("operating time",), SEC, _E, 0x24),
    (("averaging duration",), SEC, _E, 0x70),
    (("actuality duration",), SEC, _E, 0x74),
    (("storage interval",), SEC6, _FD, 0x24),
    (("duration since last readout",), SEC, _FD, 0x2C),
    (("period of tariff",), SEC6, _FD, 0x34),
    (("duration since last cumulation",), LONG, _FD, 0x68),
    (("operating time battery", "battery time"), LONG, _FD, 0x6C),
)

# (names, vif bytes, default type)
PLAIN = (
    (("date",), b"\x6c", "date"),
    (("datetime", "date time", "date and time", "time point"), b"\x6d", "datetime"),
    (("hca", "h.c.a.", "heat cost allocation"), b"\x6e", "int32"),
    (("fabrication number", "fabrication no", "fabrication"), b"\x78", "bcd8"),
    (("enhanced identification", "identification"), b"\x79", "bcd12"),
    (("bus address", "address"), b"\x7a", "int8"),
    (("manufacturer specific",), b"\x7f", "int32"),
    (("access number",), b"\xfd\x08", "int8"),
    (("medium",), b"\xfd\x09", "int8"),
    (("manufacturer",), b"\xfd\x0a", "int16"),
    (("parameter set identification", "parameter set"), b"\xfd\x0b", "int16"),
    (("model/version", "model / version", "model", "text"), b"\xfd\x0c", "text"),
    (("hardware version",), b"\xfd\x0d", "int8"),
    (("firmware version",), b"\xfd\x0e", "int8"),
    (("software version",), b"\xfd\x0f", "int8"),
    (("customer location",), b"\xfd\x10", "text"),
    (("customer",), b"\xfd\x11", "text"),
    (("error flags",), b"\xfd\x17", "int16"),
    (("error mask",), b"\xfd\x18", "int16"),
    (("digital output",), b"\xfd\x1a", "int8"),
    (("digital input",), b"\xfd\x1b", "int8"),
    (("baudrate",), b"\xfd\x1c", "int16"),
    (("response delay time", "response delay"), b"\xfd\x1d", "int16"),
    (("retry",), b"\xfd\x1e", "int8"),
    (("dimensionless",), b"\xfd\x3a", "int32"),
    (("reset counter",), b"\xfd\x60", "int16"),
    (("cumulation counter",), b"\xfd\x61", "int32"),
    (("control signal",), b"\xfd\x62", "int8"),
    (("day of week",), b"\xfd\x63", "int8"),
    (("week number",), b"\xfd\x64", "int8"),
    (("battery change", "date and time of battery change"), b"\xfd\x70", "datetime"),
    (("daylight saving", "dst", "daylight saving time"), b"\xfd\x72", "dst"),
)


def find_quantity(name):
    """-> ("scaled", families) | ("timed", (units, prefix, code)) |
    ("plain", (vif, default type)) | None"""
    n = name.strip().lower()
    for names, families in QUANTITIES:
        if n in names:
            return "scaled", families
    for names, units, prefix, code in TIMED:
        if n in names:
            return "timed", (units, prefix, code)
    for names, vif, dtype in PLAIN:
        if n in names:
            return "plain", (vif, dtype)
    return None


def quantity_names():
    out = []
    for names, x in QUANTITIES:
        out.append(names[0])
    for entry in TIMED:
        out.append(entry[0][0])
    for entry in PLAIN:
        out.append(entry[0][0])
    out.append("custom")
    return out


def unit_names(kind, info):
    out = []
    if kind == "scaled":
        for units, codes in info:
            for u, p in units:
                out.append(u)
    elif kind == "timed":
        for u, n in info[0]:
            out.append(u)
    return out


def default_unit(kind, info):
    if kind == "scaled":
        return info[0][0][0][0]
    if kind == "timed":
        return info[0][0][0]
    return None
