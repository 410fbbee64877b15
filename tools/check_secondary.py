# mbus-check: secondary addressing (EN 13757-3: selection by CI 52 to address 253,
# wildcards, deselection, CI 56, enhanced selection by fabrication number). Every check
# leaves the meter deselected (SND_NKE to 253 where it may still be selected), so the next
# starts from there without a silent SND_NKE that costs a whole timeout.
from mbus_tools import check_frames as FR
from mbus_tools.check_report import Result, PASS, FAIL, SKIP

NO_ID = ("the telegrams carry no ID (CI 7A/78): give --secondary ID to check secondary "
         "addressing")


def _other_digit(text, at):
    """text with the digit at `at` changed: an address that is not the meter's."""
    d = text[at]
    new = "0" if d in "9F" else str(int(d) + 1)
    return text[:at] + new + text[at + 1:]


def _differs(here, home):
    """The fields in which the identity in a header (here) is not the meter's secondary
    address (home); fields either side lacks or leaves open do not count."""
    if here is None:
        return []
    theirs = (home.ident, home.manufacturer, home.version, home.medium)
    names = ("ID", "manufacturer", "version", "medium")
    return ["%s %s, not %s" % (n, h, w) for n, h, w in zip(names, here, theirs)
            if h is not None and w not in (0xFFFF, 0xFF) and "F" not in str(w) and h != w]


def _select(s, sec, ci=FR.CI_SELECT, msb_first=False, want=True):
    label = "select %s (CI %02X)" % (sec.text(), ci)
    return s.ask(FR.select(sec, ci, msb_first), label, want, 253)


def _selected_reads(s, rule, sec, ci=FR.CI_SELECT, msb_first=False):
    """Select, read at 253, deselect: a Result (PASS when the meter answered E5 and then an
    RSP_UD with the identity it has at its primary address)."""
    r = _select(s, sec, ci, msb_first)
    if r.kind != "ack":
        s.nke(253, want=False)
        return Result(rule, FAIL, "selection %s got %s, not E5" % (sec.text(), r.what()),
                      exchanges=[r.x])
    t = s.req(1, 253)
    s.nke(253, want=False)
    if t.telegram is None:
        return Result(rule, FAIL, "selected by %s, but %s to REQ_UD2 at 253"
                      % (sec.text(), t.what()), exchanges=[t.x])
    odd = _differs(t.telegram.identity(), s.meter_secondary())
    if odd:
        return Result(rule, FAIL, "the header at 253 differs from the one at address %d: %s"
                      % (s.address, ", ".join(odd)), exchanges=[t.x])
    return Result(rule, PASS, "%s: E5, then an RSP_UD at 253 with the identity of address %d"
                  % (sec.text(), s.address))


def _variant_reads(s, rule, variant, ci=FR.CI_SELECT, msb_first=False):
    """_selected_reads with variant(the meter's secondary address); SKIP without one."""
    sec = s.meter_secondary()
    if sec is None:
        return Result(rule, SKIP, NO_ID)
    return _selected_reads(s, rule, variant(sec), ci, msb_first)


def check_select(s):
    return _variant_reads(s, "sec.select", lambda sec: sec)


def check_nibble(s):
    return _variant_reads(s, "sec.nibble",
                          lambda sec: sec.like(ident="F" + sec.ident[1:7] + "F"))


def check_ff(s):
    return _variant_reads(s, "sec.ff", lambda sec: sec.like(manufacturer=0xFFFF,
                                                            version=0xFF, medium=0xFF))


def _selected_first(s, rule):
    """Select the meter by its full address; (secondary, None) or (None, a SKIP Result)."""
    sec = s.meter_secondary()
    if sec is None:
        return None, Result(rule, SKIP, NO_ID)
    if _select(s, sec).kind != "ack":
        s.nke(253, want=False)
        return None, Result(rule, SKIP, "no E5 to the full selection (see sec.select)")
    return sec, None


def _still_silent(s, rule, tries, passed):
    """Send the (frame, label) tries that must stay unanswered; deselect; the Result."""
    answered = [r for r in (s.silent(f, label) for f, label in tries) if not r.silent]
    if answered:
        s.nke(253, want=False)   # it may still be selected
        return Result(rule, FAIL, "answers where it must stay silent: %s"
                      % ", ".join(r.x.label for r in answered),
                      exchanges=[r.x for r in answered])
    return Result(rule, PASS, passed)


def check_no_match(s):
    sec, skip = _selected_first(s, "sec.no-match")
    if skip:
        return skip
    other = sec.like(ident=_other_digit(sec.ident, 7))
    tries = [(FR.select(other), "select %s (another meter)" % other.text()),
             (FR.req_ud2(253, 1), "REQ_UD2 to 253 after selecting another meter")]
    return _still_silent(s, "sec.no-match", tries, "silent to the selection of %s, and "
                         "deselected by it" % other.ident)


def check_deselect(s):
    sec, skip = _selected_first(s, "sec.deselect")
    if skip:
        return skip
    ack = s.nke(253)
    if ack.kind != "ack":
        return Result("sec.deselect", FAIL, "SND_NKE to 253 of the selected meter got %s, "
                      "not E5" % ack.what(), exchanges=[ack.x])
    return _still_silent(s, "sec.deselect", [(FR.req_ud2(253, 1), "REQ_UD2 to 253 after "
                                              "SND_NKE to 253")],
                         "E5 to SND_NKE at 253, then silent at 253")


def check_ci56(s):
    if s.ci56 == "select":
        return _variant_reads(s, "sec.ci56", lambda sec: sec, FR.CI_SELECT_MSB, True)
    sec, skip = _selected_first(s, "sec.ci56")
    if skip:
        return skip
    r = s.ask(FR.snd_ud(253, FR.CI_SELECT_MSB, sec.data(True)), "CI 56 to 253", False)
    tries = [(FR.req_ud2(253, 1), "REQ_UD2 to 253 after CI 56")]
    res = _still_silent(s, "sec.ci56", tries, "CI 56 deselects (--ci56 deselect)")
    res.info.append("the CI 56 itself got %s" % r.what())
    return res


def check_enhanced(s):
    sec = s.meter_secondary()
    fab = s.fabrication()
    if sec is None or fab is None:
        return Result("sec.enhanced", SKIP, "no fabrication number record (VIF 78)"
                      if sec else NO_ID)
    res = _selected_reads(s, "sec.enhanced", sec.like(fab=fab))
    if res.status != PASS:
        return res
    wrong = sec.like(fab=_other_digit(fab, 7))
    tries = [(FR.select(wrong), "select %s (wrong fabrication number)" % wrong.text())]
    return _still_silent(s, "sec.enhanced", tries, "selected by fabrication number %s; "
                         "silent to a wrong one" % fab)


CHECKS = (("sec.select", check_select), ("sec.nibble", check_nibble), ("sec.ff", check_ff),
          ("sec.no-match", check_no_match), ("sec.deselect", check_deselect),
          ("sec.ci56", check_ci56), ("sec.enhanced", check_enhanced))
