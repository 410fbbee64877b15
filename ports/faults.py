# Fault injection for the run loop (ports/line.py): make a meter misbehave the way real
# meters and real lines do, so that a master's error handling can be tested.
#
#     faults = Faults([parse_fault_spec("drop:0.2"), parse_fault_spec("busy:0.3@5")],
#                     seed=7, log=print)
#     LineServer(bus, port, faults=faults)   # calls faults.apply(line, reply, n, delay_ms)
#
# Runtime-neutral (CPython and MicroPython): no `random` module (a small seeded xorshift
# PRNG, so a run is repeatable with the same seed), no f-strings, no typing. Every fault
# logs one line when it fires. apply() never raises and never writes into the core's
# buffers: a reply that is altered is copied into a buffer of our own first, so a repeat on
# the same FCB still sends the core's original telegram.
from mbus_ports.line import reply_window_ms, ticks_ms, ticks_diff, sleep_ms

# Kinds of fault; the text is what a spec names
DROP = "drop"
CHECKSUM = "checksum"
TRUNCATE = "truncate"
GARBAGE = "garbage"
DELAY = "delay"
WRONG_ADDRESS = "wrong-address"
IGNORE_FCB = "ignore-fcb"
BUSY = "busy"
SECURITY = "security"
# line faults: what the wire and the gear on it do (ports/faults.py, issue 15)
ECHO = "echo"              # a level converter that echoes every request byte
POWER = "power"            # a brown-out: silent for S seconds, then back from power-up
GAPS = "gaps"              # pauses inside a reply
SPLIT = "split"            # a reply in two bursts, the second one late
NOISE = "noise"            # noise bytes on the line between request and reply
IDLE_CLOSE = "idle-close"  # a TCP gateway that resets connections idle for S seconds
KINDS = (DROP, CHECKSUM, TRUNCATE, GARBAGE, DELAY, WRONG_ADDRESS, IGNORE_FCB, BUSY, SECURITY,
         ECHO, POWER, GAPS, SPLIT, NOISE, IDLE_CLOSE)
LINE_WIDE = (ECHO, IDLE_CLOSE)   # no @ADDR: the whole line
POWER_OFF_S = 2.0          # power:... without S: off for this long
MAX_NOISE = 4
NOISE_AVOID = (0x68, 0x10, 0xE5, 0x16)   # noise is never a start or stop character
MAX_GAP_MS = 10000
DELAY_MODES = ("early", "inside", "late")
# security faults of an encrypted meter (mbus_core.security.Security.fault), what they do
SECURITY_MODES = {"key": "encrypted with a wrong key",
                  "cipher": "ciphertext corrupted",
                  "mac": "MAC corrupted (mode 7)",
                  "replay": "message counter not advanced: a replay (mode 7)",
                  "rewind": "message counter one below the last telegram's (mode 7)",
                  "blocks": "encrypted-block count that does not match the data",
                  "plain": "sent unencrypted although it claims encryption"}

MAX_GARBAGE = 8
_OUT_SIZE = 261 + MAX_GARBAGE   # a maximal long frame plus appended garbage

SPEC_HELP = ("drop:P, checksum:P, truncate:P, garbage:P, wrong-address:P, "
             "delay:early|inside|late[:P], busy:P or busy:every:N, ignore-fcb, "
             "security:key|cipher|mac|replay|rewind|blocks|plain[:P], echo, "
             "power:P[:S] or power:every:N[:S], gaps:MS[:P], split:MS[:P], noise[:P], "
             "idle-close:S; P is a probability 0..1 (default 1), add @ADDR for one meter "
             "only")


class Rng:
    """xorshift32: small, fast, the same sequence on every runtime for a seed."""

    def __init__(self, seed=1):
        self.seed(seed)

    def seed(self, seed):
        s = (int(seed) * 2654435761 + 0x9E3779B9) & 0xFFFFFFFF
        self.state = s or 0x2545F491

    def next32(self):
        x = self.state
        x ^= (x << 13) & 0xFFFFFFFF
        x ^= x >> 17
        x ^= (x << 5) & 0xFFFFFFFF
        self.state = x
        return x

    def below(self, n):
        """An integer 0 <= r < n (n >= 1)."""
        return self.next32() % n

    def chance(self, p):
        """True with probability p."""
        if p >= 1:
            return True
        if p <= 0:
            return False
        return self.next32() < p * 4294967296.0


class Fault:
    """One fault: kind, probability p, meter address (None: every meter), for delays the
    mode ("early", "inside", "late"), for busy replies `every` (every Nth request)."""

    def __init__(self, kind, p=1.0, address=None, mode=None, every=0, value=None):
        if kind not in KINDS:
            raise ValueError("unknown fault %r (one of %s)" % (kind, ", ".join(KINDS)))
        if not 0 <= p <= 1:
            raise ValueError("fault probability must be 0..1, got %r" % (p,))
        if address is not None and not 0 <= address <= 250:
            raise ValueError("fault meter address must be 0..250, got %r" % (address,))
        if kind == DELAY and mode not in DELAY_MODES:
            raise ValueError("delay needs early, inside or late")
        if every < 0:
            raise ValueError("busy every N needs N >= 1")
        if kind in LINE_WIDE and address is not None:
            raise ValueError("%s is a fault of the whole line (no @ADDR)" % kind)
        if kind in (GAPS, SPLIT, IDLE_CLOSE) and (value is None or value <= 0):
            raise ValueError("%s needs a time > 0" % kind)
        if kind == POWER and value is None:
            value = POWER_OFF_S
        self.value = value     # gaps, split: ms; power, idle-close: seconds
        self.kind = kind
        self.p = p
        self.address = address
        self.mode = mode
        self.every = every
        self.fired = 0

    def applies_to(self, address):
        return self.address is None or self.address == address

    def why(self):
        """The trigger, as the log shows it: "(p=0.2)" or "(every 5th request)"."""
        if self.every:
            n = self.every
            if n == 1:
                return "(every request)"
            suffix = "th"
            if n % 100 not in (11, 12, 13):
                suffix = ("th", "st", "nd", "rd")[n % 10] if n % 10 < 4 else "th"
            return "(every %d%s request)" % (n, suffix)
        return "(p=%g)" % self.p

    def spec(self):
        """The spec text this fault parses from."""
        s = self.kind
        if self.kind in (GAPS, SPLIT, IDLE_CLOSE):
            s += ":%g" % self.value
        if self.mode:
            s += ":" + self.mode
        if self.every:
            s += ":every:%d" % self.every
        elif self.kind not in (IGNORE_FCB, ECHO, IDLE_CLOSE) and (
                self.p != 1 or (self.kind == POWER and self.value != POWER_OFF_S)):
            s += ":%g" % self.p
        if self.kind == POWER and self.value != POWER_OFF_S:
            s += ":%g" % self.value
        if self.address is not None:
            s += "@%d" % self.address
        return s

    def __repr__(self):
        return "Fault(%s)" % self.spec()


def _probability(text, spec):
    try:
        p = float(text)
    except ValueError:
        raise ValueError("bad fault spec %r: %r is not a probability 0..1" % (spec, text))
    if not 0 <= p <= 1:
        raise ValueError("bad fault spec %r: probability %s is not in 0..1" % (spec, text))
    return p


def _number(text, spec, what, hi):
    """A time > 0 and <= hi from spec text (ValueError: one line)."""
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0 < v <= hi:   # also nan
        raise ValueError("bad fault spec %r: %s %r is not a number > 0 and <= %g"
                         % (spec, what, text, hi))
    return v


def _parse_timed(kind, args, address, text):
    """gaps:MS[:P], split:MS[:P], idle-close:S, power:P[:S], power:every:N[:S]."""
    if kind == IDLE_CLOSE:
        if len(args) != 1:
            raise ValueError("bad fault spec %r: use idle-close:S (seconds)" % (text,))
        return Fault(kind, 1.0, None, value=_number(args[0], text, "idle time", 86400))
    if kind == POWER:
        every = 0
        p = 1.0
        if args and args[0] == "every":
            if len(args) not in (2, 3):
                raise ValueError("bad fault spec %r: use power:every:N[:S]" % (text,))
            try:
                every = int(args[1])
            except ValueError:
                every = 0
            if every < 1:
                raise ValueError("bad fault spec %r: N in power:every:N must be a whole "
                                 "number >= 1" % (text,))
            rest = args[2:]
        else:
            if len(args) > 2:
                raise ValueError("bad fault spec %r: use power:P[:S] or power:every:N[:S]"
                                 % (text,))
            if args:
                p = _probability(args[0], text)
            rest = args[1:]
        off = _number(rest[0], text, "time off", 3600) if rest else POWER_OFF_S
        return Fault(kind, p, address, every=every, value=off)
    if not args or len(args) > 2:
        raise ValueError("bad fault spec %r: use %s:MS[:P]" % (text, kind))
    ms = _number(args[0], text, "pause in ms", MAX_GAP_MS)
    p = _probability(args[1], text) if len(args) == 2 else 1.0
    return Fault(kind, p, address, value=ms)


def parse_fault_spec(text):
    """'drop:0.2', 'checksum:0.1@3', 'delay:late:0.5', 'busy:every:5@2', 'ignore-fcb@5'
    -> Fault. Raises ValueError with a one-line message on a bad spec."""
    spec = text.strip() if isinstance(text, str) else text
    if not isinstance(spec, str) or not spec:
        raise ValueError("empty fault spec (%s)" % SPEC_HELP)
    address = None
    if "@" in spec:
        spec_part, addr_text = spec.split("@", 1)
        try:
            address = int(addr_text)
        except ValueError:
            raise ValueError("bad fault spec %r: meter address %r is not a number"
                             % (text, addr_text))
        if not 0 <= address <= 250:
            raise ValueError("bad fault spec %r: meter address must be a primary address "
                             "0..250" % (text,))
    else:
        spec_part = spec
    parts = spec_part.split(":")
    kind = parts[0].strip().lower().replace("_", "-")
    args = [a.strip() for a in parts[1:]]
    if kind not in KINDS:
        raise ValueError("bad fault spec %r: unknown fault %r (%s)" % (text, kind, SPEC_HELP))
    if kind in LINE_WIDE and address is not None:
        raise ValueError("bad fault spec %r: %s is a fault of the whole line (no @ADDR)"
                         % (text, kind))
    if kind == IGNORE_FCB or kind == ECHO:
        if args:
            raise ValueError("bad fault spec %r: %s takes no value" % (text, kind))
        return Fault(kind, 1.0, address)
    if kind in (GAPS, SPLIT, IDLE_CLOSE, POWER):
        return _parse_timed(kind, args, address, text)
    if kind == SECURITY:
        if not args or args[0] not in SECURITY_MODES or len(args) > 2:
            raise ValueError("bad fault spec %r: security needs one of %s, as in "
                             "security:key:0.5" % (text, ", ".join(sorted(SECURITY_MODES))))
        p = _probability(args[1], text) if len(args) == 2 else 1.0
        return Fault(kind, p, address, mode=args[0])
    if kind == DELAY:
        if not args or args[0] not in DELAY_MODES:
            raise ValueError("bad fault spec %r: delay needs early, inside or late, as in "
                             "delay:late:0.5" % (text,))
        if len(args) > 2:
            raise ValueError("bad fault spec %r: too many values" % (text,))
        p = _probability(args[1], text) if len(args) == 2 else 1.0
        return Fault(kind, p, address, mode=args[0])
    if kind == BUSY and args and args[0] == "every":
        if len(args) != 2:
            raise ValueError("bad fault spec %r: use busy:every:N" % (text,))
        try:
            every = int(args[1])
        except ValueError:
            every = 0
        if every < 1:
            raise ValueError("bad fault spec %r: N in busy:every:N must be a whole number "
                             ">= 1" % (text,))
        return Fault(kind, 1.0, address, every=every)
    if len(args) > 1:
        raise ValueError("bad fault spec %r: too many values (%s:P)" % (text, kind))
    p = _probability(args[0], text) if args else 1.0
    return Fault(kind, p, address)


class Faults:
    """The faults of one line. apply(line, buf, n, delay_ms) -> (data, n, delay_ms) is
    called by LineServer before each reply. attach(bus) (or Faults(..., bus=bus)) sets the
    slave-side quirks (ignore-fcb, busy) up front; without it apply() attaches on the first
    reply, so the very first REQ_UD2 of a meter is never a busy one."""

    def __init__(self, faults=(), seed=1, log=None, bus=None):
        self.faults = []
        for f in faults:
            self.add(f)
        self.seed = seed
        self.rng = Rng(seed)
        self.log = log
        self.fired = 0
        self.errors = 0
        self._out = bytearray(_OUT_SIZE)
        self._bus = None
        # per primary address: REQ_UD2 requests answered, FCB of the last one (0xFF: none)
        self._count = [0] * 251
        self._last_fcb = bytearray(b"\xff" * 251)
        # line faults: the reply's pauses [(after byte, ms)] for send(); meters off (power)
        self.shaping = False
        self._cuts = []
        self._off = {}       # slave -> ticks_ms when its power comes back
        self._heard = {}     # slave -> frames it heard (power:every:N)
        self.next = None     # a gate after ours (Bus.gate chains: ports/quirks.py)
        if bus is not None:
            self.attach(bus)

    def add(self, fault):
        if isinstance(fault, str):
            fault = parse_fault_spec(fault)
        self.faults.append(fault)
        return fault

    def remove(self, fault):
        """Switch a fault off at run time (live control): the slave-side quirks it set
        (ignore-fcb, busy, an armed security fault) are undone, those of the faults that
        stay are set up again."""
        self.faults.remove(fault)
        bus = self._bus
        if bus is None:
            return
        for s in bus.slaves:
            if fault.applies_to(s.meter.address):
                s.ignore_fcb = False
                s.busy = False
                sec = getattr(s.meter, "security", None)
                if sec is not None:
                    sec.fault = None
                    sec.fault_by = None
        self.attach(bus)

    def __bool__(self):
        return bool(self.faults)

    def __len__(self):
        return len(self.faults)

    def _say(self, fault, text):
        fault.fired += 1
        self.fired += 1
        if self.log is not None:
            try:
                self.log("fault: " + text)
            except Exception:
                pass

    @property
    def echoes(self):
        return self.has(ECHO) is not None

    def has(self, kind):
        for f in self.faults:
            if f.kind == kind:
                return f
        return None

    def idle_close(self):
        """Seconds after which an idle TCP connection is reset (0: no such fault)."""
        f = self.has(IDLE_CLOSE)
        return f.value if f is not None else 0

    # -- line faults: the level converter's echo, the meter's power ------------------------
    def heard(self, line, data, n):
        """Bytes came from the master (LineServer.receive): an echoing level converter
        sends them straight back."""
        f = self.has(ECHO)
        if f is None or n <= 0:
            return
        try:
            line.port.write(memoryview(data)[:n])
            line.port.flush()
            self._say(f, "echo of %d request bytes" % n)
        except Exception:
            self.errors += 1

    def route(self, p):
        return p.a if self.next is None else self.next.route(p)

    def reply(self, s, p, n):
        return n if self.next is None else self.next.reply(s, p, n)

    def admit(self, s, p):
        """Bus.gate: False while the meter's power is off (it never heard the frame)."""
        try:
            ok = self._power(s)
        except Exception:
            self.errors += 1
            ok = True
        if ok and self.next is not None:
            return self.next.admit(s, p)
        return ok

    def _power(self, s):
        a = s.meter.address
        back = self._off.get(s)
        if back is not None:
            if ticks_diff(back, ticks_ms()) > 0:
                return False
            del self._off[s]
            s.reset_link()
            s.selected = False
            s.access = 0
            s.busy = False
            s._error = -1
            if self.log is not None:
                self.log("fault: meter %d powered up again: access number 0, FCB, "
                         "selection and readout position forgotten" % a)
            # the quirks' part of a power-up (ports/quirks.py): a ready time, RAM lost
            gate = getattr(self._bus, "gate", None)
            hook = getattr(gate, "powered_up", None) if gate is not self else None
            if hook is not None and not hook(s):
                return False
        for f in self.faults:
            if f.kind != POWER or not f.applies_to(a):
                continue
            n = self._heard.get(s, 0) + 1
            self._heard[s] = n
            if (f.every and n % f.every == 0) or (not f.every and self.rng.chance(f.p)):
                self._off[s] = ticks_ms() + int(f.value * 1000)
                self._say(f, "meter %d loses power for %g s after this frame %s"
                          % (a, f.value, f.why()))
            break
        return True

    # -- slave-side quirks -----------------------------------------------------------
    def attach(self, bus):
        self._bus = bus
        if self.has(POWER) is not None:
            gate = getattr(bus, "gate", self)
            if gate is None:
                bus.gate = self
            elif gate is not self and getattr(gate, "next", self) is None:
                gate.next = self
        try:
            for s in bus.slaves:
                self._setup_slave(s)
        except Exception:
            self.errors += 1

    def _setup_slave(self, s):
        a = s.meter.address
        for f in self.faults:
            if not f.applies_to(a):
                continue
            if f.kind == IGNORE_FCB:
                s.ignore_fcb = True
            elif f.kind == BUSY:
                self._decide_busy(s, a)
            elif f.kind == SECURITY:
                self._decide_security(s, a)

    def _decide_security(self, s, a):
        """Arm a security fault for the next telegram of an encrypted meter."""
        sec = getattr(s.meter, "security", None)
        if sec is None:
            return
        sec.fault = None
        for f in self.faults:
            if f.kind == SECURITY and f.applies_to(a) and self.rng.chance(f.p):
                if f.mode in ("mac", "replay", "rewind") and sec.mode != 7:
                    continue
                sec.fault = f.mode
                sec.fault_by = f
                return

    def _decide_busy(self, s, a):
        """Whether the next REQ_UD2 to slave s gets a busy reply."""
        busy = False
        nxt = self._count[a] + 1
        for f in self.faults:
            if f.kind != BUSY or not f.applies_to(a):
                continue
            if f.every:
                if nxt % f.every == 0:
                    busy = True
            elif self.rng.chance(f.p):
                busy = True
        s.busy = busy

    def _busy_fault(self, a):
        for f in self.faults:
            if f.kind == BUSY and f.applies_to(a):
                return f
        return None

    # -- the reply path --------------------------------------------------------------
    def apply(self, line, buf, n, delay_ms):
        try:
            return self._apply(line, buf, n, delay_ms)
        except Exception:
            self.errors += 1
            return buf, n, delay_ms

    def _apply(self, line, buf, n, delay_ms):
        if self.shaping:   # a plan for a reply that was never sent (dropped, stopped)
            self._cuts = []
            self.shaping = False
        if not self.faults or n <= 0:
            return buf, n, delay_ms
        core = line.bus
        if core is not self._bus:
            self.attach(core)
        s = core.responder
        if s is None:
            return buf, n, delay_ms
        a = s.meter.address
        p = line.parser   # the line's own (each TCP client has one)
        req_ud2 = p.kind == 1 and p.c & 0x4F == 0x4B
        if req_ud2:
            self._slave_quirks(s, a, p.c, buf, n)
        data = buf
        for f in self.faults:
            if f.kind in (IGNORE_FCB, BUSY, SECURITY, ECHO, POWER, IDLE_CLOSE) or \
                    not f.applies_to(a):
                continue
            kind = f.kind
            if kind in (GAPS, SPLIT, NOISE):
                if self.rng.chance(f.p):
                    self._shape(f, line, a, n)
                continue
            if kind == DELAY:
                if self.rng.chance(f.p):
                    delay_ms = self._delay(f, line, a, delay_ms)
                continue
            if kind == DROP:
                if self.rng.chance(f.p):
                    self._say(f, "drop reply of meter %d %s" % (a, f.why()))
                    return data, 0, delay_ms
                continue
            framed = n >= 5 and (data[0] == 0x68 or data[0] == 0x10)
            if kind == CHECKSUM:
                if framed and self.rng.chance(f.p):
                    data = self._own(data, n)
                    at = 3 if data[0] == 0x10 else n - 2
                    data[at] ^= 1 + self.rng.below(255)
                    self._say(f, "corrupt checksum of reply of meter %d %s" % (a, f.why()))
            elif kind == WRONG_ADDRESS:
                if framed and self.rng.chance(f.p):
                    data = self._own(data, n)
                    at = 2 if data[0] == 0x10 else 5
                    old = data[at]
                    new = (old + 1 + self.rng.below(255)) & 0xFF
                    data[at] = new
                    cs = 3 if data[0] == 0x10 else n - 2
                    data[cs] = (data[cs] + new - old) & 0xFF
                    self._say(f, "reply of meter %d sent with address %d %s"
                              % (a, new, f.why()))
            elif kind == TRUNCATE:
                if n >= 2 and self.rng.chance(f.p):
                    keep = 1 + self.rng.below(n - 1)
                    self._say(f, "truncate reply of meter %d to %d of %d bytes %s"
                              % (a, keep, n, f.why()))
                    n = keep
            elif kind == GARBAGE:
                if n + MAX_GARBAGE <= _OUT_SIZE and self.rng.chance(f.p):
                    data = self._own(data, n)
                    extra = 1 + self.rng.below(MAX_GARBAGE)
                    i = 0
                    while i < extra:
                        data[n + i] = self.rng.below(256)
                        i += 1
                    n += extra
                    self._say(f, "append %d garbage bytes to reply of meter %d %s"
                              % (extra, a, f.why()))
        return data, n, delay_ms

    def _shape(self, f, line, a, n):
        """Plan pauses inside the reply (send() makes them), or send noise now, ahead of
        the reply delay: between the request and the reply."""
        if f.kind == NOISE:
            k = 1 + self.rng.below(MAX_NOISE)
            noise = bytearray(k)
            for i in range(k):
                b = self.rng.below(256)
                while b in NOISE_AVOID:
                    b = self.rng.below(256)
                noise[i] = b
            line.port.write(noise)
            line.port.flush()
            self._say(f, "%d noise bytes (%s) on the line before the reply of meter %d %s"
                      % (k, " ".join(["%02X" % b for b in noise]), a, f.why()))
            return
        if n < 2:
            return
        ms = int(f.value)
        if f.kind == SPLIT:
            at = 1 + self.rng.below(n - 1)
            self._cuts.append((at, ms))
            self._say(f, "reply of meter %d in two bursts: %d bytes, %d ms, %d bytes %s"
                      % (a, at, ms, n - at, f.why()))
        else:
            k = 1 + self.rng.below(3 if n > 3 else n - 1)
            ats = []
            for _ in range(k):
                at = 1 + self.rng.below(n - 1)
                if at not in ats:
                    ats.append(at)
            ats.sort()
            for at in ats:
                self._cuts.append((at, ms))
            self._say(f, "reply of meter %d with %d ms pauses after byte %s %s"
                      % (a, ms, ", ".join(["%d" % at for at in ats]), f.why()))
        self._cuts.sort()
        self.shaping = True

    def send(self, line, out):
        """Write a reply with the pauses planned for it (LineServer._reply when
        shaping): each burst flushed, then the pause; stop() ends a pause."""
        cuts = self._cuts
        self._cuts = []
        self.shaping = False
        port = line.port
        wire = getattr(port, "wire", None)   # paced (--wire-timing): pauses in its schedule
        pos = 0
        for at, ms in cuts:
            if at <= pos or at >= len(out):
                continue
            port.write(out[pos:at])
            port.flush()
            pos = at
            if wire is not None:
                wire.free_at += ms / 1000.0
                continue
            while ms > 0 and line.running:
                step = ms if ms < 50 else 50
                sleep_ms(step)
                ms -= step
        port.write(out[pos:])
        port.flush()

    def _own(self, data, n):
        """The reply in our own buffer (copied once), so the core's stays intact."""
        out = self._out
        if data is out:
            return out
        i = 0
        while i < n:
            out[i] = data[i]
            i += 1
        return out

    def _slave_quirks(self, s, a, c, buf, n):
        fcv = c & 0x10
        fcb = 1 if c & 0x20 else 0
        last = self._last_fcb[a]
        self._last_fcb[a] = fcb if fcv else 0xFF
        self._count[a] += 1
        # ignore-fcb: the master repeated (FCV set, same FCB) and got a new telegram
        for f in self.faults:
            if f.kind == IGNORE_FCB and f.applies_to(a):
                if not s.ignore_fcb:
                    s.ignore_fcb = True
                elif fcv and last == fcb:
                    self._say(f, "meter %d ignores FCB: repeated request answered as new"
                              % a)
                break
        # security: the telegram that just went out carried the armed fault (write()
        # clears it once used); then arm the next one
        sec = getattr(s.meter, "security", None)
        if sec is not None and sec.fault is None:
            f = sec.fault_by
            if f is not None:
                sec.fault_by = None
                self._say(f, "security %s: telegram of meter %d %s %s"
                          % (f.mode, a, SECURITY_MODES[f.mode], f.why()))
            self._decide_security(s, a)
        # busy: the reply that just went out was a busy one of ours
        f = self._busy_fault(a)
        if f is None:
            return
        if s.busy and n >= 9 and buf[0] == 0x68 and buf[6] == 0x70 and buf[7] == 0x08:
            self._say(f, "busy reply (CI 70 08) of meter %d %s" % (a, f.why()))
        self._decide_busy(s, a)

    def _delay(self, f, line, a, delay_ms):
        baud = getattr(line, "baud", 2400)
        lo, hi = reply_window_ms(baud)
        mode = f.mode
        if mode == "early":
            d = 0
        elif mode == "inside":
            first = int(lo) + 1
            last = int(hi) - 1
            d = first + self.rng.below(last - first + 1) if last > first else first
        else:
            d = int(hi) + 1 + self.rng.below(int(hi) + 1)
        self._say(f, "delay reply of meter %d by %d ms, %s (window %.1f..%.1f ms at %d baud)"
                  " %s" % (a, d, "before the window" if mode == "early" else
                           ("inside the window" if mode == "inside" else "beyond the window"),
                           lo, hi, baud, f.why()))
        return d


def faults_from_specs(specs, seed=1, log=None, bus=None):
    """A Faults object from spec texts (None when there are none)."""
    if not specs:
        return None
    return Faults([parse_fault_spec(s) for s in specs], seed=seed, log=log, bus=bus)


# -- the CLI (CPython) -------------------------------------------------------------------
def add_fault_arguments(parser):
    """--fault SPEC (repeatable) and --seed S on an argparse parser. Where the parser has a
    --seed of its own already (mbus-slave's, for --random-meters), the faults' seed is
    --fault-seed S (default: that --seed, else 1)."""
    import argparse

    def fault_type(text):
        try:
            return parse_fault_spec(text)
        except ValueError as e:
            raise argparse.ArgumentTypeError(str(e))

    group = parser.add_argument_group("fault injection")
    group.add_argument("--fault", action="append", default=[], type=fault_type,
                       metavar="SPEC", help="inject a fault (repeatable): " + SPEC_HELP)
    taken = "--seed" in getattr(parser, "_option_string_actions", {})
    names = ("--fault-seed",) if taken else ("--seed", "--fault-seed")
    group.add_argument(*names, type=int, default=None, dest="fault_seed", metavar="S",
                       help="seed of the fault injection's random numbers: the same seed "
                       "repeats a run (default %s)" % ("--seed, else 1" if taken else "1"))
    return group


def faults_from_args(args, log=None, bus=None):
    """The Faults of parsed CLI arguments, or None when no --fault was given."""
    faults = getattr(args, "fault", None)
    if not faults:
        return None
    seed = getattr(args, "fault_seed", None)
    if seed is None:
        seed = getattr(args, "seed", None)
    if not isinstance(seed, int):
        seed = 1
    return Faults(faults, seed=seed, log=log, bus=bus)
