# The slave state machine of one meter: addresses, selection, FCB, access number,
# multi-telegram cursor and SND_UD commands. It answers a parsed frame by writing the
# reply into its own preallocated buffer; the Bus (bus.py) routes frames to slaves.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

from mbus_core import frame as _frame
from mbus_core.fields import DATA_LEN, lvar_length
from mbus_core.meter import CI_ERROR, bcd_bytes_value, key_end

# C field (master to slave)
SND_NKE = const(0x40)
FCB = const(0x20)
FCV = const(0x10)
_FUNC_SND_UD = const(0x03)
_FUNC_REQ_UD1 = const(0x0A)
_FUNC_REQ_UD2 = const(0x0B)

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
_ERR_UNSPECIFIED = const(0x00)
_ERR_UNIMPLEMENTED_CI = const(0x01)
_ERR_PREMATURE_END = const(0x04)
_ERR_BUSY = const(0x08)

BAUD_RATES = (300, 600, 1200, 2400, 4800, 9600, 19200, 38400)

# SND_UD commands acted on (Slave.command; a host makes log text of them)
CMD_RESET = const(1)
CMD_GLOBAL = const(2)
CMD_SELECTION = const(3)
CMD_ADDRESS = const(4)      # command_arg: the old address
CMD_ID = const(5)
CMD_IDENTITY = const(6)
CMD_BAUD = const(7)         # command_arg: the new rate


_COUNT_MASK = const(0x3FFFFFFF)   # counters wrap here: small ints on every build

# No properties on Slave (nor on Bus and FrameParser): on MicroPython a class with a
# property or another descriptor makes every attribute store on its instances look the
# class up first, which made each of the dozen stores of a request cost four times as much.
class Slave:
    """One meter on the line.

    ci56: what CI 56 means to this meter: "deselect" (default) or "select" (secondary
    selection with the identity sent most significant byte first).
    read_only: refuse changes of address, ID and baud (acknowledged, then reported as a
    CI 70 error on the next REQ_UD2, as a write-protected meter does).
    strict_repeat: True: a REQ_UD2 with the FCB of the last one gets the last telegram
    byte for byte. False: the same telegram of the readout with current values and a new
    access number, as many real meters send it (masters that never toggle FCB, such as
    wmbusmeters, libmbus's tools and pyMeterBus, then still see live values). None
    (default): as the meter says (Meter.strict_repeat, false unless set).
    ignore_fcb: a vendor quirk some meters have: never repeat, every REQ_UD2 is new.
    busy: while True, REQ_UD2 gets a CI 70 "application busy" reply (fault injection).
    """

    def __init__(self, meter, read_only=False, ci56="deselect", ignore_fcb=False,
                 strict_repeat=None):
        if ci56 not in ("deselect", "select"):
            raise ValueError("ci56 must be 'deselect' or 'select'")
        self.meter = meter
        self.read_only = read_only
        self.ignore_fcb = ignore_fcb
        self.strict_repeat = meter.strict_repeat if strict_repeat is None else strict_repeat
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
        self._error = -1            # application error to report on the next REQ_UD2
        self.command = 0            # the last SND_UD acted on (CMD_*; 0: none yet)
        self.command_arg = 0        # and its number (old address, baud rate)
        # live control (ports/control_ops.py): an unplugged meter is silent to every frame
        self.present = True
        # frames handled, replies given, repeats answered, CI 70 errors sent (they wrap
        # at 2^30: small ints on 32-bit MicroPython too)
        self.requests = 0
        self.replies = 0
        self.repeats = 0
        self.errors = 0
        self.reset_link()

    def _did(self, cmd, arg=0):
        self.command = cmd
        self.command_arg = arg

    # -- link state --------------------------------------------------------------------
    # EN 13757-2: the FCB counts on every frame with FCV set. A REQ_UD1/REQ_UD2 with the
    # FCB and function of the last such frame means the master missed our reply.
    def reset_link(self):
        """Forget the FCB, the reply kept for a repeat and the readout cursor (SND_NKE,
        selection)."""
        self._fcb = -1              # FCB of the last frame with FCV set (-1: none)
        self._func = -1             # its function (REQ_UD1, REQ_UD2, SND_UD)
        self._rsp_len = 0           # size of the reply in tx kept for a repeat (0: none)
        self._cur = -1              # telegram index of that reply (-1: not a telegram)
        self._next = 0              # next telegram of a multi-telegram readout

    def invalidate(self, records=True):
        """A command changed what a telegram carries (address, identity, reset,
        selection of records): no repeat of an old telegram, a fresh readout next.
        records=False: the records stay as they are laid out (address and identity
        are written into every telegram anew)."""
        self.reset_link()
        if records:
            self.meter.invalidate()

    def _repeat(self, c, func):
        """Note the FCB of a frame; True when it repeats the last request of this kind."""
        if not c & FCV or self.ignore_fcb:
            self._fcb = -1
            return False
        fcb = c & FCB
        again = fcb == self._fcb and func == self._func and self._rsp_len > 0
        if again:
            self.repeats = (self.repeats + 1) & _COUNT_MASK
        self._fcb = fcb
        self._func = func
        return again

    # -- dispatch ----------------------------------------------------------------
    def handle(self, p):
        """Act on the frame in parser p (already routed to this slave); return the
        size of the reply in self.reply (0: stay silent)."""
        self.reply = self.tx
        if not self.present:
            return 0   # off the bus: no reply, no state change
        self.requests = (self.requests + 1) & _COUNT_MASK
        c = p.c
        func = c & 0x0F
        n = 0
        if not c & 0x40:
            return 0   # a frame from a slave, not a master
        if p.kind == _frame.SHORT:
            if func == _FUNC_REQ_UD2:
                n = self._req_ud2(c)
            elif c == SND_NKE:
                n = self._snd_nke(p.a)
            elif func == _FUNC_REQ_UD1:
                n = self._req_ud1(c)
        elif func == _FUNC_SND_UD and not c & 0x80:
            self._repeat(c, _FUNC_SND_UD)
            n = self._snd_ud(p)
        if n:
            self.replies = (self.replies + 1) & _COUNT_MASK
        return n

    def _ack(self):
        # E5 has a buffer of its own: the last RSP_UD in tx must survive for a repeat.
        self.reply = self._ack_buf
        return 1

    def _snd_nke(self, a):
        self.reset_link()
        if a == ADDR_NETWORK:
            self.selected = False
        return self._ack()

    # -- REQ_UD2 / REQ_UD1 ---------------------------------------------------------
    def _req_ud2(self, c):
        """The next telegram of the readout; for a repeat (same FCB) the last reply
        again; a pending application error (CI 70) first."""
        if self._repeat(c, _FUNC_REQ_UD2):
            if self.strict_repeat or self._cur < 0:
                return self._rsp_len   # the last reply again, unchanged
            index = self._cur          # the same telegram, current values
        elif self.busy:
            return self._write_error(_ERR_BUSY)
        elif self._error >= 0:
            code = self._error
            self._error = -1
            return self._write_error(code)
        else:
            index = self._next
        meter = self.meter
        if index == 0 and meter.stale:
            meter.refresh()
        count = meter.count
        if index >= count:   # the readout shrank since: start it again
            index = 0
            meter.refresh()
            count = meter.count
        n = meter.write_rsp_ud(index, self.tx, self.access)
        self.access = (self.access + 1) & 0xFF
        self._cur = index
        self._next = index + 1 if index + 1 < count else 0
        self._rsp_len = n
        return n

    def _write_error(self, code):
        """A CI 70 reply (application error `code`), kept for a repeat."""
        tx = self.tx
        self.errors = (self.errors + 1) & _COUNT_MASK
        _frame.write_long_header(tx, _frame.RSP_UD, self.meter.address, CI_ERROR, 1)
        tx[7] = code
        self._cur = -1
        self._rsp_len = _frame.finish_long(tx)
        return self._rsp_len

    def _req_ud1(self, c):
        if self._repeat(c, _FUNC_REQ_UD1):
            return self._rsp_len   # the class 1 data again: the master missed it
        meter = self.meter
        if meter.alarm is None:
            self._rsp_len = 0
            return self._ack()
        # the alarm is delivered with it (a repeat sends the bytes kept in tx)
        self._rsp_len = meter.write_rsp_ud(-1, self.tx, self.access)
        self.access = (self.access + 1) & 0xFF
        self._cur = -1
        return self._rsp_len

    # -- secondary selection -----------------------------------------------------------
    def matches_secondary(self, d, s, e, msb_first=False):
        """Does the selection in d[s:e] (ID, manufacturer, version, medium, optional
        0C 78 fabrication number) name this meter? Nibble F / byte FF are wildcards."""
        if e - s < 8:
            return False
        meter = self.meter
        ident = meter.id_bytes
        for k in range(4):
            if not _bcd_match(d[s + (3 - k if msb_first else k)], ident[k]):
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
            fab = meter.fab_bytes
            for k in range(4):
                b = d[s + 10 + k]
                if b == 0xFF:
                    continue
                if meter.fabrication is None or not _bcd_match(b, fab[k]):
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
            self._error = -1
            selected = self.meter.selection is not None
            self.meter.selection = None
            self.invalidate(records=selected)
            self._did(CMD_RESET)
            self._notify("reset")
            return self._ack()
        if CI_BAUD_FIRST <= ci <= CI_BAUD_FIRST + 7:
            if self.read_only:
                self._error = _ERR_UNSPECIFIED
            else:
                self.new_baud = BAUD_RATES[ci - CI_BAUD_FIRST]
                self._did(CMD_BAUD, self.new_baud)
                self._notify("baud")
            return self._ack()
        if ci == CI_DATA_SEND:
            self._data_send(p.buf, p.data_start, p.data_end)
            return self._ack()
        # A valid frame with a CI we do not implement: acknowledged at the link layer,
        # reported as "unimplemented CI" in the next RSP_UD (EN 13757-3 CI 70).
        self._error = _ERR_UNIMPLEMENTED_CI
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
                selected = meter.selection is not None
                meter.selection = None
                self.invalidate(records=selected)
                self._did(CMD_GLOBAL)
                i += 1
                continue
            if dif & 0x0F == 0x0F:  # manufacturer specific data: not ours to parse
                break
            data_at = key_end(d, i, e)
            if data_at > e:
                self._error = _ERR_PREMATURE_END
                return
            field = dif & 0x0F
            if field == 0x08:  # selection for readout
                if selection is None:
                    selection = []
                selection.append(bytes(d[i:data_at]))
                i = data_at
                continue
            size = DATA_LEN[field]
            if field == 0x0D:  # LVAR: text, BCD or binary of the length it gives
                if data_at >= e:
                    self._error = _ERR_PREMATURE_END
                    return
                kind, size = lvar_length(d[data_at])
                if kind is None:
                    self._error = _ERR_UNSPECIFIED  # a reserved LVAR: cannot walk on
                    return
                size += 1
            if data_at + size > e:
                self._error = _ERR_PREMATURE_END
                return
            self._write_record(d, i, data_at, size)
            i = data_at + size
        if selection is not None:
            meter.selection = selection
            self.invalidate()
            self._did(CMD_SELECTION)
            self._notify("selection")

    def _write_record(self, d, i, data_at, size):
        """Act on one record of a CI 51 data send (DIF at d[i], data at d[data_at:])."""
        dif = d[i]
        field = dif & 0x0F
        if dif & 0x80 or data_at != i + 2:
            vif = -1  # DIFEs (storage, tariff) or VIFEs: none of the settings we know
        else:
            vif = d[i + 1]
        # bytes, never one int of the whole field: 8 digits of BCD pass 2^30, which
        # allocates on 32-bit MicroPython
        if vif == 0x7A and field == 0x01:
            self._set_address(d[data_at])
        elif vif == 0x7A and field == 0x09:
            self._set_address(bcd_bytes_value(d, data_at, 1))
        elif vif == 0x79 and field == 0x0C:
            self._set_identity(d, data_at, False)
        elif vif == 0x79 and field == 0x07:
            self._set_identity(d, data_at, True)
        else:
            # Not writable here, set date/time (04 6D) included: the meter has no clock
            # of its own to set, so the master learns it from a CI 70 error.
            self._error = _ERR_UNSPECIFIED

    def _set_address(self, address):
        if self.read_only or not 0 <= address <= 250:
            self._error = _ERR_UNSPECIFIED
            return
        old = self.meter.address
        self.meter.address = address
        self.invalidate(records=False)
        self._did(CMD_ADDRESS, old)
        self._notify("address")

    def _set_identity(self, d, at, full):
        """Set ID (4 BCD bytes at d[at:]) and with `full` manufacturer, version, medium."""
        ident = bcd_bytes_value(d, at, 4)
        if self.read_only or ident < 0:
            self._error = _ERR_UNSPECIFIED
            return
        meter = self.meter
        meter.id = ident
        self.invalidate(records=False)
        if full:
            meter.manufacturer = d[at + 4] | (d[at + 5] << 8)
            meter.version = d[at + 6]
            meter.medium = d[at + 7]
            self._did(CMD_IDENTITY)
        else:
            self._did(CMD_ID)
        self._notify("id")

    def _notify(self, what):
        if self.on_change is not None:
            self.on_change(self, what)


def _bcd_match(b, mine):
    """A selection byte against ours: each nibble equal, or F (any digit)."""
    if b & 0x0F != 0x0F and b & 0x0F != mine & 0x0F:
        return False
    return b & 0xF0 == 0xF0 or b & 0xF0 == mine & 0xF0
