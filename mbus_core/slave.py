# The slave state machine of one meter: addresses, selection, FCB, access number,
# multi-telegram cursor and SND_UD commands. It answers a parsed frame by writing the
# reply into its own preallocated buffer; the Bus (bus.py) routes frames to slaves.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from mbus_core import frame as _frame
from mbus_core.meter import (CI_ERROR, bcd_from_int, int_from_bcd, record_key,
                             manufacturer_text)

# C field (master to slave)
SND_NKE = const(0x40)
FCB = const(0x20)
FCV = const(0x10)
_FUNC_SND_UD = const(0x03)
_FUNC_REQ_UD1 = const(0x0A)
_FUNC_REQ_UD2 = const(0x0B)
# C field (slave to master)
RSP_UD = const(0x08)
ACD = const(0x20)

# Addresses
ADDR_NETWORK = const(253)     # the slave selected by secondary address
ADDR_BROADCAST = const(254)   # every slave answers
ADDR_SILENT = const(255)      # every slave acts, none answers

# CI field (master to slave)
CI_RESET = const(0x50)
CI_DATA_SEND = const(0x51)
CI_SELECT = const(0x52)
CI_SELECT_MSB = const(0x56)
CI_BAUD_FIRST = const(0xB8)

# Application error codes (CI 70 replies)
ERR_UNSPECIFIED = const(0x00)
ERR_UNIMPLEMENTED_CI = const(0x01)
ERR_TOO_MANY_RECORDS = const(0x03)
ERR_PREMATURE_END = const(0x04)
ERR_BUSY = const(0x08)

BAUD_RATES = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400)

# Size of the data field for DIF data-field codes 0..E (D: variable, handled apart)
_DATA_SIZE = (0, 1, 2, 3, 4, 4, 6, 8, 0, 1, 2, 3, 4, -1, 6)


class Slave:
    """One meter on the line.

    ci56: what CI 56 means to this meter: "deselect" (default) or "select" (secondary
    selection with the identity sent most significant byte first).
    read_only: refuse changes of address, ID and baud (acknowledged, then reported as a
    CI 70 error on the next REQ_UD2, as a write-protected meter does).
    ignore_fcb: a vendor quirk some meters have: never repeat, every REQ_UD2 is new.
    busy: while True, REQ_UD2 gets a CI 70 "application busy" reply (fault injection).
    """

    def __init__(self, meter, read_only=False, ci56="deselect", ignore_fcb=False):
        if ci56 not in ("deselect", "select"):
            raise ValueError("ci56 must be 'deselect' or 'select'")
        self.meter = meter
        self.read_only = read_only
        self.ignore_fcb = ignore_fcb
        self.busy = False
        self.ci56_select = ci56 == "select"
        self.selected = False
        self.access = 0
        self.tx = bytearray(_frame.MAX_FRAME)    # RSP_UD / CI 70 replies (kept for repeats)
        self._ack_buf = bytearray(1)
        _frame.write_ack(self._ack_buf)
        self.reply = self.tx                     # the buffer of the last reply
        self.on_change = None       # callable(slave, what) for settings to persist
        self.new_baud = 0           # set after acknowledging a baud switch
        self._fcb = -1              # FCB of the last answered REQ_UD2 (-1: none yet)
        self._rsp_len = 0           # size of the last RSP_UD in tx (kept for repeats)
        self._next = 0              # next telegram of a multi-telegram readout (0: none)
        self._error = -1            # application error to report on the next REQ_UD2
        self.last_command = None    # short text of the last SND_UD acted on (for logs)

    @property
    def address(self):
        return self.meter.address

    # -- dispatch ----------------------------------------------------------------
    def handle(self, p):
        """Act on the frame in parser p (already routed to this slave); return the
        size of the reply in self.reply (0: stay silent)."""
        self.reply = self.tx
        c = p.c
        func = c & 0x0F
        if not c & 0x40:
            return 0  # a frame from a slave, not a master
        if p.kind == _frame.SHORT:
            if c == SND_NKE:
                return self._snd_nke(p.a)
            if func == _FUNC_REQ_UD2:
                return self._req_ud2(c)
            if func == _FUNC_REQ_UD1:
                return self._req_ud1(c)
            return 0
        if func == _FUNC_SND_UD and not c & 0x80:
            return self._snd_ud(p)
        return 0

    def _ack(self):
        # E5 has a buffer of its own: the last RSP_UD in tx must survive for a repeat.
        self.reply = self._ack_buf
        return 1

    def reset_link(self):
        """SND_NKE: forget FCB state and the readout cursor."""
        self._fcb = -1
        self._next = 0
        self._rsp_len = 0

    def _snd_nke(self, a):
        self.reset_link()
        if a == ADDR_NETWORK:
            self.selected = False
        return self._ack()

    # -- REQ_UD2 / REQ_UD1 ---------------------------------------------------------
    def _req_ud2(self, c):
        fcv = c & FCV
        fcb = c & FCB
        if self.ignore_fcb:
            fcv = 0
        if fcv and fcb == self._fcb and self._rsp_len:
            # The master missed our reply: send it again, unchanged.
            return self._rsp_len
        self._fcb = fcb if fcv else -1
        if self.busy:
            n = self._write_error(ERR_BUSY)
        elif self._error >= 0:
            n = self._write_error(self._error)
            self._error = -1
        else:
            n = self._write_rsp_ud()
        self._rsp_len = n
        return n

    def _write_rsp_ud(self):
        meter = self.meter
        index = self._next
        if index == 0:
            meter.refresh()
        count = meter.telegram_count()
        if index >= count:
            index = 0
            meter.refresh()
            count = meter.telegram_count()
        tx = self.tx
        c = RSP_UD | (ACD if meter.alarm is not None else 0)
        n = meter.write_telegram(index, tx, 6, self.access)
        a = meter.address
        _frame.write_long_header(tx, c, a, tx[6], n - 1)
        self.access = (self.access + 1) & 0xFF
        self._next = index + 1 if index + 1 < count else 0
        end = 6 + n
        tx[end] = (c + a + meter.last_sum) & 0xFF  # checksum over C, A and the user data
        tx[end + 1] = _frame.STOP
        return end + 2

    def _write_error(self, code):
        tx = self.tx
        _frame.write_long_header(tx, RSP_UD, self.meter.address, CI_ERROR, 1)
        tx[7] = code
        return _frame.finish_long(tx)

    def _req_ud1(self, c):
        meter = self.meter
        if meter.alarm is None:
            return self._ack()
        tx = self.tx
        data = meter.alarm
        # class 1 data: a CI 72 telegram whose records are the alarm records
        n = 13 + len(data)
        _frame.write_long_header(tx, RSP_UD, meter.address, 0x72, n - 1)
        ident = meter.id_bcd()
        for k in range(4):
            tx[7 + k] = (ident >> (8 * k)) & 0xFF
        tx[11] = meter.manufacturer & 0xFF
        tx[12] = meter.manufacturer >> 8
        tx[13] = meter.version
        tx[14] = meter.medium
        tx[15] = self.access
        tx[16] = meter.status
        tx[17] = meter.signature & 0xFF
        tx[18] = meter.signature >> 8
        tx[19:19 + len(data)] = data
        self.access = (self.access + 1) & 0xFF
        meter.alarm = None  # delivered
        self._rsp_len = 0
        return _frame.finish_long(tx)

    # -- secondary selection -----------------------------------------------------------
    def matches_secondary(self, d, s, e, msb_first=False):
        """Does the selection in d[s:e] (ID, manufacturer, version, medium, optional
        0C 78 fabrication number) name this meter? Nibble F / byte FF are wildcards."""
        if e - s < 8:
            return False
        meter = self.meter
        ident = meter.id_bcd()
        for k in range(4):
            b = d[s + (3 - k if msb_first else k)]
            mine = (ident >> (8 * k)) & 0xFF
            if (b & 0x0F) != 0x0F and (b & 0x0F) != (mine & 0x0F):
                return False
            if (b & 0xF0) != 0xF0 and (b & 0xF0) != (mine & 0xF0):
                return False
        m_lo = d[s + (5 if msb_first else 4)]
        m_hi = d[s + (4 if msb_first else 5)]
        if m_lo != 0xFF and m_lo != meter.manufacturer & 0xFF:
            return False
        if m_hi != 0xFF and m_hi != meter.manufacturer >> 8:
            return False
        if d[s + 6] != 0xFF and d[s + 6] != meter.version:
            return False
        if d[s + 7] != 0xFF and d[s + 7] != meter.medium:
            return False
        if e - s >= 14 and d[s + 8] == 0x0C and d[s + 9] == 0x78:
            # enhanced selection: fabrication number (8 BCD digits, nibble wildcards)
            fab = meter.fabrication
            for k in range(4):
                b = d[s + 10 + k]
                if b == 0xFF:
                    continue
                if fab is None:
                    return False
                mine = (bcd_from_int(fab, 4) >> (8 * k)) & 0xFF
                if (b & 0x0F) != 0x0F and (b & 0x0F) != (mine & 0x0F):
                    return False
                if (b & 0xF0) != 0xF0 and (b & 0xF0) != (mine & 0xF0):
                    return False
        return True

    def select(self, p, msb_first=False):
        """CI 52 (or 56) to address 253: selected and E5 on a match, else deselected
        and silent."""
        self.selected = self.matches_secondary(p.buf, p.data_start, p.data_end, msb_first)
        if self.selected:
            self.reset_link()
            return self._ack()
        return 0

    # -- SND_UD ------------------------------------------------------------------------
    def _snd_ud(self, p):
        ci = p.ci
        if ci == CI_SELECT:
            return self.select(p) if p.a == ADDR_NETWORK else self._ack()
        if ci == CI_SELECT_MSB:
            if self.ci56_select:
                return self.select(p, True) if p.a == ADDR_NETWORK else 0
            was = self.selected
            self.selected = False
            return self._ack() if was or p.a != ADDR_NETWORK else 0
        if ci == CI_RESET:
            self._next = 0
            self._error = -1
            if self.meter.selection is not None:
                self.meter.selection = None
                self.meter.invalidate()
            self.last_command = "application reset"
            self._notify("reset")
            return self._ack()
        if CI_BAUD_FIRST <= ci <= CI_BAUD_FIRST + 7:
            if self.read_only:
                self._error = ERR_UNSPECIFIED
            else:
                self.new_baud = BAUD_RATES[ci - CI_BAUD_FIRST]
                self.last_command = "baud rate %d" % self.new_baud
                self._notify("baud")
            return self._ack()
        if ci == CI_DATA_SEND:
            self._data_send(p.buf, p.data_start, p.data_end)
            return self._ack()
        # A valid frame with a CI we do not implement: acknowledged at the link layer,
        # reported as "unimplemented CI" in the next RSP_UD (EN 13757-3 CI 70).
        self._error = ERR_UNIMPLEMENTED_CI
        return self._ack()

    def _data_send(self, d, s, e):
        """CI 51: the records in d[s:e] set values or choose records for readout."""
        meter = self.meter
        selection = None
        i = s
        while i < e:
            dif = d[i]
            if dif == 0x2F:  # idle filler
                i += 1
                continue
            if dif == 0x7F:  # global readout: everything, all storages and tariffs
                selection = None
                meter.selection = None
                meter.invalidate()
                self._next = 0
                self.last_command = "global readout"
                i += 1
                continue
            if dif & 0x0F == 0x0F:  # manufacturer specific data: not ours to parse
                break
            key_end = record_key(d, i, e)[0]
            if key_end > e:
                self._error = ERR_PREMATURE_END
                return
            field = dif & 0x0F
            if field == 0x08:  # selection for readout
                if selection is None:
                    selection = []
                selection.append(bytes(d[i:key_end]))
                i = key_end
                continue
            size = _DATA_SIZE[field]
            if size < 0:
                size = 1 + d[key_end] if key_end < e else 1
            if key_end + size > e:
                self._error = ERR_PREMATURE_END
                return
            has_dife = dif & 0x80
            vif_at = i + 1
            while d[vif_at - 1] & 0x80 and vif_at < key_end:
                vif_at += 1
            vif = d[vif_at]
            value = 0
            for k in range(size - 1, -1, -1):
                value = (value << 8) | d[key_end + k]
            if not has_dife and vif == 0x7A and field in (0x01, 0x09):
                self._set_address(value if field == 0x01 else _bcd_or(value, -1))
            elif not has_dife and vif == 0x79 and field == 0x0C:
                self._set_identity(value, None)
            elif not has_dife and vif == 0x79 and field == 0x07:
                self._set_identity(value & 0xFFFFFFFF, value >> 32)
            elif vif == 0x6D and field in (0x04, 0x06):
                meter.datetime = bytes(d[key_end:key_end + size])
                self.last_command = "set date/time"
                self._notify("datetime")
            else:
                self._error = ERR_UNSPECIFIED  # a record we cannot write
            i = key_end + size
        if selection is not None:
            meter.selection = selection
            meter.invalidate()
            self._next = 0
            self.last_command = "selective readout"
            self._notify("selection")

    def _set_address(self, address):
        if self.read_only or not 0 <= address <= 250:
            self._error = ERR_UNSPECIFIED
            return
        old = self.meter.address
        self.meter.address = address
        self.last_command = "primary address %d -> %d" % (old, address)
        self._notify("address")

    def _set_identity(self, id_bcd, rest):
        ident = _bcd_or(id_bcd, -1)
        if self.read_only or ident < 0:
            self._error = ERR_UNSPECIFIED
            return
        meter = self.meter
        meter.id = ident
        meter.id_raw = None
        if rest is not None:
            meter.manufacturer = rest & 0xFFFF
            meter.version = (rest >> 16) & 0xFF
            meter.medium = (rest >> 24) & 0xFF
            self.last_command = "identity %08d %s %d %d" % (
                ident, manufacturer_text(meter.manufacturer), meter.version, meter.medium)
        else:
            self.last_command = "id %08d" % ident
        self._notify("id")

    def _notify(self, what):
        if self.on_change is not None:
            self.on_change(self, what)


def _bcd_or(value, default):
    try:
        return int_from_bcd(value)
    except ValueError:
        return default


def identity_bytes(id_number, manufacturer, version, medium):
    """8 bytes of a secondary address as a CI 52 select sends them."""
    ident = bcd_from_int(id_number, 4)
    return bytes((ident & 0xFF, (ident >> 8) & 0xFF, (ident >> 16) & 0xFF, ident >> 24,
                  manufacturer & 0xFF, manufacturer >> 8, version, medium))
