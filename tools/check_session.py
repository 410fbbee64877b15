# mbus-check: a master's session with the meter under test. Every request goes through
# ask(), which keeps the ledgers the link-layer rules judge at the end (missing replies,
# malformed frames, reply times, parity errors), so that every reply of the run counts.
from mbus_tools import check_frames as FR
from mbus_tools.check_io import hexs

MAX_TELEGRAMS = 32   # a readout longer than this is taken to loop
RETRIES = 2          # a master asks again after a lost or broken reply (REQ_UD2: same FCB)
KIND_TEXT = {"ack": "E5", "long": "a long frame", "short": "a short frame",
             "garbage": "garbage"}


class NoMeter(Exception):
    """Nothing usable answers at the address: one line for the user."""


class Reply:
    """What a request got: the exchange, the reply's kind, frame and problems, and for a
    well-formed RSP_UD its Telegram."""

    def __init__(self, exchange, want_addr):
        self.x = exchange
        self.kind, self.frame, self.problems, intact = FR.check_reply(exchange.data,
                                                                     want_addr)
        self.telegram = None
        if self.kind == "long" and intact:
            self.telegram = FR.Telegram(self.frame, exchange)

    @property
    def silent(self):
        return not self.x.data

    def what(self):
        """What came back, in a few words."""
        if self.kind is None:
            return "no reply"
        text = KIND_TEXT[self.kind]
        if self.telegram is not None:
            text = "an RSP_UD (CI %02X)" % self.telegram.ci
        return "%s (%s)" % (text, "; ".join(self.problems)) if self.problems else text


class Readout:
    """The telegrams of one multi-telegram readout, in order; looped: it never ended."""

    def __init__(self, telegrams, looped, broken):
        self.telegrams = telegrams
        self.looped = looped
        self.broken = broken   # what stopped it early (a missing or bad reply), or None


class Session:
    def __init__(self, line, address, timeout, ci56="deselect", secondary=None,
                 allow_writes=False, try_baud=None, echo=False):
        self.line = line
        self.address = address          # the primary address under test
        self.timeout = timeout
        self.ci56 = ci56
        self.secondary = secondary      # --secondary (FR.Secondary) or None
        self.allow_writes = allow_writes
        self.try_baud = try_baud
        self.echo = echo                # --echo: the line is known to echo every request
        self.asked = 0                  # requests sent (every one, whatever was due)
        self.echoes = []                # exchanges where the request came back first
        self.missing = []               # exchanges that wanted a reply and got none
        self.bad_frames = []            # (problem, exchange)
        self.replies = []               # exchanges that got a reply (timing, gaps)
        self.parity_bad = []            # replies with bytes of wrong parity (real serial)
        self.telegrams = []             # every well-formed RSP_UD
        self._readout = None

    # -- one request -----------------------------------------------------------------
    def ask(self, frame, label, want=True, to=None):
        """Send frame; want: a reply is due (False: silence is, the caller judges it).
        to: the address the request went to (for the reply's A field)."""
        x = self.line.exchange(frame, label, self.timeout)
        return self.judge(x, want, to)

    def judge(self, x, want=True, to=None):
        reply = Reply(x, self.reply_address(to))
        self.asked += 1
        if x.echo:
            self.echoes.append(x)
        if not want:
            return reply
        if reply.silent:
            self.missing.append(x)
            return reply
        self.replies.append(x)
        self.bad_frames += [(p, x) for p in reply.problems]
        if x.parity_errors:
            self.parity_bad.append(x)
        if reply.telegram is not None:
            self.telegrams.append(reply.telegram)
        return reply

    def reply_address(self, to):
        """The A field a reply must carry: the address asked, or for 253/254 the meter's
        primary address."""
        if to is None or to >= 253:
            return self.address
        return to

    def nke(self, a=None, want=True, retry=True):
        a = self.address if a is None else a
        frame, label = FR.snd_nke(a), "SND_NKE to %d" % a
        if not want:
            return self.ask(frame, label, False, a)
        return self._retried(frame, label, retry, a, lambda r: r.kind == "ack")

    def req(self, fcb, a=None):
        a = self.address if a is None else a
        return self._retried(FR.req_ud2(a, fcb), "REQ_UD2 to %d, FCB %d" % (a, fcb), True,
                             a, lambda r: r.telegram is not None)

    def _retried(self, frame, label, retry, to, good):
        """ask(), and again up to RETRIES times while the reply is not good: the ledgers
        keep every try, the rules see the answer a master ends up with."""
        r = self.ask(frame, label, True, to)
        for n in range(RETRIES if retry else 0):
            if good(r):
                break
            r = self.ask(frame, "%s (retry %d)" % (label, n + 1), True, to)
        return r

    def silent(self, frame, label):
        """Send a request that must stay unanswered; the Reply (silent or not)."""
        return self.ask(frame, label, want=False)

    # -- readouts --------------------------------------------------------------------
    def walk(self, count, a=None):
        """SND_NKE, then `count` REQ_UD2 with toggled FCB (1, 0, 1, ...): the Replies."""
        self.nke(a)
        return [self.req(1 - i % 2, a) for i in range(count)]

    def read_readout(self, a=None):
        """SND_NKE, then REQ_UD2 with toggled FCB until a telegram without 1F."""
        self.nke(a)
        telegrams = []
        fcb = 1
        while len(telegrams) < MAX_TELEGRAMS:
            r = self.req(fcb, a)
            t = r.telegram
            if t is None or t.ci == FR.CI_ERROR:
                why = r.what() if t is None else "CI 70 application error %02X" % (
                    t.app_error or 0)
                return Readout(telegrams, False, "telegram %d: %s" % (len(telegrams) + 1,
                                                                       why))
            telegrams.append(t)
            if not r.telegram.more:
                return Readout(telegrams, False, None)
            fcb ^= 1
        return Readout(telegrams, True, None)

    def readout(self):
        """The meter's readout, read once (the reference the FCB and application rules
        compare with)."""
        if self._readout is None:
            self._readout = self.read_readout()
        return self._readout

    def meter_secondary(self):
        """The meter's secondary address: from its header (CI 72: all of it; CI 73: ID and
        medium), else --secondary."""
        for t in self.readout().telegrams:
            ident = t.identity()
            if ident is not None:
                i, man, ver, med = ident
                return FR.Secondary(i, 0xFFFF if man is None else man,
                                    0xFF if ver is None else ver, med)
        return self.secondary

    def fabrication(self):
        """The fabrication number of a record with VIF 78 in the readout, or None."""
        for t in self.readout().telegrams:
            if t.fabrication() is not None:
                return t.fabrication()
        return None

    def start(self):
        """Make sure a meter answers at all (SND_NKE and REQ_UD2, with retries), then read
        its readout. NoMeter when nothing valid comes back."""
        seen = []
        for r in (self.nke(), self.req(1)):
            if r.kind == "ack" or r.telegram is not None:
                self.readout()
                return
            if r.x.data:
                seen.append(r.x)
        raise NoMeter(self._no_meter_text(seen))

    def find_by_secondary(self):
        """--secondary without --addr: select the meter and learn its primary address from
        its RSP_UD at 253 (the rest of the run talks to that address)."""
        sec = self.secondary
        self.nke(253, want=False)
        r = self.ask(FR.select(sec), "select %s" % sec.text(), True, 253)
        if r.kind != "ack":
            raise NoMeter("no E5 to the selection of secondary address %s (%s)"
                          % (sec.text(), r.what()))
        t = self.req(1, 253).telegram
        self.nke(253, want=False)   # deselect again
        if t is None:
            raise NoMeter("selected %s, but no RSP_UD at address 253" % sec.text())
        self.address = t.a

    def _no_meter_text(self, seen):
        where = "address %d at %d baud" % (self.address, self.line.baud)
        if not seen:
            return ("no reply from %s (SND_NKE and REQ_UD2, %d tries each): check the "
                    "wiring, --addr and --baud" % (where, RETRIES + 1))
        return ("%s answers with no valid M-Bus frame (%s): check --baud, 8E1 and the wiring"
                % (where, hexs(seen[0].data[:16])))
