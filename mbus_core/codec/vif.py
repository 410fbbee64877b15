# The VIF tables (EN 13757-3): the primary table, the FD and FB extension tables and the
# combinable VIFE codes. One table serves both ways: decoding looks a code up (vif_info),
# and building a record from what a meter author writes ("quantity": "energy", "unit":
# "kWh") takes the codes of that quantity and unit from the same rows (find_quantity,
# below). Decoding names follow libmbus' normalised output (unit strings like "Wh", "m^3",
# "°C" and quantity names like "Volume flow"), so that our decoder and libmbus agree
# record by record. Also here: medium names and the application error names.
#
# A range entry is (first code, count, scale, unit, quantity):
#   scale int   -> factor 10**(scale + n) for the n-th code of the range
#   scale "T", "L", "TL", "TM" -> time: the n-th code has the n-th unit of TIME_UNITS
#               (s, min, h, d / h, d, month, year / s .. year / min, h, d), in seconds
#   scale None  -> factor 1 (no unit scaling)
#   scale "Z"   -> factor 0 (reserved, as libmbus)

SECONDS = (("s", 1), ("min", 60), ("h", 3600), ("d", 86400), ("month", 2629743.83),
           ("year", 31556926.0))
TIME_UNITS = (("T", ("s", "min", "h", "d")), ("L", ("h", "d", "month", "year")),
              ("TL", ("s", "min", "h", "d", "month", "year")), ("TM", ("min", "h", "d")))
DEG = "\u00b0"

PRIMARY = (
    (0x00, 8, -3, "Wh", "Energy"),
    (0x08, 8, 0, "J", "Energy"),
    (0x10, 8, -6, "m^3", "Volume"),
    (0x18, 8, -3, "kg", "Mass"),
    (0x20, 4, "T", "s", "On time"),
    (0x24, 4, "T", "s", "Operating time"),
    (0x28, 8, -3, "W", "Power"),
    (0x30, 8, 0, "J/h", "Power"),
    (0x38, 8, -6, "m^3/h", "Volume flow"),
    (0x40, 8, -7, "m^3/min", "Volume flow"),
    (0x48, 8, -9, "m^3/s", "Volume flow"),
    (0x50, 8, -3, "kg/h", "Mass flow"),
    (0x58, 4, -3, DEG + "C", "Flow temperature"),
    (0x5C, 4, -3, DEG + "C", "Return temperature"),
    (0x60, 4, -3, "K", "Temperature difference"),
    (0x64, 4, -3, DEG + "C", "External temperature"),
    (0x68, 4, -3, "bar", "Pressure"),
    (0x6C, 1, None, "-", "Time point (date)"),
    (0x6D, 1, None, "-", "Time point (date & time)"),
    (0x6E, 1, None, "Units for H.C.A.", "H.C.A."),
    (0x6F, 1, "Z", "Reserved", "Reserved"),
    (0x70, 4, "T", "s", "Averaging Duration"),
    (0x74, 4, "T", "s", "Actuality Duration"),
    (0x78, 1, None, "", "Fabrication No"),
    (0x79, 1, None, "", "(Enhanced) Identification"),
    (0x7A, 1, None, "", "Bus Address"),
    (0x7E, 1, None, "", "Any VIF"),
    (0x7F, 1, None, "", "Manufacturer specific"),
)

R = "Reserved"

FD_TABLE = (
    (0x00, 4, -3, "Currency units", "Credit"),
    (0x04, 4, -3, "Currency units", "Debit"),
    (0x08, 1, None, "", "Access Number (transmission count)"),
    (0x09, 1, None, "", "Medium"),
    (0x0A, 1, None, "", "Manufacturer"),
    (0x0B, 1, None, "", "Parameter set identification"),
    (0x0C, 1, None, "", "Model / Version"),
    (0x0D, 1, None, "", "Hardware version"),
    (0x0E, 1, None, "", "Firmware version"),
    (0x0F, 1, None, "", "Software version"),
    (0x10, 1, None, "", "Customer location"),
    (0x11, 1, None, "", "Customer"),
    (0x12, 1, None, "", "Access Code User"),
    (0x13, 1, None, "", "Access Code Operator"),
    (0x14, 1, None, "", "Access Code System Operator"),
    (0x15, 1, None, "", "Access Code Developer"),
    (0x16, 1, None, "", "Password"),
    (0x17, 1, None, "", "Error flags"),
    (0x18, 1, None, "", "Error mask"),
    (0x19, 1, None, R, R),
    (0x1A, 1, None, "", "Digital Output"),
    (0x1B, 1, None, "", "Digital Input"),
    (0x1C, 1, None, "Baud", "Baudrate"),
    (0x1D, 1, None, "Bittimes", "Response delay time"),
    (0x1E, 1, None, "", "Retry"),
    (0x1F, 1, None, R, R),
    (0x20, 1, None, "", "First storage # for cyclic storage"),
    (0x21, 1, None, "", "Last storage # for cyclic storage"),
    (0x22, 1, None, "", "Size of storage block"),
    (0x23, 1, None, R, R),
    (0x24, 6, "TL", "s", "Storage interval"),
    (0x2A, 2, None, R, R),
    (0x2C, 4, "T", "s", "Duration since last readout"),
    (0x30, 1, None, R, R),
    (0x31, 3, "TM", "s", "Duration of tariff"),
    (0x34, 6, "TL", "s", "Period of tariff"),
    (0x3A, 1, None, "", "Dimensionless"),
    (0x3B, 5, None, R, R),
    (0x40, 16, -9, "V", "Voltage"),
    (0x50, 16, -12, "A", "Current"),
    (0x60, 1, None, "", "Reset counter"),
    (0x61, 1, None, "", "Cumulation counter"),
    (0x62, 1, None, "", "Control signal"),
    (0x63, 1, None, "", "Day of week"),
    (0x64, 1, None, "", "Week number"),
    (0x65, 1, None, "", "Time point of day change"),
    (0x66, 1, None, "", "State of parameter activation"),
    (0x67, 1, None, "", "Special supplier information"),
    (0x68, 4, "L", "s", "Duration since last cumulation"),
    (0x6C, 4, "L", "s", "Operating time battery"),
    (0x70, 1, None, "", "Date and time of battery change"),
    (0x71, 1, None, R, R),
    (0x72, 1, None, "", "Daylight saving (beginning, ending, deviation)"),  # type K
    (0x73, 13, None, R, R),
)

FB_TABLE = (
    (0x00, 2, 5, "Wh", "Energy"),
    (0x02, 6, None, R, R),
    (0x08, 2, 8, "J", "Energy"),
    (0x0A, 6, None, R, R),
    (0x10, 2, 2, "m^3", "Volume"),
    (0x12, 6, None, R, R),
    (0x18, 2, 5, "kg", "Mass"),
    (0x1A, 7, None, R, R),
    (0x21, 1, -1, "feet^3", "Volume"),
    (0x22, 2, -1, "American gallon", "Volume"),
    (0x24, 1, -3, "American gallon/min", "Volume flow"),
    (0x25, 1, 0, "American gallon/min", "Volume flow"),
    (0x26, 1, 0, "American gallon/h", "Volume flow"),
    (0x27, 1, None, R, R),
    (0x28, 2, 5, "W", "Power"),
    (0x2A, 6, None, R, R),
    (0x30, 2, 8, "J/h", "Power"),
    (0x32, 38, None, R, R),
    (0x58, 4, -3, DEG + "F", "Flow temperature"),
    (0x5C, 4, -3, DEG + "F", "Return temperature"),
    (0x60, 4, -3, DEG + "F", "Temperature difference"),
    (0x64, 4, -3, DEG + "F", "External temperature"),
    (0x68, 8, None, R, R),
    (0x70, 4, -3, DEG + "F", "Cold / Warm Temperature Limit"),
    (0x74, 4, -3, DEG + "C", "Cold / Warm Temperature Limit"),
    (0x78, 8, -3, "W", "Cumul count max power"),
)


def _pow10(e):
    # exact like C's 1.0eN literals: 10.0 ** e rounds differently for negative e
    if e >= 0:
        return 10 ** e
    return 1.0 / (10 ** -e) if e < -22 else float("1e%d" % e)


def time_units(scale):
    """The units of a time range's codes (scale "T", "L", "TL", "TM"), else None."""
    for kind, units in TIME_UNITS:
        if kind == scale:
            return units
    return None


def _factor(scale, n):
    """The factor of the n-th code of a range with this scale (see the table's key)."""
    if scale is None:
        return 1
    if scale == "Z":
        return 0
    if isinstance(scale, int):
        return _pow10(scale + n)
    unit = time_units(scale)[n]
    for u, seconds in SECONDS:
        if u == unit:
            return seconds


def _lookup(table, code):
    for first, count, scale, unit, quantity in table:
        if first <= code < first + count:
            return quantity, unit, _factor(scale, code - first)
    return None


def vif_info(vif, vife):
    """(quantity, unit, factor) for a VIF and its VIFE bytes, or None when unknown.
    Plain-text units (7C/FC) are handled by the caller."""
    if vif == 0xFD or vif == 0xFB:
        if not vife:
            return None
        return _lookup(FD_TABLE if vif == 0xFD else FB_TABLE, vife[0] & 0x7F)
    return _lookup(PRIMARY, vif & 0x7F)


def vife_correct(vif, vife, value):
    """libmbus' treatment of the first combinable VIFE: corrections applied to the value."""
    if not (vif & 0x80) or vif == 0xFD or vif == 0xFB or not vife:
        return value
    c = vife[0] & 0x7F
    if 0x70 <= c <= 0x77:
        return value * _pow10((c & 0x07) - 6)
    if 0x78 <= c <= 0x7B:
        return value + _pow10((c & 0x03) - 3)
    if c == 0x7D:
        return value * 1000.0
    return value


# -- what a meter author writes --------------------------------------------------------
# A quantity: (names, its quantity in the tables above, default type). The rows of that
# quantity give the codes: a scaled quantity (integer scale) offers the units of UNITS
# whose table unit it has, a time quantity the units of its range, a plain one (scale
# None, one code) no unit. The first name is the one error messages list.
QUANTITIES = (
    (("energy",), "Energy", None),
    (("volume",), "Volume", None),
    (("mass",), "Mass", None),
    (("power",), "Power", None),
    (("volume flow", "flow"), "Volume flow", None),
    (("mass flow",), "Mass flow", None),
    (("flow temperature",), "Flow temperature", None),
    (("return temperature",), "Return temperature", None),
    (("temperature difference",), "Temperature difference", None),
    (("external temperature", "temperature"), "External temperature", None),
    (("pressure",), "Pressure", None),
    (("voltage",), "Voltage", None),
    (("current",), "Current", None),
    (("credit",), "Credit", None),
    (("debit",), "Debit", None),
    (("on time",), "On time", None),
    (("operating time",), "Operating time", None),
    (("averaging duration",), "Averaging Duration", None),
    (("actuality duration",), "Actuality Duration", None),
    (("storage interval",), "Storage interval", None),
    (("duration since last readout",), "Duration since last readout", None),
    (("period of tariff",), "Period of tariff", None),
    (("duration since last cumulation",), "Duration since last cumulation", None),
    (("operating time battery", "battery time"), "Operating time battery", None),
    (("date",), "Time point (date)", "date"),
    (("datetime", "date time", "date and time", "time point"), "Time point (date & time)",
     "datetime"),
    (("hca", "h.c.a.", "heat cost allocation"), "H.C.A.", "int32"),
    (("fabrication number", "fabrication no", "fabrication"), "Fabrication No", "bcd8"),
    (("enhanced identification", "identification"), "(Enhanced) Identification", "bcd12"),
    (("bus address", "address"), "Bus Address", "int8"),
    (("manufacturer specific",), "Manufacturer specific", "int32"),
    (("access number",), "Access Number (transmission count)", "int8"),
    (("medium",), "Medium", "int8"),
    (("manufacturer",), "Manufacturer", "int16"),
    (("parameter set identification", "parameter set"), "Parameter set identification",
     "int16"),
    (("model/version", "model / version", "model", "text"), "Model / Version", "text"),
    (("hardware version",), "Hardware version", "int8"),
    (("firmware version",), "Firmware version", "int8"),
    (("software version",), "Software version", "int8"),
    (("customer location",), "Customer location", "text"),
    (("customer",), "Customer", "text"),
    (("error flags",), "Error flags", "int16"),
    (("error mask",), "Error mask", "int16"),
    (("digital output",), "Digital Output", "int8"),
    (("digital input",), "Digital Input", "int8"),
    (("baudrate",), "Baudrate", "int16"),
    (("response delay time", "response delay"), "Response delay time", "int16"),
    (("retry",), "Retry", "int8"),
    (("dimensionless",), "Dimensionless", "int32"),
    (("reset counter",), "Reset counter", "int16"),
    (("cumulation counter",), "Cumulation counter", "int32"),
    (("control signal",), "Control signal", "int8"),
    (("day of week",), "Day of week", "int8"),
    (("week number",), "Week number", "int8"),
    (("battery change", "date and time of battery change"), "Date and time of battery change",
     "datetime"),
    (("daylight saving", "dst", "daylight saving time"),
     "Daylight saving (beginning, ending, deviation)", "dst"),
)

# The units an author may write for a table unit: (table unit, ((name, power of ten), ..)).
# A quantity's default unit is the first name of the unit of its first row.
UNITS = (
    ("Wh", (("Wh", 0), ("kWh", 3), ("MWh", 6), ("GWh", 9))),
    ("J", (("J", 0), ("kJ", 3), ("MJ", 6), ("GJ", 9))),
    ("W", (("W", 0), ("kW", 3), ("MW", 6))),
    ("J/h", (("J/h", 0), ("kJ/h", 3), ("MJ/h", 6), ("GJ/h", 9))),
    ("m^3", (("m3", 0), ("m^3", 0), ("l", -3), ("ml", -6))),
    ("feet^3", (("ft3", 0), ("feet^3", 0))),
    ("American gallon", (("gal", 0), ("gallon", 0))),
    ("kg", (("kg", 0), ("g", -3), ("t", 3))),
    ("m^3/h", (("m3/h", 0), ("m^3/h", 0), ("l/h", -3))),
    ("m^3/min", (("m3/min", 0), ("m^3/min", 0), ("l/min", -3))),
    ("m^3/s", (("m3/s", 0), ("m^3/s", 0), ("l/s", -3), ("ml/s", -6))),
    ("kg/h", (("kg/h", 0), ("g/h", -3), ("t/h", 3))),
    ("bar", (("bar", 0), ("mbar", -3))),
    ("V", (("V", 0), ("mV", -3), ("kV", 3))),
    ("A", (("A", 0), ("mA", -3), ("kA", 3))),
    ("Currency units", (("currency", 0),)),
    (DEG + "C", (("C", 0), (DEG + "C", 0), ("degC", 0))),
    (DEG + "F", (("F", 0), (DEG + "F", 0), ("degF", 0))),
    ("K", (("K", 0), ("mK", -3))),
)

TABLES = ((b"", PRIMARY), (b"\xfd", FD_TABLE), (b"\xfb", FB_TABLE))


def _rows(quantity):
    """(vif prefix, first, count, scale, unit) of the table rows of a quantity."""
    out = []
    for prefix, table in TABLES:
        for first, count, scale, unit, q in table:
            if q == quantity:
                out.append((prefix, first, count, scale, unit))
    return out


def find_quantity(name):
    """What an author's quantity name stands for:
    ("scaled", families): families ((units, codes), ..), one for each table unit: units
        ((name, power of ten of the table unit), ..), codes ((vif prefix, first code,
        exponent of the first code, count), ..): the n-th code has the exponent first + n
    ("timed", (units, vif prefix, first code)): the n-th unit has the code first + n
    ("plain", (vif bytes, default type))
    None for an unknown name."""
    n = name.strip().lower()
    for names, quantity, dtype in QUANTITIES:
        if n in names:
            break
    else:
        return None
    rows = _rows(quantity)
    prefix, first, count, scale, unit = rows[0]
    if scale is None:
        return "plain", (prefix + bytes((first,)), dtype)
    if not isinstance(scale, int):
        return "timed", (time_units(scale), prefix, first)
    families = []
    seen = []
    for row in rows:
        table_unit = row[4]
        units = _author_units(table_unit)
        if units is None or table_unit in seen:
            continue
        seen.append(table_unit)
        families.append((units, [(p, f, s, c) for p, f, c, s, u in rows if u == table_unit]))
    return "scaled", families


def _author_units(table_unit):
    for u, names in UNITS:
        if u == table_unit:
            return names
    return None


def quantity_names():
    out = [names[0] for names, q, t in QUANTITIES]
    out.append("custom")
    return out


def unit_names(kind, info):
    out = []
    if kind == "scaled":
        for units, codes in info:
            for u, p in units:
                out.append(u)
    elif kind == "timed":
        out.extend(info[0])
    return out


def default_unit(kind, info):
    if kind == "scaled":
        return info[0][0][0][0]
    if kind == "timed":
        return info[0][0]
    return None


_PER = ("second", "minute", "hour", "day", "week", "month", "year", "revolution/measurement",
        "input pulse on channel 0", "input pulse on channel 1", "output pulse on channel 0",
        "output pulse on channel 1", "litre", "m^3", "kg", "K", "kWh", "GJ", "kW", "(K*l)",
        "V", "A")

_ERRORS = ("none", "too many DIFEs", "storage number not implemented",
           "unit number not implemented", "tariff number not implemented",
           "function not implemented", "data class not implemented",
           "data size not implemented")


def vife_text(code):
    """A short English description of a combinable (orthogonal) VIFE code (0..0x7F)."""
    c = code & 0x7F
    if c < 0x20:
        if c < len(_ERRORS):
            return "error: " + _ERRORS[c]
        return "error code %d" % c
    if c <= 0x35:
        return "per " + _PER[c - 0x20]
    if c == 0x36:
        return "multiplied by s"
    if c == 0x37:
        return "multiplied by s/V"
    if c == 0x38:
        return "multiplied by s/A"
    if c == 0x39:
        return "start date(/time) of"
    if c == 0x3A:
        return "uncorrected unit"
    if c == 0x3B:
        return "accumulation only if positive"
    if c == 0x3C:
        return "accumulation of abs value only if negative"
    if 0x40 <= c <= 0x4F:
        return ("upper" if c & 0x08 else "lower") + " limit value"
    if 0x50 <= c <= 0x6F:
        return "limit exceed / duration information"
    if 0x70 <= c <= 0x77:
        return "multiplicative correction 10^%d" % ((c & 7) - 6)
    if 0x78 <= c <= 0x7B:
        return "additive correction 10^%d" % ((c & 3) - 3)
    if c == 0x7D:
        return "multiplicative correction 10^3"
    if c == 0x7E:
        return "future value"
    if c == 0x7F:
        return "manufacturer specific"
    return "reserved"


MEDIA = (
    (0x00, "Other"), (0x01, "Oil"), (0x02, "Electricity"), (0x03, "Gas"),
    (0x04, "Heat: Outlet"), (0x05, "Steam"), (0x06, "Warm water (30-90" + DEG + "C)"),
    (0x07, "Water"), (0x08, "Heat Cost Allocator"), (0x09, "Compressed Air"),
    (0x0A, "Cooling load meter: Outlet"), (0x0B, "Cooling load meter: Inlet"),
    (0x0C, "Heat: Inlet"), (0x0D, "Heat / Cooling load meter"), (0x0E, "Bus/System"),
    (0x0F, "Unknown Medium"), (0x10, "Irrigation Water"), (0x11, "Water Logger"),
    (0x12, "Gas Logger"), (0x13, "Gas Converter"), (0x14, "Calorific value"),
    (0x15, "Hot water (>90" + DEG + "C)"), (0x16, "Cold water"), (0x17, "Dual water"),
    (0x18, "Pressure"), (0x19, "A/D Converter"), (0x1A, "Smoke Detector"),
    (0x1B, "Ambient Sensor"), (0x1C, "Gas Detector"), (0x20, "Breaker: Electricity"),
    (0x21, "Valve: Gas or Water"), (0x25, "Customer Unit: Display Device"),
    (0x28, "Waste Water"), (0x29, "Garbage"), (0x30, "Service Unit"),
    (0x36, "Radio Converter: System"), (0x37, "Radio Converter: Meter"),
)

# the 4-bit medium of a fixed data structure (CI 73)
FIXED_MEDIA = ("Other", "Oil", "Electricity", "Gas", "Heat", "Steam", "Hot Water", "Water",
               "H.C.A.", "Reserved", "Gas Mode 2", "Heat Mode 2", "Hot Water Mode 2",
               "Water Mode 2", "H.C.A. Mode 2", "Reserved")

# short names a meter author may write (lower case), besides the full names above
MEDIUM_ALIASES = (
    ("heat", 0x04), ("heat outlet", 0x04), ("heat: outlet", 0x04), ("heat inlet", 0x0C),
    ("heat: inlet", 0x0C), ("warm water", 0x06), ("hot water", 0x15), ("cold water", 0x16),
    ("dual water", 0x17), ("heat cost allocator", 0x08), ("hca", 0x08),
    ("compressed air", 0x09), ("cooling", 0x0A), ("cooling: outlet", 0x0A),
    ("cooling: inlet", 0x0B), ("heat / cooling", 0x0D), ("heat/cooling", 0x0D),
    ("bus", 0x0E), ("bus/system", 0x0E), ("unknown", 0x0F), ("pressure", 0x18),
    ("smoke detector", 0x1A), ("breaker", 0x20), ("valve", 0x21),
)


def medium_name(code):
    for c, name in MEDIA:
        if c == code:
            return name
    if 0x22 <= code <= 0x3F:
        return "Reserved"
    return "Unknown medium (0x%02x)" % code


def medium_code(name):
    """A medium name (case-insensitive, full or short) -> code, or -1."""
    n = name.strip().lower()
    for alias, c in MEDIUM_ALIASES:
        if alias == n:
            return c
    for c, full in MEDIA:
        if full.lower() == n:
            return c
    return -1



ERRORS = ("Unspecified error", "Unimplemented CI-Field", "Buffer too long, truncated",
          "Too many records", "Premature end of record", "More than 10 DIFE\u00b4s",
          "More than 10 VIFE\u00b4s", "Reserved", "Application busy", "Too many readouts")


def error_name(code):
    if 0 <= code < len(ERRORS):
        return ERRORS[code]
    return "Unknown error (0x%.2x)" % code
