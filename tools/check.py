"""mbus-check: a conformance tester for wired M-Bus meters (EN 13757-2/-3).

    mbus-check /dev/ttyUSB0 --addr 5              (a USB M-Bus master on the meter's bus)
    mbus-check tcp:192.168.1.20:10001 --addr 5    (an M-Bus/TCP gateway)
    mbus-check /dev/ttyUSB0 --secondary 12345678 --json

It acts as a master, runs a battery of checks against one meter and reports one line per
rule: PASS, FAIL, WARN or SKIP, with the bytes sent and received for every failure.
Exit status 0 when nothing FAILs, 1 when something does (or no meter answers), 2 for bad
usage and device errors. It changes nothing on the meter (address, baud rate) unless
--allow-writes is given, and then restores what it changed.
"""
import argparse
import sys

from mbus_tools import check_app, check_fcb, check_link, check_secondary, check_writes
from mbus_tools.check_frames import BAUD_RATES, Secondary
from mbus_tools.check_io import Line, LineError, hexs
from mbus_tools.check_report import (RULE_IDS, Report, Result, WARN, rules_text, selected)
from mbus_tools.check_session import NoMeter, Session

PROG = "mbus-check"
PLAN = (check_link.FIRST + check_fcb.CHECKS + check_app.CHECKS + check_secondary.CHECKS
        + check_writes.CHECKS + check_link.LAST)
LINE_NOTES = {"pty": "pty: no parity, no speed, no character timing",
              "net": "TCP: through a gateway", "serial": "serial port"}


class _Parser(argparse.ArgumentParser):
    def error(self, message):   # one line, status 2 (argparse would add the usage)
        sys.stderr.write("%s: error: %s\n" % (PROG, message))
        sys.exit(2)


def _address(text):
    if not text.isdigit() or not 0 <= int(text) <= 250:
        raise argparse.ArgumentTypeError("primary address must be 0..250, got %r" % text)
    return int(text)


def _baud(text):
    if not text.isdigit() or int(text) not in BAUD_RATES:
        raise argparse.ArgumentTypeError("baud rate must be one of %s"
                                         % ", ".join(map(str, BAUD_RATES)))
    return int(text)


def _seconds(text):
    try:
        v = float(text)
    except ValueError:
        v = 0
    if not 0 < v <= 60:
        raise argparse.ArgumentTypeError("timeout must be 0 < S <= 60 seconds, got %r"
                                         % text)
    return v


def _secondary(text):
    try:
        return Secondary.parse(text)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def _rules(text):
    out = [r.strip() for r in text.split(",") if r.strip()]
    for r in out:
        if not any(selected(rid, [r]) for rid in RULE_IDS):
            raise argparse.ArgumentTypeError("no rule %r (see --list-rules)" % r)
    return out


def build_parser():
    p = _Parser(prog=PROG, description=__doc__.split("\n\n")[0],
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("device", nargs="?", help="/dev/ttyUSB0, /dev/pts/N, tcp:HOST:PORT, or a "
                   "pyserial URL (socket://HOST:PORT, rfc2217://HOST:PORT)")
    p.add_argument("--addr", type=_address, help="the meter's primary address (0..250)")
    p.add_argument("--secondary", type=_secondary, metavar="ID",
                   help="its secondary address: 8 ID digits, or 16 hex digits as libmbus "
                   "writes them; without --addr the meter is found by selection")
    p.add_argument("--baud", type=_baud, default=2400, help="baud rate (default 2400)")
    p.add_argument("--timeout", type=_seconds, metavar="S",
                   help="seconds to wait for a reply, and for silence where none is due "
                   "(default: twice the end of the reply window, at least 0.5)")
    p.add_argument("--json", action="store_true", help="the report as JSON")
    p.add_argument("--allow-writes", action="store_true",
                   help="also check set address, baud switch and application reset "
                   "(each restored afterwards)")
    p.add_argument("--try-baud", type=_baud, metavar="RATE",
                   help="with --allow-writes: the rate to switch to (default 9600, or 2400 "
                   "when at 9600)")
    p.add_argument("--echo", action="store_true",
                   help="the line echoes every request before the reply (a level converter "
                   "with local echo): expect it (link.echo) instead of failing on it")
    p.add_argument("--ci56", choices=("deselect", "select"), default="deselect",
                   help="what CI 56 means to the meter (default deselect)")
    p.add_argument("--only", type=_rules, action="append", metavar="RULES",
                   help="run only these rules or groups, comma-separated (link, "
                   "fcb.repeat, ...)")
    p.add_argument("--trace", action="store_true", help="every exchange on stderr")
    p.add_argument("--list-rules", action="store_true", help="list the rules and exit")
    return p


def parse_args(argv):
    p = build_parser()
    args = p.parse_args(argv)
    if not args.list_rules:
        if not args.device:
            p.error("give the DEVICE the meter is on (see --help)")
        if args.addr is None and args.secondary is None:
            p.error("give the meter's --addr or --secondary")
    args.only = [r for group in (args.only or []) for r in group]
    if args.timeout is None:
        args.timeout = max(0.5, 2 * check_link.window_ms(args.baud)[1] / 1000.0)
    return args


def _trace(direction, data, ms):
    when = "" if ms is None else "   (%.1f ms)" % ms
    sys.stderr.write("%s %s%s\n" % (direction, hexs(data) or "-", when))


def _guarded(rule, fn, s):
    """Run one rule; a bug or an unforeseen reply ends that rule, never the run."""
    try:
        return fn(s)
    except LineError:
        raise
    except Exception as e:
        return Result(rule, WARN, "check aborted: %s: %s" % (type(e).__name__, e))


def heading(s, args):
    line = s.line
    out = ["%s %s: address %d, %d baud 8E1 (%s)" % (PROG, args.device, s.address,
                                                     line.baud, LINE_NOTES[line.kind])]
    ro = s.readout()
    sec = s.meter_secondary()
    if sec is not None:
        out.append("Meter: %s; readout of %d telegram(s)" % (sec.text(), len(ro.telegrams)))
    return out


def meta(s, args):
    sec = s.meter_secondary()
    return {"device": args.device, "line": s.line.kind, "address": s.address,
            "baud": s.line.baud, "meter": sec.text() if sec else None,
            "telegrams": len(s.readout().telegrams), "allow_writes": args.allow_writes,
            "echo": args.echo}


def run(args, line):
    s = Session(line, args.addr, args.timeout, args.ci56, args.secondary, args.allow_writes,
                args.try_baud, args.echo)
    if s.address is None:
        s.find_by_secondary()
    s.start()
    report = Report(meta(s, args))
    for rule, fn in PLAN:
        if selected(rule, args.only):
            report.add(_guarded(rule, fn, s))
    out = report.json_text() if args.json else report.text(heading(s, args))
    sys.stdout.write(out)
    sys.stdout.flush()
    return report.exit_status()


def _error(text, status):
    sys.stderr.write("%s: %s\n" % (PROG, text))
    return status


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.list_rules:
        sys.stdout.write(rules_text())
        return 0
    try:
        line = Line(args.device, args.baud, _trace if args.trace else None)
    except LineError as e:
        return _error("error: %s" % e, 2)
    try:
        return run(args, line)
    except LineError as e:
        return _error("error: %s" % e, 2)
    except NoMeter as e:
        return _error(str(e), 1)
    except KeyboardInterrupt:
        return _error("interrupted", 2)
    except Exception as e:   # a last guard: one line, never a traceback
        return _error("error: %s: %s" % (type(e).__name__, e), 2)
    finally:
        line.close()


if __name__ == "__main__":
    sys.exit(main())
