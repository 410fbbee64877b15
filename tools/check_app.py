# mbus-check: the application-layer rules (EN 13757-3), judged on the meter's readout
# and on every RSP_UD of the run.
from mbus_core.codec import datatypes as dt
from mbus_core.codec import vif as vt
from mbus_tools import check_frames as FR
from mbus_tools.check_report import Result, PASS, FAIL, WARN, SKIP

CI_NAMES = {0x72: "72 (12-byte header)", 0x7A: "7A (4-byte header)",
            0x78: "78 (no header)", 0x73: "73 (fixed data)"}
STATUS_BITS = ((0x04, "power low"), (0x08, "permanent error"), (0x10, "temporary error"))
APP_STATES = ("no error", "application busy", "any application error", "abnormal condition")
RESERVED_SPECIAL = (0x3F, 0x4F, 0x5F, 0x6F, 0x7F)


def _data(s):
    """The telegrams of the readout that carry data (not CI 70)."""
    return [t for t in s.readout().telegrams if t.ci != FR.CI_ERROR]


def _no_data(rule, s):
    return Result(rule, SKIP, "no data telegram in the readout (%s)"
                  % (s.readout().broken or "CI 70 only"))


def check_ci(s):
    ts = _data(s)
    if not ts:
        return _no_data("app.ci", s)
    bad = [t for t in ts if t.ci not in FR.DATA_CIS]
    if bad:
        return Result("app.ci", FAIL, "CI %02X is no data telegram of a meter (72, 7A, 78 "
                      "or 73)" % bad[0].ci, exchanges=[t.x for t in bad])
    cis = sorted(set(t.ci for t in ts))
    return Result("app.ci", PASS, "CI " + ", ".join(CI_NAMES[c] for c in cis))


def check_error(s):
    errors = [t for t in s.telegrams if t.ci == FR.CI_ERROR]
    if not errors:
        return Result("app.error", PASS, "no CI 70 application error in %d RSP_UD"
                      % len(s.telegrams))
    code = errors[0].app_error
    return Result("app.error", FAIL, "%d of %d RSP_UD were CI 70 application errors: %02X %s"
                  % (len(errors), len(s.telegrams), code or 0, vt.error_name(code or 0)),
                  exchanges=[t.x for t in errors])


def _header_problems(t):
    h = t.header or {}
    problems = []
    if "id" in h and not dt.bcd_valid(t.user[1:5]):
        problems.append("ID %s is not 8 BCD digits" % h["id"])
    man = h.get("manufacturer_code")
    if man is not None and (man & 0x8000 or not all(
            1 <= (man >> k) & 0x1F <= 26 for k in (0, 5, 10))):
        problems.append("manufacturer code %04X is not three letters A..Z" % man)
    return problems


def check_header(s):
    ts = _data(s)
    if not ts:
        return _no_data("app.header", s)
    t = ts[0]
    problems = _header_problems(t)
    if problems:
        return Result("app.header", FAIL, "; ".join(problems), exchanges=[t.x])
    h = t.header or {}
    if t.ci == 0x72:
        text = "ID %s, %s, version %d, medium %02X (%s)" % (
            h["id"], h["manufacturer"], h["version"], h["medium"], h["medium_name"])
    elif t.ci == 0x73:
        text = "ID %s, medium %s (fixed data)" % (h["id"], h["medium_name"])
    elif t.ci == 0x7A:
        text = "short header: access number, status, signature (no ID in the telegram)"
    else:
        text = "no header (CI 78): the telegram carries no ID"
    return Result("app.header", PASS, text)


def check_identity(s):
    ts = [t for t in s.readout().telegrams if t.identity() is not None]
    if not ts:
        return Result("app.identity", SKIP, "the telegrams carry no ID (CI 7A/78)")
    first = ts[0].identity()
    odd = [t for t in ts if t.identity() != first]
    if odd:
        return Result("app.identity", FAIL, "the identity changes inside the readout: %s, "
                      "then %s" % (first, odd[0].identity()), exchanges=[odd[0].x])
    given = s.secondary
    if given is not None and "F" not in given.ident and given.ident != first[0]:
        return Result("app.identity", FAIL, "the header says ID %s, --secondary %s"
                      % (first[0], given.ident), exchanges=[ts[0].x])
    return Result("app.identity", PASS, "ID %s in all %d telegram(s) with a header"
                  % (first[0], len(ts)))


def check_access(s):
    ts = [r.telegram for r in s.walk(3)]
    if any(t is None or t.ci == FR.CI_ERROR for t in ts):
        return Result("app.access", SKIP, "no three data telegrams in a row to compare")
    if ts[0].access is None:
        return Result("app.access", SKIP, "CI 78 telegrams carry no access number")
    nums = [t.access for t in ts]
    steps = [(b - a) & 0xFF for a, b in zip(nums, nums[1:])]
    restarts = _restarts(s.telegrams)
    note = ["the access number restarted during the run (%s): the meter started afresh, "
            "a power loss or a reset?" % ", ".join("%d -> %d" % r for r in restarts)]
    if all(1 <= d <= 8 for d in steps):
        how = "+1 per telegram" if steps == [1, 1] else "rising by %s" % steps
        text = "access numbers %s: %s" % (nums, how)
        if restarts:
            return Result("app.access", WARN, "%s, but %s" % (text, note[0]))
        return Result("app.access", PASS, text)
    return Result("app.access", FAIL, "access numbers %s over three new telegrams: %s"
                  % (nums, "unchanged" if 0 in steps else "going back"),
                  note if restarts else [], exchanges=[t.x for t in ts])


def _restarts(telegrams):
    """(before, after) where the access number of one RSP_UD to the next fell back to 0 or
    1 (not a wrap from 255): the meter restarted in between."""
    nums = [t.access for t in telegrams if t.ci != FR.CI_ERROR and t.access is not None]
    return [(a, b) for a, b in zip(nums, nums[1:]) if b <= 1 and (b - a) & 0xFF > 8]


def check_status(s):
    ts = [t for t in _data(s) if t.status is not None]
    if not ts:
        return Result("app.status", SKIP, "no status byte (CI 78)")
    st = ts[0].status
    bits = [APP_STATES[st & 3]] + [name for mask, name in STATUS_BITS if st & mask]
    info = ["manufacturer-specific bits 5..7: %d%d%d" % ((st >> 7) & 1, (st >> 6) & 1,
                                                         (st >> 5) & 1)]
    if ts[0].ci == 0x73:
        info = ["fixed data: bit 7 %s, bit 6 %s" % ("binary" if st & 0x80 else "BCD",
                                                    "stored" if st & 0x40 else "actual")]
    text = "status %02X: %s" % (st, ", ".join(bits))
    return Result("app.status", WARN if st & 0x1F else PASS, text, info)


def check_records(s):
    ts = _data(s)
    if not ts:
        return _no_data("app.records", s)
    broken = [(i, t) for i, t in enumerate(ts, 1) if t.error]
    if broken:
        i, t = broken[0]
        return Result("app.records", FAIL, "telegram %d: %s" % (i, t.error),
                      exchanges=[b[1].x for b in broken])
    count = sum(len(t.records) for t in ts)
    unknown = ["telegram %d: %s" % (i, r.quantity) for i, t in enumerate(ts, 1)
               for r in t.records if not r.known and not r.special]
    if unknown:
        return Result("app.records", WARN, "%d records decode, %d with a VIF no decoder "
                      "knows" % (count, len(unknown)), unknown[:5])
    return Result("app.records", PASS, "%d records in %d telegram(s) decode: DIF/VIF chains, "
                  "data sizes, nothing left over" % (count, len(ts)))


def check_lvar(s):
    recs = [r for t in _data(s) for r in t.records
            if r.lvar is not None or r.text_unit is not None]
    if not recs:
        return Result("app.lvar", SKIP, "no variable-length record (LVAR or plain-text VIF)")
    odd = [r for r in recs if isinstance(r.raw, str) and r.lvar is not None
           and r.lvar < 0xC0 and not all(" " <= ch <= "~" for ch in r.raw)]
    if odd:
        return Result("app.lvar", WARN, "text with characters outside printable ASCII: %r"
                      % odd[0].raw)
    kinds = sorted(set(dt.lvar_length(r.lvar)[0] if r.lvar is not None else "VIF text"
                       for r in recs))
    return Result("app.lvar", PASS, "%d variable-length record(s) well formed (%s)"
                  % (len(recs), ", ".join(kinds)))


def check_special(s):
    ts = _data(s)
    if not ts:
        return _no_data("app.special", s)
    info = []
    for i, t in enumerate(ts, 1):
        for r in t.records:
            if r.dif in RESERVED_SPECIAL:
                return Result("app.special", FAIL, "telegram %d: DIF %02X is reserved (or "
                              "the master's global readout), not a meter's record"
                              % (i, r.dif), exchanges=[t.x])
            if r.special in ("more", "manufacturer"):
                info.append("telegram %d: DIF %02X, then %d byte(s) of manufacturer data"
                            % (i, r.dif, len(r.data)))
    return Result("app.special", PASS, "special functions where they belong (%d)"
                  % len(info), info)


def check_fixed(s):
    ts = [t for t in s.readout().telegrams if t.ci == 0x73]
    if not ts:
        return Result("app.fixed", SKIP, "the meter sends variable data, not CI 73")
    t = ts[0]
    if t.error:
        return Result("app.fixed", FAIL, t.error, exchanges=[t.x])
    f = t.decoded["fixed"]
    return Result("app.fixed", PASS, "counter 1 %s (unit %d), counter 2 %s (unit %d)"
                  % (f["counter1"], f["unit1"], f["counter2"], f["unit2"]))


CHECKS = (("app.ci", check_ci), ("app.error", check_error), ("app.header", check_header),
          ("app.identity", check_identity), ("app.access", check_access),
          ("app.status", check_status), ("app.records", check_records),
          ("app.lvar", check_lvar), ("app.special", check_special),
          ("app.fixed", check_fixed))
