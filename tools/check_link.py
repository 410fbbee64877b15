# mbus-check: the link-layer rules (EN 13757-2). FIRST run at the start; LAST at the end,
# where they judge every reply of the whole run (the session's ledgers).
import statistics

from mbus_tools import check_frames as FR
from mbus_tools.check_io import CHAR_BITS, frame_start, hexs, master_pause_ms
from mbus_tools.check_report import Result, PASS, FAIL, WARN, SKIP

MIN_BITS = 11          # EN 13757-2: the reply starts no earlier than 11 bit times ..
MAX_BITS = 330         # .. and no later than 330 bit times + 50 ms after the request
MAX_EXTRA_MS = 50
# A pause inside a reply breaks EN 13757-2 (FT 1.2: no line idle between the characters
# of a frame) at any length, but the host cannot see short ones: a USB serial adapter
# hands bytes over in bursts (its latency timer, up to ~16 ms), a meter simulated on a pty
# may be descheduled between two writes. Up to GAP_SLACK_MS + 1 character: PASS; beyond:
# WARN (a master with a tight character timeout cuts the frame); from the character
# timeout of a real master on (check_io.MASTER_PAUSE_MS, 200 ms at 2400 baud): FAIL.
GAP_SLACK_MS = 20
NO_PARITY = {"pty": "a pty carries no parity bit (Linux drops it): a parity error cannot "
                    "be sent or seen here; check on a real serial port",
             "net": "over TCP the gateway's UART does the parity: a parity error cannot be "
                    "sent or seen from here"}
NO_GAPS = {"pty": "no pause inside a reply (%.1f ms at most); a pty shows the pauses "
                  "between a meter's writes, not a UART's character timing: check on a "
                  "real serial port",
           "net": "a TCP gateway regroups the bytes: gaps only show on a real serial port"}


LEAD = "before the frame's start"   # check_frames.check_reply's words for noise


def window_ms(baud):
    return MIN_BITS * 1000.0 / baud, MAX_BITS * 1000.0 / baud + MAX_EXTRA_MS


def check_ack(s):
    replies = [s.nke(retry=False) for _ in range(3)]
    bad = [r for r in replies if r.kind != "ack"]
    if not bad:
        return Result("link.ack", PASS, "3 of 3 SND_NKE answered with E5")
    return Result("link.ack", FAIL, "%d of 3 SND_NKE not answered with E5: %s"
                  % (len(bad), bad[0].what()), exchanges=[r.x for r in bad])


def check_bad_checksum(s):
    a = s.address
    tries = [(FR.bad_checksum(FR.snd_nke(a)), "SND_NKE to %d, wrong checksum" % a),
             (FR.bad_checksum(FR.req_ud2(a, 1)), "REQ_UD2 to %d, wrong checksum" % a)]
    sec = s.meter_secondary()
    if sec is not None:
        tries.append((FR.bad_checksum(FR.select(sec)), "selection (CI 52), wrong checksum"))
    answered = [r for r in (s.silent(f, label) for f, label in tries) if not r.silent]
    if not answered:
        return Result("link.bad-checksum", PASS, "no reply to %d requests with a wrong "
                      "checksum" % len(tries))
    s.nke(253, want=False)   # a meter that took the selection: deselect it again
    return Result("link.bad-checksum", FAIL, "answers requests with a wrong checksum (%d of "
                  "%d answered)" % (len(answered), len(tries)),
                  exchanges=[r.x for r in answered])


def check_silent(s):
    tries = [(FR.req_ud2(251, 1), "REQ_UD2 to 251"), (FR.req_ud2(252, 1), "REQ_UD2 to 252"),
             (FR.snd_nke(255), "SND_NKE to 255"), (FR.req_ud2(255, 1), "REQ_UD2 to 255")]
    answered = [r for r in (s.silent(f, label) for f, label in tries) if not r.silent]
    if not answered:
        return Result("link.silent", PASS, "no reply to REQ_UD2 at 251, 252, 255 nor to "
                      "SND_NKE at 255")
    return Result("link.silent", FAIL, "answers at %s" % ", ".join(
        r.x.label for r in answered), exchanges=[r.x for r in answered])


def check_broadcast(s):
    ack = s.nke(254)
    rsp = s.req(1, 254)
    bad = [r for r, ok in ((ack, ack.kind == "ack"),
                           (rsp, rsp.telegram is not None)) if not ok]
    if not bad:
        return Result("link.broadcast", PASS, "E5 to SND_NKE and an RSP_UD (address %d) to "
                      "REQ_UD2 at 254" % rsp.telegram.a)
    return Result("link.broadcast", FAIL, "at 254: %s" % "; ".join(
        "%s: %s" % (r.x.label, r.what()) for r in bad), exchanges=[r.x for r in bad])


def check_collision(s):
    return Result("link.collision", SKIP, "collisions need two meters answering at once: "
                  "one meter under test cannot show how it behaves in one")


FIRST = (("link.ack", check_ack), ("link.bad-checksum", check_bad_checksum),
         ("link.silent", check_silent), ("link.broadcast", check_broadcast))


# -- judged over the whole run ---------------------------------------------------------
def _outside(replies, net):
    """(replies before the window opened, replies after it closed). Through a gateway
    (net) the start cannot be seen, and the request crosses the bus before it opens."""
    early, late = [], []
    for x in replies:
        lo, hi = window_ms(x.baud)
        if net:
            hi += len(x.sent) * 11000.0 / x.baud
        if x.first_ms + x.doubt_ms < lo and not net:
            early.append(x)
        elif x.first_ms > hi:
            late.append(x)
    return early, late


def check_timing(s):
    s.walk(3)   # samples of its own, for a run of this rule alone
    for _ in range(2):
        s.nke()
    if not s.replies:
        return Result("link.timing", FAIL, "no reply to time (see link.reply)")
    net = s.line.kind == "net"
    early, late = _outside(s.replies, net)
    lo, hi = window_ms(s.line.baud)
    info = [_spread(s.replies, baud) for baud in sorted(set(x.baud for x in s.replies))]
    if net:
        info.append("through TCP: the window's start cannot be seen (the gateway times the "
                    "bus); its end is checked, plus the request's time on the bus")
    if not early and not late:
        return Result("link.timing", PASS, "every reply inside the window %.1f..%.1f ms at "
                      "%d baud" % (lo, hi, s.line.baud), info)
    parts = []
    if early:
        parts.append("%d early: before the window opens (%d bit times = %.1f ms)"
                     % (len(early), MIN_BITS, lo))
    if late:
        parts.append("%d late: after the window closed (330 bit times + 50 ms = %.1f ms)"
                     % (len(late), hi))
    return Result("link.timing", FAIL, "%d of %d replies outside the window: %s"
                  % (len(early) + len(late), len(s.replies), "; ".join(parts)), info,
                  early + late)


def _spread(replies, baud):
    times = [x.first_ms for x in replies if x.baud == baud]
    return ("at %d baud: first byte after min %.1f / median %.1f / max %.1f ms over %d "
            "replies" % (baud, min(times), statistics.median(times), max(times), len(times)))


def check_reply(s):
    if not s.missing:
        return Result("link.reply", PASS, "all %d requests that want an answer got one"
                      % len(s.replies))
    names = sorted(set(x.label.split(",")[0] for x in s.missing))
    return Result("link.reply", FAIL, "no reply to %d of %d requests that want one (%s)"
                  % (len(s.missing), len(s.missing) + len(s.replies), ", ".join(names)),
                  exchanges=s.missing)


def check_frame(s):
    if not s.bad_frames:
        return Result("link.frame", PASS, "all %d replies well formed (start, L, C, A, "
                      "checksum, stop byte, nothing behind)" % len(s.replies))
    problems = list(dict.fromkeys(p for p, _ in s.bad_frames))   # unique, in order
    exchanges = list(dict.fromkeys(x for _, x in s.bad_frames))
    info = problems[1:6]
    if any(LEAD in p for p in problems):
        info.append("bytes %s: noise on the line or a collision's remains; libmbus and "
                    "pyMeterBus take the first byte for the frame's start and lose the "
                    "whole reply" % LEAD)
    return Result("link.frame", FAIL, "%d of %d replies malformed: %s"
                  % (len(exchanges), len(s.replies), problems[0]), info, exchanges)


def check_parity(s):
    kind = s.line.kind
    if kind != "serial":
        return Result("link.parity", SKIP, NO_PARITY[kind])
    a = s.address
    r = s.line.exchange_bad_parity(FR.req_ud2(a, 1), "REQ_UD2 to %d, mark parity" % a,
                                   s.timeout)
    answered = s.judge(r, want=False)
    if not answered.silent:
        return Result("link.parity", FAIL, "answers a request with parity errors (an 8N1 "
                      "meter?)", exchanges=[r])
    if s.parity_bad:
        return Result("link.parity", FAIL, "%d replies with parity errors (the meter sends "
                      "8N1?)" % len(s.parity_bad), exchanges=s.parity_bad)
    return Result("link.parity", PASS, "no reply to a request with parity errors; every "
                  "reply byte with even parity")


def check_gaps(s):
    kind = s.line.kind
    if kind == "net":
        return Result("link.gaps", SKIP, NO_GAPS[kind])
    found = [(p, x) for x in s.replies for p in x.pauses(_char_ms(x))]
    broken = [(p, x) for p, x in found if p[0] >= master_pause_ms(x.baud)]
    if broken:
        (ms, after, size), x = max(broken, key=lambda f: f[0][0])
        replies = list(dict.fromkeys(x for _, x in broken))
        return Result("link.gaps", FAIL, "%d of %d replies with a pause a master's "
                      "character timeout cuts: %.0f ms after byte %d of %d (%s)"
                      % (len(replies), len(s.replies), ms, after, size, _around(x, after)),
                      ["pyMeterBus gives up after %d ms without a byte at %d baud, libmbus "
                       "after 300 ms at 2400 baud; EN 13757-2 frames carry no pause at all"
                       % (master_pause_ms(x.baud), x.baud)] + _pause_lines(broken), replies)
    worst = max(found, key=lambda f: f[0][0] - _char_ms(f[1]), default=None)
    gap = worst[0][0] if worst else 0.0
    char_ms = _char_ms(worst[1]) if worst else s.line.char_s() * 1000
    text = "longest pause inside a reply %.1f ms (%.1f character times)" % (
        gap, gap / char_ms)
    if gap <= GAP_SLACK_MS + char_ms:
        if kind == "pty":
            return Result("link.gaps", SKIP, NO_GAPS[kind] % gap)
        return Result("link.gaps", PASS, text, ["measured at the host: USB serial "
                                                "adapters add up to ~%d ms" % GAP_SLACK_MS])
    (ms, after, size), x = worst
    return Result("link.gaps", WARN, text + ": a master with a tight character timeout may "
                  "cut the frame", ["after byte %d of %d (%s)" % (after, size,
                                                                 _around(x, after))],
                  exchanges=[x])


def _char_ms(x):
    return CHAR_BITS * 1000.0 / x.baud


def _around(x, after):
    """The reply's bytes on either side of a pause after byte `after` of its frame."""
    start = max(0, frame_start(x.data))
    head = x.data[start:start + after]
    tail = x.data[start + after:]
    return "%s%s | %s%s" % ("... " if len(head) > 4 else "", hexs(head[-4:]),
                            hexs(tail[:4]), " ..." if len(tail) > 4 else "")


def _pause_lines(found, most=5):
    lines = ["%s: %.0f ms after byte %d of %d" % (x.label, ms, after, size)
             for (ms, after, size), x in found[:most]]
    if len(found) > most:
        lines.append("... and %d more pauses" % (len(found) - most))
    return lines


def check_echo(s):
    echoed = s.echoes
    if s.echo:
        if len(echoed) == s.asked:
            return Result("link.echo", PASS, "every request (%d) came back before the "
                          "reply, as --echo says: mbus-check skipped the echoes" % s.asked)
        missed = "no request came back (%d sent)" % s.asked if not echoed else (
            "%d of %d requests did not come back" % (s.asked - len(echoed), s.asked))
        return Result("link.echo", WARN, "--echo, but %s: a master told to read an echo "
                      "(pyMeterBus read_echo=True) takes the reply for it" % missed)
    if not echoed:
        return Result("link.echo", PASS, "no request came back (%d sent)" % s.asked)
    return Result("link.echo", FAIL, "%d of %d requests came back before the reply, an "
                  "echo of the request (%s): a level converter with local echo? libmbus "
                  "reads the echo as the reply; give --echo if the converter is known to echo"
                  % (len(echoed), s.asked, hexs(echoed[0].echo)), exchanges=echoed)


LAST = (("link.timing", check_timing), ("link.reply", check_reply),
        ("link.frame", check_frame), ("link.echo", check_echo),
        ("link.parity", check_parity), ("link.gaps", check_gaps),
        ("link.collision", check_collision))
