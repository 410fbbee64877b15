# mbus-check: FCB and the multi-telegram readout (EN 13757-2 FCB/FCV, EN 13757-3 DIF 1F).
# A telegram's place in the readout is found by its record heads (check_frames.position):
# values may change between two readings, the records they belong to may not.
from mbus_tools import check_frames as FR
from mbus_tools.check_report import Result, PASS, FAIL, SKIP


def _place(t, ref):
    """1-based place of telegram t in the reference readout, or None."""
    i = FR.position(t, ref)
    return None if i is None else i + 1


def _telegrams(replies):
    """The Telegrams of the replies, or the first reply that is none (for a FAIL)."""
    for r in replies:
        if r.telegram is None:
            return None, r
    return [r.telegram for r in replies], None


def _no_rsp(rule, r):
    return Result(rule, FAIL, "%s: %s instead of an RSP_UD" % (r.x.label, r.what()),
                  exchanges=[r.x])


def _reference(s, rule, need=1):
    """The reference readout, or a Result that says why this rule cannot use it."""
    ro = s.readout()
    if ro.broken or ro.looped:
        return None, Result(rule, SKIP, "no complete readout to compare with (%s)"
                            % (ro.broken or "it never ends, see fcb.readout-end"))
    if len(ro.telegrams) < need:
        return None, Result(rule, SKIP, "the readout is a single telegram (no 1F): this "
                            "rule needs a multi-telegram readout")
    return ro.telegrams, None


def check_repeat(s):
    ref, skip = _reference(s, "fcb.repeat")
    if skip:
        return skip
    got, bad = _telegrams(s.walk(1) + [s.req(1)])
    if bad:
        return _no_rsp("fcb.repeat", bad)
    first, again = got
    p1, p2 = _place(first, ref), _place(again, ref)
    if p1 is None or p1 != p2:
        return Result("fcb.repeat", FAIL, "a repeated REQ_UD2 (same FCB 1) got telegram %s "
                      "of %d instead of telegram %s again: the meter ignores the FCB, a "
                      "master's retry skips a telegram" % (p2, len(ref), p1),
                      exchanges=[first.x, again.x])
    if again.raw == first.raw:
        how = "byte-identical (EN 13757-2 to the letter)"
    else:
        how = "same position, fresh values (access number %s -> %s), as many meters do" % (
            first.access, again.access)
    return Result("fcb.repeat", PASS, "the repeat got telegram %d of %d again: %s"
                  % (p2, len(ref), how))


def _walk_two(s, rule):
    """SND_NKE, then two REQ_UD2 with toggled FCB: (reference readout, the two telegrams,
    None), or (None, None, the Result that ends the rule)."""
    ref, skip = _reference(s, rule, 2)
    if skip:
        return None, None, skip
    got, bad = _telegrams(s.walk(2))
    if bad:
        return None, None, _no_rsp(rule, bad)
    return ref, got, None


def check_advance(s):
    ref, got, end = _walk_two(s, "fcb.advance")
    if end:
        return end
    places = [_place(t, ref) for t in got]
    if places == [1, 2]:
        return Result("fcb.advance", PASS, "FCB 1 then 0: telegrams 1 and 2 of %d"
                      % len(ref))
    return Result("fcb.advance", FAIL, "FCB 1 then 0 (toggled) got telegrams %s of %d, not "
                  "1 and 2: the readout does not advance" % (places, len(ref)),
                  exchanges=[t.x for t in got])


def check_reset(s):
    ref, _, end = _walk_two(s, "fcb.reset")
    if end:
        return end
    # FCB 0 again after the SND_NKE: a meter that kept its FCB state takes it for a repeat
    # of telegram 2 (libmbus sends exactly this: SND_NKE, then 5B)
    s.nke()
    r = s.req(0)
    if r.telegram is None:
        return _no_rsp("fcb.reset", r)
    p = _place(r.telegram, ref)
    if p == 1:
        return Result("fcb.reset", PASS, "after telegram 2, SND_NKE then REQ_UD2 (FCB 0) "
                      "got telegram 1 again")
    return Result("fcb.reset", FAIL, "after SND_NKE the readout went on with telegram %s of "
                  "%d instead of starting again at telegram 1" % (p, len(ref)),
                  exchanges=[r.x])


def check_end(s):
    ro = s.readout()
    ref = ro.telegrams
    if ro.looped:
        return Result("fcb.readout-end", FAIL, "%d telegrams, every one ends with 1F: the "
                      "readout never ends (a master loops)" % len(ref),
                      exchanges=[ref[-1].x])
    if ro.broken:
        return Result("fcb.readout-end", FAIL, "the readout broke off: %s" % ro.broken)
    got, bad = _telegrams(s.walk(len(ref) + 1))
    if bad:
        return _no_rsp("fcb.readout-end", bad)
    last, after = got[-2], got[-1]
    p = _place(after, ref)
    if last.more:
        return Result("fcb.readout-end", FAIL, "telegram %d ends with 1F this time, but "
                      "the first readout ended there" % len(ref), exchanges=[last.x])
    if p != 1:
        return Result("fcb.readout-end", FAIL, "after the last telegram (%d) the next "
                      "toggled REQ_UD2 got telegram %s, not 1" % (len(ref), p),
                      exchanges=[last.x, after.x])
    return Result("fcb.readout-end", PASS, "%d telegram(s), the last without 1F; the next "
                  "toggled REQ_UD2 starts again at telegram 1" % len(ref))


CHECKS = (("fcb.repeat", check_repeat), ("fcb.advance", check_advance),
          ("fcb.reset", check_reset), ("fcb.readout-end", check_end))
