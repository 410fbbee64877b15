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
from mbus_ports.line import reply_window_ms

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
KINDS = (DROP, CHECKSUM, TRUNCATE, GARBAGE, DELAY, WRONG_ADDRESS, IGNORE_FCB, BUSY, SECURITY)
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
             "security:key|cipher|mac|replay|rewind|blocks|plain[:P]; "
             "P is a probability 0..1 (default 1), add @ADDR for one meter only")


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

    def __init__(self, kind, p=1.0, address=None, mode=None, every=0):
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
        if self.mode:
            s += ":" + self.mode
        if self.every:
            s += ":every:%d" % self.every
        elif self.kind != IGNORE_FCB and self.p != 1:
            s += ":%g" % self.p
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
    if kind == IGNORE_FCB:
        if args:
            raise ValueError("bad fault spec %r: ignore-fcb takes no value" % (text,))
        return Fault(kind, 1.0, address)
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
        if bus is not None:
            self.attach(bus)

    def add(self, fault):
        if isinstance(fault, str):
            fault = parse_fault_spec(fault)
        self.faults.append(fault)
        return fault

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

    # -- slave-side quirks -----------------------------------------------------------
    def attach(self, bus):
        self._bus = bus
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
        if not self.faults or n <= 0:
            return buf, n, delay_ms
        bus = line.bus
        core = getattr(bus, "shared", bus)   # a TCP client's view of the shared bus
        if core is not self._bus:
            self.attach(core)
        s = core.responder
        if s is None:
            return buf, n, delay_ms
        a = s.meter.address
        p = bus.parser
        req_ud2 = p.kind == 1 and p.c & 0x4F == 0x4B
        if req_ud2:
            self._slave_quirks(s, a, p.c, buf, n)
        data = buf
        for f in self.faults:
            if f.kind in (IGNORE_FCB, BUSY, SECURITY) or not f.applies_to(a):
                continue
            kind = f.kind
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
