# mbus-check: the rules, one result per rule, and the report (text for people, JSON for
# machines). Clauses: the section topic of EN 13757-2/-3 each rule comes from (clause
# numbers differ between the editions, so the topic is what a reader can find in any).
import json

from mbus_tools.check_io import hexs

PASS = "PASS"
FAIL = "FAIL"
WARN = "WARN"
SKIP = "SKIP"
STATUSES = (PASS, FAIL, WARN, SKIP)
MAX_SHOWN = 3   # exchanges printed per failing rule (the JSON has them all)

# (rule id, what it checks, where the rule comes from)
RULES = (
    ("link.ack", "E5 to SND_NKE", "EN 13757-2, SND_NKE and the single character E5"),
    ("link.reply", "every request that wants an answer gets one",
     "EN 13757-2, link layer services (SND_NKE, REQ_UD2, SND_UD)"),
    ("link.frame", "replies well formed: start bytes, L fields, C and A fields, checksum, "
     "stop byte, nothing behind", "EN 13757-2, frame formats (FT 1.2 of EN 60870-5-1)"),
    ("link.echo", "the request does not come back before the reply (or does, with --echo)",
     "EN 13757-2, physical layer: the master sends by voltage, the slave by current, so a "
     "master does not hear its own request"),
    ("link.timing", "reply starts 11 bit times .. 330 bit times + 50 ms after the request",
     "EN 13757-2, reply timing"),
    ("link.bad-checksum", "no reply to a request with a wrong checksum",
     "EN 13757-2, frame check (checksum)"),
    ("link.parity", "8E1: no reply to a request with a parity error; replies with even "
     "parity", "EN 13757-2, character format (1 start, 8 data, even parity, 1 stop)"),
    ("link.silent", "no reply to addresses 251, 252 and 255",
     "EN 13757-2, reserved addresses 251/252, 255 (no reply)"),
    ("link.broadcast", "replies to address 254", "EN 13757-2, address 254 (all answer)"),
    ("link.gaps", "no gaps between the characters of a reply",
     "EN 13757-2 / EN 60870-5-1 FT 1.2, no line idle inside a frame"),
    ("link.collision", "collision behaviour", "EN 13757-2, collisions (several slaves)"),
    ("fcb.repeat", "a repeated REQ_UD2 (same FCB) gets the same telegram",
     "EN 13757-2, FCB/FCV"),
    ("fcb.advance", "a toggled FCB gets the next telegram of a multi-telegram readout",
     "EN 13757-2, FCB/FCV; EN 13757-3, multi-telegram readout"),
    ("fcb.reset", "SND_NKE restarts the readout at its first telegram",
     "EN 13757-2, SND_NKE (link reset)"),
    ("fcb.readout-end", "the readout ends (last telegram without 1F) and starts again",
     "EN 13757-3, DIF 1F (more records follow)"),
    ("app.ci", "CI field of the RSP_UD: 72, 7A, 78 or 73",
     "EN 13757-3, CI field (slave to master)"),
    ("app.error", "REQ_UD2 answered with data, not a CI 70 application error",
     "EN 13757-3, application errors (CI 70)"),
    ("app.header", "header well formed: BCD ID, manufacturer letters, medium",
     "EN 13757-3, data header (fixed and variable data structure)"),
    ("app.identity", "the same identity in every telegram and at the secondary address",
     "EN 13757-3, identification (secondary address)"),
    ("app.access", "access number rises with every new telegram",
     "EN 13757-3, access number"),
    ("app.status", "status byte without error bits", "EN 13757-3, status byte"),
    ("app.records", "every record decodes: DIF/DIFE/VIF/VIFE chains, data field sizes, "
     "nothing left over", "EN 13757-3, variable data records (DIB/VIB)"),
    ("app.lvar", "variable-length data fields (LVAR) well formed",
     "EN 13757-3, data field D (variable length)"),
    ("app.special", "special functions 0F/1F/2F only, at the end of the records",
     "EN 13757-3, special functions (DIF 0F, 1F, 2F)"),
    ("app.fixed", "fixed data structure (CI 73)", "EN 13757-3, fixed data structure"),
    ("sec.select", "selection by the full secondary address, then replies at 253",
     "EN 13757-3, secondary addressing (CI 52 to address 253)"),
    ("sec.nibble", "selection with nibble wildcards (F) in the ID",
     "EN 13757-3, secondary addressing, wildcards"),
    ("sec.ff", "selection with FF wildcards for manufacturer, version, medium",
     "EN 13757-3, secondary addressing, wildcards"),
    ("sec.no-match", "silent to a selection of another meter, which deselects it",
     "EN 13757-3, secondary addressing (deselection)"),
    ("sec.deselect", "SND_NKE to 253 deselects", "EN 13757-2/-3, SND_NKE to address 253"),
    ("sec.ci56", "CI 56 (deselect, or MSB-first selection with --ci56 select)",
     "EN 13757-3, CI field 56"),
    ("sec.enhanced", "enhanced selection by fabrication number (0C 78)",
     "EN 13757-3, enhanced selection (fabrication number, VIF 78)"),
    ("write.address", "set the primary address and back (CI 51, 01 7A)",
     "EN 13757-3, set primary address (VIF 7A)"),
    ("write.baud", "baud rate switch and back (CI B8..BF)",
     "EN 13757-2/-3, baud rate switch (CI B8..BF)"),
    ("write.reset", "application reset (CI 50)", "EN 13757-3, application reset (CI 50)"),
)
RULE_IDS = tuple(r[0] for r in RULES)
_TITLE = dict((r[0], r[1]) for r in RULES)
_CLAUSE = dict((r[0], r[2]) for r in RULES)


def selected(rule, only):
    """Is `rule` among `only` (ids or their group prefixes, as in "link" or "fcb.repeat")?
    An empty `only` selects every rule."""
    if not only:
        return True
    return any(rule == o or rule.startswith(o.rstrip(".") + ".") for o in only)


class Result:
    """What one rule found: status, a one-line message, info lines, and the exchanges
    (check_io.Exchange) that show a failure."""

    def __init__(self, rule, status, message, info=(), exchanges=()):
        if rule not in _TITLE:
            raise ValueError("unknown rule %r" % rule)
        self.rule = rule
        self.status = status
        self.message = message
        self.info = list(info)
        self.exchanges = list(exchanges)

    def as_dict(self):
        return {"rule": self.rule, "status": self.status, "title": _TITLE[self.rule],
                "clause": _CLAUSE[self.rule], "message": self.message, "info": self.info,
                "exchanges": [x.as_dict() for x in self.exchanges]}


class Report:
    def __init__(self, meta=None):
        self.meta = dict(meta or {})
        self.results = {}

    def add(self, result):
        self.results[result.rule] = result
        return result

    def ordered(self):
        return [self.results[r] for r in RULE_IDS if r in self.results]

    def counts(self):
        out = dict((s, 0) for s in STATUSES)
        for r in self.results.values():
            out[r.status] += 1
        return out

    def exit_status(self):
        return 1 if self.counts()[FAIL] else 0

    def summary(self):
        c = self.counts()
        return "%d PASS, %d FAIL, %d WARN, %d SKIP" % (c[PASS], c[FAIL], c[WARN], c[SKIP])

    def text(self, heading=()):
        lines = list(heading)
        for r in self.ordered():
            lines.append("%-4s  %-17s  %s" % (r.status, r.rule, r.message))
            lines += ["      %s" % i for i in r.info]
            if r.status in (FAIL, WARN):
                lines += _exchange_lines(r.exchanges)
        lines.append("Summary: " + self.summary())
        return "\n".join(lines) + "\n"

    def json_text(self):
        doc = dict(self.meta)
        doc["results"] = [r.as_dict() for r in self.ordered()]
        doc["summary"] = self.counts()
        doc["exit_status"] = self.exit_status()
        return json.dumps(doc, indent=2) + "\n"


def _exchange_lines(exchanges):
    out = []
    for x in exchanges[:MAX_SHOWN]:
        out.append("      sent      %s   (%s)" % (hexs(x.sent), x.label))
        out.append("      received  %s" % x.received_text())
    if len(exchanges) > MAX_SHOWN:
        out.append("      ... and %d more (see --json)" % (len(exchanges) - MAX_SHOWN))
    return out


def rules_text():
    """The rule table (mbus-check --list-rules)."""
    return "".join("%-17s %s\n%-17s   (%s)\n" % (rid, title, "", clause)
                   for rid, title, clause in RULES)
