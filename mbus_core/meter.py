# The meter as the slave serves it: identity + ordered records, laid out in telegrams.
#
# Records are either bytes (a complete constant record, DIF..data) or objects with
# .encode() -> bytes and .dynamic (True when the value can change between readouts).
# The encoded record area is cached and only rebuilt for a fresh readout when a record is
# dynamic, so serving a constant meter allocates nothing.
from struct import pack_into

from mbus_core.frame import checksum as byte_sum  # the low byte of a byte sum
from mbus_core.frame import ACD, LONG_START, RSP_UD, STOP

try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

CI_LONG = const(0x72)   # variable data, 12-byte header
CI_LONG_MSB = const(0x76)  # the same, most significant byte first (replays only)
_CI_SHORT = const(0x7A)  # variable data, 4-byte header
_CI_NONE = const(0x78)   # variable data, no header
CI_FIXED = const(0x73)  # fixed data structure
CI_ERROR = const(0x70)  # application error

MAX_USER_DATA = const(252)  # bytes after CI in a long frame (L = 255)
MORE_RECORDS_BYTE = b"\x1f"  # DIF 1F: more records follow in the next telegram
# Status byte (EN 13757-3): bits 0-1 application status, 2 power low, 3 permanent
# error, 4 temporary error.
_STATUS_TEMPORARY_ERROR = const(0x10)
# the data headers, written in one call: CI, ID (4 BCD bytes), manufacturer, version,
# medium, access number, status, signature (CI 72); CI, access, status, signature (CI 7A)
_HEAD_LONG = "<B4sHBBBBH"
_HEAD_SHORT = "<BBBH"
# the frame head of an RSP_UD: 68 L L 68 C A; and followed by CI 72's data header
_FRAME_HEAD = "<BBBBBB"
_FRAME_LONG = "<BBBBBBB4sHBBBBH"


def manufacturer_code(text):
    """'TST' -> 16-bit code (EN 13757-3: three letters, 5 bits each, 'A' = 1)."""
    if isinstance(text, int):
        if not 0 <= text <= 0x7FFF:
            raise ValueError("manufacturer code out of range")
        return text
    if len(text) != 3:
        raise ValueError("manufacturer must be 3 letters A-Z")
    code = 0
    for ch in text.upper():
        o = ord(ch) - 64
        if not 1 <= o <= 26:
            raise ValueError("manufacturer must be 3 letters A-Z")
        code = (code << 5) | o
    return code


def manufacturer_text(code):
    return chr(((code >> 10) & 0x1F) + 64) + chr(((code >> 5) & 0x1F) + 64) + chr((code & 0x1F) + 64)


def manufacturer_spec(code):
    """How files write a manufacturer: its three letters, or the code itself where letters
    do not give it back (a replayed or cloned header's raw code: top bit set, or a letter
    beyond A..Z)."""
    text = manufacturer_text(code)
    try:
        if manufacturer_code(text) == code:
            return text
    except ValueError:
        pass
    return code


def put_bcd(value, buf, pos, nbytes):
    """Write a decimal number as nbytes of BCD, least significant byte first, into buf.
    Small ints only (two digits at a time): no allocation on 32-bit MicroPython, where
    an 8-digit BCD value as one int would pass 2^30."""
    if value < 0:
        raise ValueError("BCD values are not negative")
    i = 0
    while i < nbytes:
        pair = value % 100   # not divmod: its tuple is an allocation
        value //= 100
        buf[pos + i] = ((pair // 10) << 4) | (pair % 10)
        i += 1
    if value:
        raise ValueError("value does not fit in %d BCD digits" % (2 * nbytes))


def bcd_bytes_value(buf, pos, nbytes):
    """The decimal value of nbytes of BCD at buf[pos:] (least significant first), or -1
    when a nibble is not a decimal digit."""
    value = 0
    i = nbytes - 1
    while i >= 0:
        b = buf[pos + i]
        if b & 0x0F > 9 or b >> 4 > 9:
            return -1
        value = value * 100 + (b >> 4) * 10 + (b & 0x0F)
        i -= 1
    return value


def key_end(rec, start=0, end=-1):
    """Where the DIB and VIB of the encoded record at rec[start:] end (its data starts):
    the DIF..VIFE run, plain-text VIF units (7C/FC) included. One int, no tuple: the
    SND_UD walk runs under the heap lock too."""
    if end < 0:
        end = len(rec)
    i = start
    dif = rec[i]
    i += 1
    ext = dif & 0x80
    while ext and i < end:
        ext = rec[i] & 0x80
        i += 1
    if i >= end:
        return i
    vif = rec[i]
    i += 1
    if (vif & 0x7F) == 0x7C and i < end:
        # plain-text unit: length and ASCII follow the VIF, before any VIFE
        i += 1 + rec[i]
    ext = vif & 0x80
    while ext and i < end:
        ext = rec[i] & 0x80
        i += 1
    return i


def _dib_end(rec, start):
    i = start + 1
    while rec[i - 1] & 0x80 and i < len(rec):
        i += 1
    return i


def selects(sel, rec):
    """Does the readout selection record `sel` (DIF data field 8) choose the encoded
    record `rec`? Equal DIB and VIB, ignoring the data field and the DIF's extension bit;
    VIF 7E (any VIF) compares the DIB alone."""
    if (sel[0] & 0x70) != (rec[0] & 0x70):
        return False
    s_dib = _dib_end(sel, 0)
    if s_dib != _dib_end(rec, 0):
        return False
    any_vif = s_dib < len(sel) and sel[s_dib] & 0x7F == 0x7E
    end = s_dib if any_vif else key_end(sel, 0)
    if not any_vif and end != key_end(rec, 0):
        return False
    i = 1
    while i < end:
        if sel[i] != rec[i]:
            return False
        i += 1
    return True


class Meter:
    """One meter's identity and data, and how its telegrams look."""

    def __init__(self, id=12345678, manufacturer="TST", version=1, medium=0, address=0,
                 records=None, status=0, signature=0, fabrication=None, ci=CI_LONG,
                 max_data=MAX_USER_DATA, fixed=None, name=None, strict_repeat=False,
                 security=None):
        if not 0 <= id <= 99999999:
            raise ValueError("id must have at most 8 decimal digits")
        if not 0 <= address <= 250:
            raise ValueError("primary address must be 0..250")
        if ci not in (CI_LONG, _CI_SHORT, _CI_NONE, CI_FIXED):
            raise ValueError("reply CI must be 72, 7A, 78 or 73")
        self.id_bytes = bytearray(4)    # the ID as sent: 4 BCD bytes, least significant first
        self.id = id
        self.manufacturer = manufacturer_code(manufacturer)
        self.version = version & 0xFF
        self.medium = medium & 0xFF
        self.address = address
        self.status = status & 0xFF
        self.signature = signature & 0xFFFF
        self.fab_bytes = bytearray(4)
        self.fabrication = fabrication
        self.ci = ci
        self.name = name
        # CI 73: (unit1, counter1, unit2, counter2) with unit codes per EN 13757-3 annex
        self._fixed_bcd = bytearray(8)
        self.fixed = fixed
        # how the slave answers a repeated REQ_UD2 (same FCB): the last telegram byte for
        # byte (True) or the same telegram with current values (False; see Slave)
        self.strict_repeat = strict_repeat
        # OMS security (mbus_core.security.Security, mode 5 or 7; CI 72 only), or None
        if security is not None and ci != CI_LONG:
            raise ValueError("an encrypted meter needs the long header (CI 72)")
        self.security = security
        self._tail = b""        # an encrypted meter's records sent in clear (see _layout)
        self.records = list(records) if records is not None else []
        self.replay = None      # list of captured application data (from CI), or None
        self.selection = None   # selective readout: list of encoded selection records
        self.alarm = None       # class 1 data (records bytes) pending for REQ_UD1
        self._max_data = max_data
        self._telegrams = [b""]  # the record bytes of each telegram (see _layout)
        self._sums = [0]         # their byte sums
        self.count = 1           # telegrams in a readout, as of the last refresh()
        self.last_sum = 0        # byte sum of what write_telegram wrote last
        # the records are laid out again at the next fresh readout (Slave checks it)
        self.stale = True
        self.errors = 0         # value callbacks that raised while encoding
        self._flagged = False   # we set the temporary-error status bit

    # -- identity: kept as the bytes a telegram carries ------------------------------
    @property
    def id(self):
        return self._id

    @id.setter
    def id(self, value):
        if not 0 <= value <= 99999999:
            raise ValueError("id must have at most 8 decimal digits")
        self._id = value
        put_bcd(value, self.id_bytes, 0, 4)
        self._id_sum = byte_sum(self.id_bytes, 0, 4)   # for the checksum

    def set_raw_id(self, raw):
        """A replayed identity: 4 captured bytes, valid BCD or not."""
        for k in range(4):
            self.id_bytes[k] = raw[k]
        self._id_sum = byte_sum(raw, 0, 4)
        value = bcd_bytes_value(raw, 0, 4)
        self._id = value if value >= 0 else 0

    @property
    def fabrication(self):
        return self._fabrication

    @fabrication.setter
    def fabrication(self, value):
        if value is not None:
            put_bcd(value, self.fab_bytes, 0, 4)
        self._fabrication = value

    @property
    def fixed(self):
        return self._fixed

    @fixed.setter
    def fixed(self, value):
        self._fixed = value
        if value is not None:
            put_bcd(value[1], self._fixed_bcd, 0, 4)
            put_bcd(value[3], self._fixed_bcd, 4, 4)

    def header_len(self):
        ci = self.ci
        if ci == CI_LONG:
            return 12
        if ci == _CI_SHORT:
            return 4
        return 0

    # -- telegram layout -------------------------------------------------------
    def invalidate(self):
        """Values, records or the selection changed: lay the telegrams out again."""
        self.stale = True

    def refresh(self):
        """Called by the slave at the start of a fresh readout."""
        if self.replay is not None:
            self.count = len(self.replay)
            return
        if not self.stale:
            return
        dynamic = False
        failed = False
        parts = []
        for rec in self.records:
            if isinstance(rec, (bytes, bytearray)):
                enc = rec
            else:
                if rec.dynamic:
                    dynamic = True
                try:
                    enc = rec.encode()
                except Exception:
                    # A value callback failed (a sensor read): keep serving the other
                    # records and say so in the status byte until it works again.
                    self.errors += 1
                    failed = True
                    continue
            if self.selection is not None and not self._selected(enc):
                continue
            parts.append(enc)
        if failed:
            self.status |= _STATUS_TEMPORARY_ERROR
        elif self._flagged:
            self.status &= ~_STATUS_TEMPORARY_ERROR & 0xFF
        self._flagged = failed
        self._layout(parts)
        self.stale = dynamic   # a dynamic record: its value may differ next time

    def _selected(self, enc):
        for sel in self.selection:
            if selects(sel, enc):
                return True
        return False

    def _layout(self, parts):
        """Split the records into telegrams: one bytes object each, ready to copy; every
        telegram but the last ends with DIF 1F (more records follow)."""
        room = self._max_data - self.header_len()
        sec = self.security
        if sec is not None:  # whole 16-byte blocks, AFL and 2F 2F first
            self._tail = b""
            if sec.clear and len(parts) > sec.clear:  # the last records in clear, after
                tail = b"".join(parts[-sec.clear:])    # the blocks of the last telegram
                if sec.record_room(room - len(tail)) >= 14:
                    self._tail = tail
                    parts = parts[:-sec.clear]
            room = sec.record_room(room - len(self._tail))
        telegrams = []
        current = []
        used = 0
        last = len(parts) - 1
        for k, p in enumerate(parts):
            n = len(p)
            more = p[0] == 0x1F  # a DIF 1F record (a clone's): its telegram ends with it
            limit = room if k == last or more else room - 1  # the rest keep room for 1F
            if n > limit:
                self.errors += 1  # a record no telegram can hold: leave it out
                continue
            if used and used + n > limit:
                current.append(MORE_RECORDS_BYTE)
                telegrams.append(b"".join(current))
                current = []
                used = 0
            current.append(p)
            used += n
            if more and k < last:
                telegrams.append(b"".join(current))
                current = []
                used = 0
        telegrams.append(b"".join(current))
        # bytearrays: CPython copies a bytes object into a slice of the reply buffer
        # through a temporary bytearray (three times the cost of a bytearray's copy)
        self._telegrams = [bytearray(t) for t in telegrams]
        self.count = 1 if self.ci == CI_FIXED else len(telegrams)
        # the byte sum of each telegram's records, for the frame checksum
        self._sums = [byte_sum(t, 0, len(t)) for t in telegrams]

    def telegram_count(self):
        """Telegrams in a readout, as laid out by the last refresh()."""
        if self.replay is not None:
            return len(self.replay)
        return self.count

    def write_telegram(self, index, buf, pos, access):
        """Write the application data (CI onwards) of telegram `index` at buf[pos:];
        return the number of bytes written. Their byte sum is left in self.last_sum
        (the records' sums are kept from the layout: no second pass for the checksum)."""
        if self.replay is not None:
            src = self.replay[index]
            n = len(src)
            buf[pos:pos + n] = src  # a whole-object slice copy allocates nothing
            self.last_sum = byte_sum(src, 0, n)
            return n
        ci = self.ci
        if ci == CI_FIXED:
            buf[pos] = ci
            end = self._write_fixed(buf, pos + 1, access)
            self.last_sum = byte_sum(buf, pos, end)
            return end - pos
        if self.security is not None:  # the encrypted part (mbus_core.security)
            return self.security.write(self, buf, pos, access, self._telegrams[index],
                                       self._tail if index == len(self._telegrams) - 1
                                       else b"")
        return self._write_variable(buf, pos, ci, access, self._telegrams[index],
                                    self._sums[index])

    def write_rsp_ud(self, index, buf, access):
        """Write the RSP_UD frame of telegram `index` into buf (68 L L 68 C A, the
        application data, CS 16); return its size. index -1: the class 1 data (the
        alarm, for REQ_UD1), delivered with it. The ACD bit tells the master that class
        1 data waits."""
        a = self.address
        if index >= 0 and self.ci == CI_LONG and self.security is None \
                and self.replay is None:
            # the usual telegram, the hot path of a readout: the frame head and the data
            # header (the fields _write_variable writes for CI 72) in one pack
            c = RSP_UD if self.alarm is None else RSP_UD | ACD
            records = self._telegrams[index]
            n = len(records)
            access &= 0xFF
            status = self.status
            sig = self.signature
            man = self.manufacturer
            version = self.version
            medium = self.medium
            pack_into(_FRAME_LONG, buf, 0, LONG_START, n + 15, n + 15, LONG_START, c, a,
                      CI_LONG, self.id_bytes, man, version, medium, access, status, sig)
            buf[19:19 + n] = records
            end = 19 + n
            buf[end] = (c + a + CI_LONG + self._id_sum + (man & 0xFF) + (man >> 8) + version
                        + medium + access + status + (sig & 0xFF) + (sig >> 8)
                        + self._sums[index]) & 0xFF
            buf[end + 1] = STOP
            return end + 2
        if index < 0:
            n = self.write_alarm(buf, 6, access)
            self.alarm = None
        else:
            n = self.write_telegram(index, buf, 6, access)
        c = RSP_UD if self.alarm is None else RSP_UD | ACD
        pack_into(_FRAME_HEAD, buf, 0, LONG_START, n + 2, n + 2, LONG_START, c, a)
        end = 6 + n
        buf[end] = (c + a + self.last_sum) & 0xFF  # checksum over C, A and the user data
        buf[end + 1] = STOP
        return end + 2

    def write_alarm(self, buf, pos, access):
        """Write the class 1 data (CI onwards) for REQ_UD1: the meter's header (CI 72 for
        a CI 73 meter) and the alarm records; like write_telegram."""
        ci = self.ci if self.ci != CI_FIXED else CI_LONG
        buf[pos] = ci
        data = self.alarm
        if self.security is not None:  # encrypted as the RSP_UD to REQ_UD2 is
            return self.security.write(self, buf, pos, access, data)
        return self._write_variable(buf, pos, ci, access, data, byte_sum(data, 0, len(data)))

    def _write_variable(self, buf, pos, ci, access, records, records_sum):
        """CI 72/7A/78 application data: the header for `ci`, then the records bytes."""
        start = pos
        access &= 0xFF
        status = self.status
        sig = self.signature
        total = ci + access + status + (sig & 0xFF) + (sig >> 8)
        if ci == CI_LONG:   # (write_rsp_ud packs the same fields: keep the two alike)
            man = self.manufacturer
            version = self.version
            medium = self.medium
            pack_into(_HEAD_LONG, buf, pos, ci, self.id_bytes, man, version, medium,
                      access, status, sig)
            total += self._id_sum + (man & 0xFF) + (man >> 8) + version + medium
            pos += 13
        elif ci != _CI_NONE:   # CI 7A
            pack_into(_HEAD_SHORT, buf, pos, ci, access, status, sig)
            pos += 5
        else:   # no header
            buf[pos] = ci
            total = ci
            pos += 1
        n = len(records)
        buf[pos:pos + n] = records
        self.last_sum = (total + records_sum) & 0xFF
        return pos + n - start

    def _write_fixed(self, buf, pos, access):
        fixed = self._fixed
        unit1 = fixed[0] if fixed is not None else 0
        unit2 = fixed[2] if fixed is not None else 0
        ident = self.id_bytes
        counters = self._fixed_bcd   # the two counters' BCD bytes, laid out when set
        i = 0
        while i < 4:
            buf[pos + i] = ident[i]
            buf[pos + 8 + i] = counters[i]
            buf[pos + 12 + i] = counters[4 + i]
            i += 1
        buf[pos + 4] = access & 0xFF
        buf[pos + 5] = self.status & 0x7F  # bit 7 clear: counters in BCD
        medium = self.medium & 0x0F
        buf[pos + 6] = (unit1 & 0x3F) | ((medium & 0x03) << 6)
        buf[pos + 7] = (unit2 & 0x3F) | ((medium & 0x0C) << 4)
        return pos + 16

