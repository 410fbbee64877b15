# mbus-check: the rules that change the meter (only with --allow-writes): set the primary
# address and back, switch the baud rate and back, application reset. Whatever is changed
# is restored before the rule reports, and a failed restore says where the meter was left.
import time

from mbus_tools import check_frames as FR
from mbus_tools.check_report import Result, PASS, FAIL, SKIP

NEEDS = "changes the meter: needs --allow-writes (it then restores what it changed)"
FALLBACK_WAIT_S = 70   # a meter that missed the switch back falls back (ours after 60 s)
NO_SPEED = {"pty": "a pty carries no speed: the acknowledgements and the answers "
                   "afterwards show, not the switch itself",
            "net": "over TCP the bus speed is the gateway's: the acknowledgements and the "
                   "answers afterwards show, not the switch itself"}


def _acked(r):
    return r.kind == "ack"


def _free_address(s):
    """A primary address nobody answers at, near the meter's own."""
    for step in range(1, 6):
        cand = (s.address - 1 + step) % 250 + 1
        if s.silent(FR.snd_nke(cand), "SND_NKE to %d (is it free?)" % cand).silent:
            return cand
    return None


def _move(s, frm, to):
    """Set the primary address at `frm` to `to`; True when E5 came and the meter answers
    SND_NKE at `to`."""
    r = s.ask(FR.set_address(frm, to), "set primary address %d -> %d" % (frm, to), True, frm)
    return _acked(r) and _acked(s.nke(to, want=False)), r


def _not_moved(s, old, new, r):
    """The meter did not answer at the new address: where is it?"""
    if _acked(s.nke(old, want=False)):
        return Result("write.address", FAIL, "set primary address %d -> %d got %s, but the "
                      "meter still answers at %d, not at %d" % (old, new, r.what(), old, new),
                      exchanges=[r.x])
    if _move(s, new, old)[0]:
        return Result("write.address", FAIL, "after set primary address %d -> %d the meter "
                      "answered at neither (moved back from %d)" % (old, new, new),
                      exchanges=[r.x])
    return Result("write.address", FAIL, "after set primary address %d -> %d the meter "
                  "answers at neither: it may be LEFT AT ADDRESS %d" % (old, new, new),
                  exchanges=[r.x])


def check_address(s):
    if not s.allow_writes:
        return Result("write.address", SKIP, NEEDS)
    old = s.address
    new = _free_address(s)
    if new is None:
        return Result("write.address", SKIP, "no free primary address near %d" % old)
    moved, r = _move(s, old, new)
    if not moved:
        return _not_moved(s, old, new, r)
    try:
        at_new = s.req(1, new)
        old_quiet = s.silent(FR.snd_nke(old), "SND_NKE to the old address %d" % old)
    finally:   # back, even when interrupted
        restored, r2 = _move(s, new, old)
    if not restored:
        return Result("write.address", FAIL, "the meter was moved to %d and did not go back "
                      "to %d (%s): it is LEFT AT ADDRESS %d" % (new, old, r2.what(), new),
                      exchanges=[r2.x])
    if at_new.telegram is None or not old_quiet.silent:
        bad = [x for x, ok in ((at_new.x, at_new.telegram is not None),
                               (old_quiet.x, old_quiet.silent)) if not ok]
        return Result("write.address", FAIL, "after moving to %d: %s at %d, %s at %d"
                      % (new, at_new.what(), new, old_quiet.what(), old), exchanges=bad)
    return Result("write.address", PASS, "moved %d -> %d (E5, RSP_UD at %d, silent at %d) "
                  "and back" % (old, new, new, old))


def _other_rate(s):
    if s.try_baud and s.try_baud != s.line.baud:
        return s.try_baud
    return 9600 if s.line.baud != 9600 else 2400


def _answers_at(s, rate):
    s.line.set_baud(rate)
    return any(_acked(s.nke(want=False)) for _ in range(2))


def _switch(s, rate):
    """Ask for `rate` at the current rate: the reply (E5 expected at the current rate)."""
    return s.ask(FR.baud_switch(s.address, rate), "baud switch %d -> %d" % (s.line.baud,
                                                                           rate), True)


def _recover(s, old, new):
    """The meter did not answer as it should: find it at either rate, waiting for its
    fallback; True once it answers at `old`."""
    deadline = time.monotonic() + FALLBACK_WAIT_S
    while time.monotonic() < deadline:
        if _answers_at(s, old):
            return True
        if _answers_at(s, new) and _acked(_switch(s, old)) and _answers_at(s, old):
            return True
    s.line.set_baud(old)
    return False


class BaudTrial:
    """Switch to `new`, check the meter answers there, switch back, check again; restore
    whatever happens (recover waits for the meter's fallback if need be)."""

    def __init__(self, s, new):
        self.s = s
        self.old, self.new = s.line.baud, new
        self.ack = self.back = None
        self.ok_new = self.ok_back = False

    def run(self):
        """True when the meter answers at the old rate afterwards."""
        s, old, new = self.s, self.old, self.new
        try:
            self.ack = _switch(s, new)
            self.ok_new = _acked(self.ack) and _answers_at(s, new)
            self.back = _switch(s, old) if self.ok_new else None
            self.ok_back = self.ok_new and _acked(self.back) and _answers_at(s, old)
        finally:   # never leave the meter (or the port) at the other rate
            found = self.ok_back or _recover(s, old, new)
        return found

    def verdict(self):
        """(status, message, exchanges) once the meter is back at the old rate."""
        old, new, ack = self.old, self.new, self.ack
        if not _acked(ack):
            return FAIL, "switch %d -> %d got %s, not E5 at %d baud" % (
                old, new, ack.what(), old), [ack.x]
        if not self.ok_new:
            return FAIL, "E5 to the switch %d -> %d, then no answer at %d baud (found " \
                "again at %d)" % (old, new, new, old), [ack.x]
        if not self.ok_back:
            return FAIL, "switch back %d -> %d: %s" % (new, old, self.back.what()), [
                self.back.x]
        return PASS, "E5 at %d, answers at %d; switched back, answers at %d" % (
            old, new, old), []


def check_baud(s):
    if not s.allow_writes:
        return Result("write.baud", SKIP, NEEDS)
    trial = BaudTrial(s, _other_rate(s))
    if not trial.run():
        return Result("write.baud", FAIL, "the meter answers neither at %d nor at %d baud "
                      "after the switch: it may be LEFT AT %d BAUD"
                      % (trial.old, trial.new, trial.new), exchanges=[trial.ack.x])
    status, message, exchanges = trial.verdict()
    info = [NO_SPEED[s.line.kind]] if s.line.kind in NO_SPEED else []
    return Result("write.baud", status, message, info, exchanges)


def check_reset(s):
    if not s.allow_writes:
        return Result("write.reset", SKIP, NEEDS)
    r = s.ask(FR.snd_ud(s.address, FR.CI_RESET), "application reset (CI 50)", True,
              s.address)
    if not _acked(r):
        return Result("write.reset", FAIL, "application reset got %s, not E5" % r.what(),
                      exchanges=[r.x])
    t = s.walk(1)[0]
    if t.telegram is None:
        return Result("write.reset", FAIL, "after the application reset: %s to REQ_UD2"
                      % t.what(), exchanges=[t.x])
    return Result("write.reset", PASS, "E5 to CI 50, then an RSP_UD")


CHECKS = (("write.address", check_address), ("write.baud", check_baud),
          ("write.reset", check_reset))
