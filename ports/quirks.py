# Vendor quirks (host only): what real meters do that the standard does not say, per
# meter, from the meter file's "quirks": {...} or mbus-slave's --quirk NAME=VALUE.
#
#   sleep           S: after S s without a frame the meter dozes; the next frame only wakes
#                   it (lost, no reply), the master's retry gets the answer
#   ration          MIN[:K]: a full telegram at most every MIN minutes, in between a short
#                   one (the header and the first K records, default 1)
#   auto_baud       rates: the meter answers at the speed the master uses, if in the set
#                   (a pty: the master's termios speed; TCP and serial ports: no effect)
#   address_writes  N[:ram|refuse]: primary-address writes per 24 h; beyond that the
#                   write is kept in RAM only (acknowledged, never saved) or refused
#                   (no E5, no change)
#   ready_time      S: silent for S s after power-up
#   reply           ci-b7: RSP_UD with CI B7 where the standard says 72
#   second_address  A: the meter also answers frames to primary address A
#   fcb             ignore (every REQ_UD2 new) | strict (repeats byte for byte) | live
#
# Quirks is the Bus's gate (mbus_core/bus.py): route() before a frame is dispatched,
# admit() before a meter acts on it, reply() on what it answered. Time comes from an
# injected clock (seconds).
import time

from mbus_core.codec.model import ConfigError
from mbus_core.notes import meter_where
from mbus_core.meter import key_end
from mbus_core.slave import BAUD_RATES, DATA_LEN, lvar_length

NAMES = ("sleep", "ration", "auto_baud", "address_writes", "ready_time", "reply",
         "second_address", "fcb")
FCB_MODES = ("ignore", "strict", "live")
REPLY_KINDS = {"ci-b7": 0xB7}
DAY_S = 86400
TEXT_FORMS = {"sleep": "seconds", "ready_time": "seconds",
              "ration": "MINUTES or MINUTES:RECORDS", "auto_baud": "rates as in 300,2400,9600",
              "address_writes": "N or N:ram or N:refuse", "reply": "ci-b7",
              "second_address": "a primary address 0..250", "fcb": "ignore, strict or live"}
HEADER_LEN = {0x72: 12, 0x7A: 4, 0x78: 0}   # data header after the CI of an RSP_UD


class QuirkError(ValueError):
    """A bad quirk: one line."""


def _seconds(v, name, hi=86400 * 7, unit="seconds"):
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not 0 < v <= hi:
        raise QuirkError("%s must be a number of %s > 0 (at most %d), not %r"
                         % (name, unit, hi, v))
    return float(v)


def _count(v, name, lo=0, hi=250):
    if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
        raise QuirkError("%s must be a whole number %d..%d, not %r" % (name, lo, hi, v))
    return v


class MeterQuirks:
    """The checked quirks of one meter and their state."""

    def __init__(self, spec):
        if not isinstance(spec, dict):
            raise QuirkError("quirks must be an object")
        for k in spec:
            if k not in NAMES:
                raise QuirkError("unknown quirk '%s' (known: %s)" % (k, ", ".join(NAMES)))
        self.spec = dict(spec)
        self.sleep = _seconds(spec["sleep"], "sleep") if "sleep" in spec else 0.0
        self.ready = _seconds(spec["ready_time"], "ready_time", 3600) \
            if "ready_time" in spec else 0.0
        self.ration_s, self.ration_records = self._ration(spec.get("ration"))
        self.bauds = self._bauds(spec.get("auto_baud"))
        self.writes, self.beyond = self._writes(spec.get("address_writes"))
        self.ci = None
        if "reply" in spec:
            r = spec["reply"]
            if r not in REPLY_KINDS:
                raise QuirkError("reply must be one of %s, not %r"
                                 % (", ".join(REPLY_KINDS), r))
            self.ci = REPLY_KINDS[r]
        self.second = _count(spec["second_address"], "second_address") \
            if "second_address" in spec else None
        self.fcb = spec.get("fcb")
        if self.fcb is not None and self.fcb not in FCB_MODES:
            raise QuirkError("fcb must be one of %s, not %r" % (", ".join(FCB_MODES),
                                                               self.fcb))
        self.heard_at = None      # when the meter last heard a frame (sleep)
        self.full_at = None       # when it last sent a full telegram (ration)
        self.write_times = []     # address writes in the last 24 h
        self.ram_only = False     # the address write under way is not to be saved
        self.saved = None         # the primary address as saved (a power cycle's)
        self.powered_at = None    # the last power-up (None: the start)

    @staticmethod
    def _ration(v):
        if v is None:
            return 0.0, 0
        records = 1
        if isinstance(v, dict):
            for k in v:
                if k not in ("minutes", "records"):
                    raise QuirkError("ration: unknown key '%s' (known: minutes, records)" % k)
            if "minutes" not in v:
                raise QuirkError("ration needs minutes, as in {\"minutes\": 15}")
            records = _count(v.get("records", 1), "ration records", 0, 255)
            v = v["minutes"]
        return _seconds(v, "ration", 10080, "minutes") * 60, records

    @staticmethod
    def _bauds(v):
        if v is None or v is False:
            return ()
        if v is True:
            return BAUD_RATES
        if not isinstance(v, list) or not v:
            raise QuirkError("auto_baud must be a list of baud rates (or true: all of %s)"
                             % ", ".join(map(str, BAUD_RATES)))
        for b in v:
            if b not in BAUD_RATES or isinstance(b, bool):
                raise QuirkError("auto_baud: bad baud rate %r (want %s)"
                                 % (b, ", ".join(map(str, BAUD_RATES))))
        return tuple(sorted(set(v)))

    @staticmethod
    def _writes(v):
        if v is None:
            return -1, "ram"
        beyond = "ram"
        if isinstance(v, dict):
            for k in v:
                if k not in ("per_day", "beyond"):
                    raise QuirkError("address_writes: unknown key '%s' (known: per_day, "
                                     "beyond)" % k)
            beyond = v.get("beyond", "ram")
            if beyond not in ("ram", "refuse"):
                raise QuirkError("address_writes beyond must be ram or refuse, not %r"
                                 % (beyond,))
            if "per_day" not in v:
                raise QuirkError("address_writes needs per_day, as in {\"per_day\": 20}")
            v = v["per_day"]
        return _count(v, "address_writes", 0, 100000), beyond


# -- --quirk NAME=VALUE ---------------------------------------------------------------------
def parse_quirk_text(text):
    """'sleep=30', 'ration=15:2', 'auto-baud=300,2400', 'address-writes=20:refuse',
    'fcb=ignore' -> (name, value as a meter file has it). QuirkError on a bad one."""
    name, eq, value = text.partition("=")
    name = name.strip().lower().replace("-", "_")
    value = value.strip()
    if name not in NAMES:
        raise QuirkError("bad --quirk %r: unknown quirk '%s' (known: %s)"
                         % (text, name, ", ".join(n.replace("_", "-") for n in NAMES)))
    if name == "auto_baud" and not eq:
        return name, True
    if not value:
        raise QuirkError("bad --quirk %r: use %s=VALUE" % (text, name.replace("_", "-")))
    try:
        v = _text_value(name, value)
        MeterQuirks({name: v})   # the same checks as a meter file's
    except QuirkError as e:
        raise QuirkError("bad --quirk %r: %s" % (text, e))
    except ValueError:
        raise QuirkError("bad --quirk %r: %s wants %s" % (text, name.replace("_", "-"),
                                                         TEXT_FORMS[name]))
    return name, v


def _number(text):
    v = float(text)
    return int(v) if v == int(v) and "." not in text and "e" not in text.lower() else v


def _text_value(name, value):
    if name in ("sleep", "ready_time"):
        return _number(value)
    if name == "ration":
        minutes, _, records = value.partition(":")
        if not records:
            return _number(minutes)
        return {"minutes": _number(minutes), "records": int(records)}
    if name == "auto_baud":
        return [int(b) for b in value.split(",")]
    if name == "address_writes":
        n, _, beyond = value.partition(":")
        return {"per_day": int(n), "beyond": beyond or "ram"}
    if name == "second_address":
        return int(value)
    return value


def quirks_from(meters, texts=()):
    """The Quirks of the meters (their files' "quirks" and --quirk texts, which apply to
    every meter), or None when there are none. QuirkError / ConfigError: one line."""
    extra = {}
    for t in texts or ():
        name, v = parse_quirk_text(t)
        extra[name] = v
    per = []
    for i, m in enumerate(meters):
        spec = dict(getattr(m, "quirks", None) or {})
        spec.update(extra)
        if not spec:
            per.append(None)
            continue
        try:
            per.append(MeterQuirks(spec))
        except QuirkError as e:
            raise ConfigError("%s: quirks: %s" % (meter_where(i, getattr(m, "name", None)), e))
    if not any(per):
        return None
    return Quirks(meters, per)


# -- serving them ---------------------------------------------------------------------------
class Quirks:
    """The Bus gate of the quirks. attach(bus) once the slaves exist; line (a LineServer)
    and speed (callable: the master's baud rate or 0) for auto_baud."""

    def __init__(self, meters, per, clock=time.monotonic, log=None):
        self.meters = meters
        self.per = per
        self.clock = clock
        self.log = log
        self.next = None        # a gate after ours (ports/faults.py's power faults)
        self.line = None
        self.speed = None
        self.powered_at = clock()
        self._by_slave = {}
        self._by_second = {}
        self._buf = bytearray(261)
        self._persist = None    # the bus's on_change we pass saves on to

    def say(self, text):
        if self.log is not None:
            self.log("quirk: " + text)

    def attach(self, bus, log=None):
        if log is not None:
            self.log = log
        self.bus = bus
        taken = set(s.meter.address for s in bus.slaves)
        for s in bus.slaves:
            q = self.per[self.meters.index(s.meter)] if s.meter in self.meters else None
            if q is None:
                continue
            self._by_slave[s] = q
            q.saved = s.meter.address
            if q.fcb == "ignore":
                s.ignore_fcb = True
            elif q.fcb == "strict":
                s.strict_repeat = True
            elif q.fcb == "live":
                s.strict_repeat = False
            if q.second is not None:
                if q.second in taken:
                    self.say("meter %d: second address %d is taken by another meter: "
                             "not used" % (s.meter.address, q.second))
                else:
                    self._by_second[q.second] = s
        self._persist = bus.on_change
        bus.on_change = self._on_change
        old = bus.gate
        bus.gate = self
        if old is not None:
            self.next = old

    def auto_baud(self):
        return any(q is not None and q.bauds for q in self.per)

    # -- the gate ---------------------------------------------------------------------
    def route(self, p):
        s = self._by_second.get(p.a)
        if s is None:
            return p.a if self.next is None else self.next.route(p)
        self.say("meter %d answers at its second address %d" % (s.meter.address, p.a))
        return s.meter.address

    def admit(self, s, p):
        # the gate after ours first: a meter without power (a fault) has no quirks
        if self.next is not None and not self.next.admit(s, p):
            return False
        q = self._by_slave.get(s)
        return q is None or self._admit(s, q, p)

    def _admit(self, s, q, p):
        now = self.clock()
        a = s.meter.address
        up = q.powered_at if q.powered_at is not None else self.powered_at
        if q.ready and now - up < q.ready:
            self.say("meter %d not ready %.1f s after power-up (ready time %g s): frame "
                     "ignored" % (a, now - up, q.ready))
            return False
        if q.bauds and not self._baud_ok(s, q):
            return False
        if q.sleep:
            last = q.heard_at if q.heard_at is not None else self.powered_at
            q.heard_at = now
            if now - last >= q.sleep:
                self.say("meter %d was asleep (%.1f s without a frame, sleeps after %g s): "
                         "this frame only woke it up" % (a, now - last, q.sleep))
                return False
        if q.writes >= 0 and _is_address_write(p):
            return self._address_write(s, q, now)
        return True

    def _baud_ok(self, s, q):
        rate = self.speed() if self.speed is not None else 0
        if not rate:
            return True   # the master's speed is not known (TCP, a serial port)
        a = s.meter.address
        if rate not in q.bauds:
            said = "%d baud" % rate if rate > 0 else "speed (no M-Bus rate)"
            self.say("meter %d cannot follow the master's %s (auto-baud %s): frame not "
                     "understood" % (a, said, ",".join(map(str, q.bauds))))
            return False
        line = self.line
        if line is not None and line.baud != rate:
            line.switch_baud(rate, fallback=False)
            self.say("meter %d follows the master to %d baud (auto-baud)" % (a, rate))
        return True

    def _address_write(self, s, q, now):
        q.write_times = [t for t in q.write_times if now - t < DAY_S]
        if len(q.write_times) < q.writes:
            q.write_times.append(now)
            q.ram_only = False
            return True
        a = s.meter.address
        if q.beyond == "refuse":
            self.say("meter %d refuses address write %d within 24 h (limit %d): no E5"
                     % (a, len(q.write_times) + 1, q.writes))
            return False
        q.ram_only = True
        self.say("meter %d: address write beyond %d per 24 h kept in RAM only (not saved)"
                 % (a, q.writes))
        return True

    def powered_up(self, s):
        """A power cycle (ports/faults.py power) ended: the ready time starts again, an
        address kept in RAM only is lost. False: the meter does not hear this frame."""
        q = self._by_slave.get(s)
        if q is None:
            return True
        q.powered_at = q.heard_at = self.clock()
        listen = True
        if q.saved is not None and s.meter.address != q.saved:
            self.say("meter %d: address %d was in RAM only: back at %d after the power "
                     "cycle" % (q.saved, s.meter.address, q.saved))
            s.meter.address = q.saved
            self.bus._moved = True   # the bus re-indexes its addresses after this frame
            listen = False
        if q.ready:
            self.say("meter %d powered up: not ready for %g s" % (s.meter.address, q.ready))
            listen = False
        return listen

    def _on_change(self, slave, what):
        q = self._by_slave.get(slave)
        if what == "address" and q is not None and q.ram_only:
            q.ram_only = False
            return     # not persisted: a restart brings the saved address back
        if what == "address" and q is not None:
            q.saved = slave.meter.address
        if self._persist is not None:
            self._persist(slave, what)

    def reply(self, s, p, n):
        q = self._by_slave.get(s)
        if q is not None and n > 9 and p.kind == 1 and p.c & 0x4F == 0x4B:
            src = s.reply
            if src[0] == 0x68 and src[6] in HEADER_LEN:
                n = self._shape(s, q, src, n)
        return n if self.next is None else self.next.reply(s, p, n)

    def _shape(self, s, q, src, n):
        """Ration and CI quirks on an RSP_UD, in our own buffer (the core's stays as it
        was, for its repeats)."""
        out = self._buf
        ci = src[6]
        cut = n - 2
        if q.ration_s:
            now = self.clock()
            if q.full_at is None or now - q.full_at >= q.ration_s:
                q.full_at = now
            else:
                cut = _records_end(src, 7 + HEADER_LEN[ci], n - 2, q.ration_records)
                self.say("meter %d: short telegram (%d of %d bytes; next full one in %.0f s)"
                         % (s.meter.address, cut + 2, n, q.ration_s - (now - q.full_at)))
        if cut == n - 2 and q.ci is None:
            return n
        out[:cut] = src[:cut]
        if q.ci is not None:
            out[6] = q.ci
        ln = cut - 4
        out[1] = out[2] = ln
        out[cut] = sum(out[4:cut]) & 0xFF
        out[cut + 1] = 0x16
        s.reply = out
        return cut + 2


def _is_address_write(p):
    """SND_UD CI 51 whose first record writes the primary address (01 7A / 09 7A)."""
    if p.kind == 1 or p.c & 0x4F != 0x43 or p.ci != 0x51:
        return False
    d = p.buf
    i = p.data_start
    return p.data_end - i >= 3 and d[i] in (0x01, 0x09) and d[i + 1] == 0x7A


def _records_end(d, start, end, k):
    """Where the first k records of d[start:end] end (manufacturer data: never kept)."""
    i = start
    while k > 0 and i < end:
        dif = d[i]
        if dif == 0x2F:
            i += 1
            continue
        if dif & 0x0F == 0x0F:
            break
        at = key_end(d, i, end)
        size = DATA_LEN[dif & 0x0F]
        if dif & 0x0F == 0x0D and at < end:
            size = lvar_length(d[at])[1] + 1
        if at + size > end:
            break
        i = at + size
        k -= 1
    return i


# -- auto-baud on a pty: the speed the master set ------------------------------------------
def pty_class():
    """A PtyPort that remembers the speed a master sets before the pty parks it."""
    import termios
    from mbus_ports import pty_port

    speeds = {}
    for rate in BAUD_RATES:
        c = getattr(termios, "B%d" % rate, None)
        if c is not None:
            speeds[c] = rate

    class AutoBaudPty(pty_port.PtyPort):
        master_baud = 0

        def __init__(self, *args, **kw):
            pty_port.PtyPort.__init__(self, *args, **kw)
            self.master_baud = 0   # the pty's own speed before the first park is no master's

        def _park_speed(self):
            try:
                attrs = termios.tcgetattr(self.slave)
            except (termios.error, OSError):
                attrs = None
            if attrs is not None and attrs[4] != pty_port.PARK_SPEED:
                self.master_baud = speeds.get(attrs[4], -1)
            pty_port.PtyPort._park_speed(self)

        def speed(self):
            """The master's speed now (0: never set; -1: not an M-Bus rate)."""
            try:
                attrs = termios.tcgetattr(self.slave)
                if attrs[4] != pty_port.PARK_SPEED:
                    return speeds.get(attrs[4], -1)
            except (termios.error, OSError):
                pass
            return self.master_baud

    return AutoBaudPty
