# mbus-slave: serve M-Bus meters on a pty, a serial port (pyserial) or TCP.
# Flags compatible with the original pyMbusSlave (--device --baud --addr --id --manuf).
import argparse
import json
import logging
import os
import signal
import sys
import time

from mbus_core.bus import Bus
from mbus_core.codec.model import ConfigError, parse_medium
from mbus_core.codec import model as _model
from mbus_core.slave import Slave, BAUD_RATES
from mbus_ports import config as _config
from mbus_ports import host as _host
from mbus_ports import state as _state
from mbus_ports.faults import add_fault_arguments, faults_from_args
from mbus_ports.line import LineServer, reply_window_ms, default_reply_delay_ms

PROG = "mbus-slave"
log = logging.getLogger(PROG)

EXIT_USAGE = 2
EXIT_RUNTIME = 1


class UsageError(Exception):
    pass


class _Parser(argparse.ArgumentParser):
    """argparse with one-line errors: `mbus-slave: error: ...`, exit status 2."""

    def error(self, message):
        raise UsageError(message)


def _baud(text):
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError("bad baud rate %r (want one of %s)"
                                         % (text, ", ".join(map(str, BAUD_RATES))))
    if v not in BAUD_RATES:
        raise argparse.ArgumentTypeError("bad baud rate %d (want one of %s)"
                                         % (v, ", ".join(map(str, BAUD_RATES))))
    return v


def _addr(text):
    # plain ASCII decimal only: int() also takes "0x10", "1_0", " 3" and other scripts'
    # digits ("\u0663"), none of which a user means as an M-Bus address
    if not (text.isascii() and text.isdigit()):
        raise argparse.ArgumentTypeError("bad primary address %r (want 0..250)" % text)
    v = int(text)
    if not 0 <= v <= 250:
        raise argparse.ArgumentTypeError("primary address %d out of range (want 0..250)" % v)
    return v


def _ident(text):
    if len(text) != 8 or not text.isdigit() or not text.isascii():
        raise argparse.ArgumentTypeError("bad ID %r (want 8 decimal digits, e.g. 12345678)"
                                         % text)
    return int(text)


def _manuf(text):
    if len(text) != 3 or not text.isascii() or not text.isalpha():
        raise argparse.ArgumentTypeError("bad manufacturer %r (want 3 letters A-Z, e.g. TST)"
                                         % text)
    return text.upper()


def _medium(text):
    t = text.strip()
    if t.isdigit():
        v = int(t)
        if v <= 255:
            return v
        raise argparse.ArgumentTypeError("medium %d out of range (want 0..255 or a name)" % v)
    try:
        return parse_medium(t)
    except ValueError as e:
        raise argparse.ArgumentTypeError(str(e))


def _count(text):
    try:
        v = int(text)
    except ValueError:
        v = -1
    if not 1 <= v <= 250:
        raise argparse.ArgumentTypeError("bad meter count %r (want 1..250)" % text)
    return v


def _nonneg(text):
    try:
        v = float(text)
    except ValueError:
        v = -1
    if not v >= 0 or v != v or v == float("inf"):
        raise argparse.ArgumentTypeError("bad value %r (want a number >= 0)" % text)
    return v


# EN 13757-2 has a slave reply within 330 bit times + 50 ms (1.15 s at 300 baud, the
# slowest rate); masters and gateways give up after a few seconds at most. A longer delay
# is a typo (microseconds for ms, 1e300): it would hold the run loop (and over TCP every
# client) for that long. Inside the bound and outside the window: a warning.
MAX_REPLY_DELAY_MS = 10000


def _delay_ms(text):
    try:
        v = float(text)
    except ValueError:
        v = -1
    if not 0 <= v <= MAX_REPLY_DELAY_MS:   # also nan and inf
        raise argparse.ArgumentTypeError(
            "bad reply delay %r (want 0..%d ms; the EN 13757-2 window ends at 330 bit "
            "times + 50 ms, 1150 ms at 300 baud)" % (text, MAX_REPLY_DELAY_MS))
    return v


def _clients(text):
    try:
        v = int(text)
    except ValueError:
        v = 0
    if v < 1:
        raise argparse.ArgumentTypeError("bad client count %r (want >= 1)" % text)
    return v


def _quirk(text):
    from mbus_ports.quirks import QuirkError, parse_quirk_text
    try:
        parse_quirk_text(text)
    except QuirkError as e:
        raise argparse.ArgumentTypeError(str(e))
    return text


def _quirks_check(args, meters, is_tcp):
    """The meters' quirks (checked before anything is logged), or None."""
    from mbus_ports.quirks import quirks_from
    if not is_tcp and any(f.kind == "idle-close" for f in args.fault):
        raise UsageError("--fault idle-close is a TCP gateway's fault: it goes with "
                         "--device tcp:PORT")
    return quirks_from(meters, args.quirk)


def _quirks_setup(args, quirks, bus, device, is_tcp):
    """Quirks and wire collisions onto the bus (before the faults attach: the quirks are
    the bus's first gate)."""
    if args.collisions == "wire":
        from mbus_core.wire_collision import set_wire_collisions
        set_wire_collisions(bus)
        log.info("  Collisions:      as a UART receives them (replies of different "
                 "lengths: garbage bytes)")
    if quirks is None:
        return None
    quirks.attach(bus, log.info)
    for i, q in enumerate(quirks.per):
        if q is not None:
            log.info("  Quirks:          meter %d: %s", i + 1,
                     json.dumps(q.spec, sort_keys=True))
    if quirks.auto_baud() and device != "pty":
        log.info("  Auto-baud:       no effect on %s: %s", device,
                 "a TCP stream has no line speed" if is_tcp else
                 "the port runs at --baud, the meter answers there")
    return quirks


def _seed(text):
    try:
        return int(text, 0)
    except ValueError:
        raise argparse.ArgumentTypeError("bad seed %r (want an integer)" % text)


def build_parser():
    p = _Parser(prog=PROG, description="A wired M-Bus (EN 13757-2/-3) slave: serve one "
                "meter or a bus of meters on a virtual serial port (pty), a real serial "
                "port, or M-Bus over TCP.")
    g = p.add_argument_group("line")
    g.add_argument("--device", default=None,
                   help="pty (default), a serial device (/dev/ttyUSB0, COM3), a pyserial "
                   "URL (rfc2217://host:port), tcp:PORT (127.0.0.1), tcp:HOST:PORT "
                   "(tcp:0.0.0.0:PORT, tcp:[::]:PORT for every address)")
    g.add_argument("--board", default=None,
                   help="take device, baud, parity and stop bits from a board file "
                   "(raspberry-pi-hat: /dev/ttyAMA0 at 2400 8E1)")
    g.add_argument("--baud", type=_baud, default=None, help="baud rate (default 2400)")
    g.add_argument("--parity", choices=("N", "E", "O"), default=None,
                   help="parity (default E: M-Bus is 8E1)")
    g.add_argument("--stopbits", type=int, choices=(1, 2), default=None,
                   help="stop bits (default 1)")
    g.add_argument("--reply-delay", type=_delay_ms, default=None, metavar="MS",
                   help="reply delay in ms after a request, 0..%d (default: 22 bit times, "
                   "inside the EN 13757-2 window; 0 over TCP)" % MAX_REPLY_DELAY_MS)
    g.add_argument("--link", default=None, metavar="PATH",
                   help="with --device pty: a symlink to the pty at PATH (removed on exit)")
    g.add_argument("--tcp-idle-timeout", type=_nonneg, default=300.0, metavar="S",
                   help="close TCP clients silent for this long (default 300; 0: never)")
    g.add_argument("--max-clients", type=_clients, default=32, metavar="N",
                   help="TCP connections served at once (default 32); more are closed")
    g.add_argument("--wire-timing", action="store_true",
                   help="pty and TCP: send every reply at the line's baud rate and frame "
                   "format (11 bit times per character at 8E1), as on a real bus")
    g = p.add_argument_group("meter")
    g.add_argument("--addr", type=_addr, default=None, help="primary address (default 3)")
    g.add_argument("--id", type=_ident, default=None, dest="ident",
                   help="ID / serial number, 8 digits (default 12345678)")
    g.add_argument("--manuf", type=_manuf, default=None,
                   help="manufacturer, 3 letters (default TST)")
    g.add_argument("--medium", type=_medium, default=None,
                   help="medium: a name (water, heat, electricity, gas, ...) or 0..255")
    src = g.add_mutually_exclusive_group()
    src.add_argument("--meter", default=None, metavar="FILE",
                     help="JSON meter description (see examples/)")
    src.add_argument("--bus", default=None, metavar="FILE",
                     help='JSON bus description: {"meters": [...]}')
    src.add_argument("--replay", default=None, metavar="FILE",
                     help="answer with captured RSP_UD telegrams (hex text)")
    src.add_argument("--clone", default=None, metavar="CAPTURE",
                     help="serve a clone of the meter in a capture (hex, libmbus -d output "
                     "or --trace): the same telegrams, every record editable (mbus-decode "
                     "--to-meter CAPTURE writes its meter file)")
    src.add_argument("--random-meters", type=_count, default=None, metavar="N",
                     help="N random meters at addresses 1..N")
    g.add_argument("--seed", type=_seed, default=None,
                   help="seed for --random-meters (the same seed gives the same meters)")
    g.add_argument("--live", action="store_true",
                   help="with --clone or --meter: energy, volume and mass grow from the "
                   "captured values (counters), temperatures wander around them")
    g.add_argument("--list-meters", action="store_true",
                   help="list the catalogue of real meters (--meter catalog:NAME) and exit")
    g.add_argument("--ci56", choices=("deselect", "select"), default="deselect",
                   help="what CI 56 means to the meters (default deselect)")
    g.add_argument("--read-only", action="store_true",
                   help="refuse address, ID and baud changes from masters")
    g.add_argument("--security", type=int, choices=(0, 5, 7), default=None, metavar="MODE",
                   help="OMS security: 5 (profile A, AES-128-CBC) or 7 (profile B: KDF, "
                   "AFL with message counter and CMAC); 0: none; needs --key")
    g.add_argument("--key", default=None, metavar="HEX",
                   help="the meter's AES-128 key, 32 hex digits (with --security)")
    g.add_argument("--strict-repeat", action="store_true",
                   help="answer a repeated REQ_UD2 (same FCB) with the last telegram byte "
                   "for byte (default: the same telegram with current values)")
    g.add_argument("--quirk", action="append", default=[], type=_quirk, metavar="NAME=VALUE",
                   help="a vendor quirk of every meter served (repeatable): sleep=S, "
                   "ration=MIN[:K], auto-baud[=300,2400,...], address-writes=N[:ram|refuse], "
                   "ready-time=S, reply=ci-b7, second-address=A, fcb=ignore|strict|live "
                   "(a meter file's \"quirks\" set them per meter)")
    g.add_argument("--collisions", choices=("and", "wire"), default="and",
                   help="overlapping replies: the bitwise AND (default), or as a level "
                   "converter's UART receives replies of different lengths (garbage bytes)")
    g.add_argument("--state", default=None, metavar="FILE",
                   help="keep settings a master changed (address, ID, baud) and the "
                   "counters' readings in FILE; they override the configuration at the "
                   "next start")
    g.add_argument("--readings-every", type=_nonneg, default=10.0, metavar="MIN",
                   help="with --state: save the counters' readings every MIN minutes "
                   "(default 10; 0: at exit only)")
    g = p.add_argument_group("output")
    g.add_argument("--log-level", default="info", type=str.lower,
                   choices=("debug", "info", "warning", "error"),
                   help="log level on stderr (default info)")
    g.add_argument("--trace", action="store_true",
                   help="print every frame on stdout, libmbus style: RECV (005): 10 40 03 43 16")
    g = p.add_argument_group("live control")
    g.add_argument("--control", default=None, metavar="[HOST:]PORT",
                   help="serve the HTTP API and web page for changing meters while "
                   "masters poll (127.0.0.1 unless a host is given; 0: a free port)")
    g.add_argument("--scenario", default=None, metavar="FILE",
                   help="JSON file of timed steps (values, status, alarms, faults, "
                   "unplug/plug, address changes) run while serving")
    add_fault_arguments(p)
    return p


# -- configuration ----------------------------------------------------------------------
def _line_settings(args):
    """device, baud, parity, stopbits from flags and --board."""
    board = {}
    if args.board:
        try:
            from mbus_boards import load_board
            board = load_board(args.board)
        except ValueError as e:
            raise UsageError("--board: %s" % e)
        if "device" not in board:
            raise UsageError("--board %s has no device for this host" % args.board)
    device = args.device or board.get("device") or "pty"
    baud = args.baud or board.get("baud") or 2400
    if baud not in BAUD_RATES:
        raise UsageError("board %s: bad baud rate %r" % (args.board, baud))
    parity = args.parity or board.get("parity") or "E"
    stopbits = args.stopbits or board.get("stopbits") or 1
    return device, baud, parity, stopbits


def _meters(args):
    clock = time.monotonic
    overrides = [k for k in ("addr", "ident", "manuf", "medium")
                 if getattr(args, k) is not None]
    if args.seed is not None and args.random_meters is None and not args.fault:
        raise UsageError("--seed only goes with --random-meters or --fault")
    if (args.security is not None or args.key is not None) and \
            (args.bus or args.random_meters or args.replay):
        raise UsageError("--security/--key apply to one meter (--meter or the demo meter); "
                         "on a bus, set \"security\" in the file")
    if args.bus or args.random_meters:
        if overrides:
            flag = "--bus" if args.bus else "--random-meters"
            raise UsageError("--%s cannot be combined with %s (set it in the file)"
                             % (overrides[0].replace("ident", "id"), flag))
    if args.bus:
        meters = _config.load_meters(args.bus, clock)
        return meters, None
    if args.random_meters:
        seed = args.seed
        if seed is None:
            seed = int.from_bytes(os.urandom(4), "big")
        return _host.random_meters(args.random_meters, seed, clock), seed
    if args.replay:
        if args.ident is not None or args.manuf or args.medium is not None:
            raise UsageError("--replay takes the identity from the telegram; only --addr "
                             "applies")
        m = _config.load_replay(args.replay, 3 if args.addr is None else args.addr)
        return [m], None
    if args.live and not (args.clone or args.meter):
        raise UsageError("--live goes with --clone or --meter")
    if args.meter or args.clone:
        meters = _meter_file(args, clock)
        if overrides and len(meters) != 1:
            raise UsageError("--%s applies to one meter; %s describes %d"
                             % (overrides[0].replace("ident", "id"), args.meter, len(meters)))
        m = meters[0]
    else:
        m = _host.demo_meter()
        meters = [m]
    if args.addr is not None:
        m.address = args.addr
    if args.ident is not None:
        m.id = args.ident
    if args.manuf:
        from mbus_core.meter import manufacturer_code
        m.manufacturer = manufacturer_code(args.manuf)
    if args.medium is not None:
        m.medium = args.medium
    _security(args, m)
    return meters, None


def _meter_file(args, clock):
    """--meter FILE, --meter catalog:NAME or --clone CAPTURE (each with --live) ->
    meters."""
    from mbus_ports import catalog
    from mbus_core.codec.clone import make_live
    if args.clone:
        return _config.meters_of(_config.load_clone(args.clone, args.live), args.clone,
                                 clock)
    if catalog.is_ref(args.meter):
        cfg = catalog.load(args.meter)
    elif args.live:
        cfg = _config.load_config(args.meter)
    else:
        return _config.load_meters(args.meter, clock)
    if args.live:
        for mc in (cfg.get("meters") if isinstance(cfg, dict) and "meters" in cfg
                   else [cfg]):
            if isinstance(mc, dict):
                make_live(mc)
    return _config.meters_of(cfg, args.meter, clock)


def _security(args, m):
    """--security MODE --key HEX onto the one meter (they override its file's key)."""
    if args.security is None and args.key is None:
        return
    if args.security is None:
        raise UsageError("--key goes with --security 5 or --security 7")
    if args.security and args.key is None:
        raise UsageError("--security %d needs --key HEX (32 hex digits)" % args.security)
    spec = {"mode": args.security}
    if args.security:
        spec["key"] = args.key
    try:
        m.security = _model.security_from_config(spec, m.ci)
    except ValueError as e:
        raise UsageError("--security/--key: %s" % e)
    m.invalidate()


def _security_banner(meters, keeper):
    """Log the encrypted meters; with --state, mode 7 message counters are saved ahead of
    use (the file is written before a telegram passes the last saved bound)."""
    for i, m in enumerate(meters):
        sec = getattr(m, "security", None)
        if sec is None:
            continue
        log.info("  Security:        meter %d: mode %d%s", i + 1, sec.mode,
                 ", message counter %d" % sec.counter if sec.mode == 7 else "")
        if sec.mode != 7:
            continue
        if keeper is None:
            log.warning("meter %d: mode 7 without --state: the message counter starts at "
                        "%d again on every start, and masters reject the replays",
                        i + 1, sec.counter)
        else:
            sec.reserve = lambda bound, keeper=keeper: keeper.save()


def _check_addresses(meters):
    seen = {}
    for i, m in enumerate(meters):
        if m.address and m.address in seen:
            log.warning("meters %d and %d share primary address %d: they will collide when "
                        "read by it", seen[m.address] + 1, i + 1, m.address)
        seen.setdefault(m.address, i)


def _live_options(args, meters):
    """(control address, Scenario) of --control and --scenario, checked before serving."""
    control = scenario = None
    if args.control:
        from mbus_ports.control import parse_control_address
        try:
            control = parse_control_address(args.control)
        except ValueError as e:
            raise UsageError("--control: %s" % e)
    if args.scenario:
        from mbus_ports.scenario import load_scenario
        try:
            scenario = load_scenario(args.scenario, meters)
        except ValueError as e:
            raise UsageError("--scenario %s: %s" % (args.scenario, e))
    return control, scenario


def _live(args, bus, meters, configured_ids, faults, keeper, control, scenario):
    """The live control of this run (ports/control.py), its HTTP port bound now."""
    from mbus_ports.control import Live

    def make_slave(m):
        return Slave(m, read_only=args.read_only, ci56=args.ci56,
                     strict_repeat=True if args.strict_repeat else None)
    seed = args.fault_seed if args.fault_seed is not None else (
        args.seed if args.seed is not None else 1)
    try:
        return Live(bus, meters, configured_ids, make_slave, faults,
                    keeper if args.state else None, control, scenario, fault_seed=seed)
    except OSError as e:
        raise UsageError("--control %s: cannot listen: %s" % (args.control,
                                                              e.strerror or e))


# -- main -------------------------------------------------------------------------------
def _setup_logging(level):
    logging.basicConfig(level=getattr(logging, level.upper()), stream=sys.stderr,
                        format="%(levelname)s:%(name)s:%(message)s")


def _say(text):
    try:
        sys.stdout.write(text + "\n")
        sys.stdout.flush()
    except (OSError, ValueError):
        pass


def _usage_exit(msg):
    sys.stderr.write("%s: error: %s\n" % (PROG, msg))
    return EXIT_USAGE


def wake_on_signals(runner):
    """Have SIGTERM/SIGINT end the run loop's wait at once even when the signal comes just
    before the loop blocks: Python runs the handler (which calls runner.stop()) only once
    the wait returns, which may be a minute later, but the C-level handler also writes to
    the loop's wake-up descriptor, which the wait watches. Returns the descriptor set
    before (to restore), or None when it could not be set."""
    # a TcpServer has the descriptor; a LineServer's port has it (not the LineServer: it
    # runs on boards too, which have no signals)
    source = runner if hasattr(runner, "wake_fd") else getattr(runner, "port", None)
    fd = source.wake_fd() if hasattr(source, "wake_fd") else None
    if fd is None:
        return None
    try:
        return signal.set_wakeup_fd(fd)
    except (ValueError, OSError):   # not the main thread, or a descriptor it refuses
        return None


def main(argv=None):
    try:
        return _main(argv)
    except UsageError as e:
        return _usage_exit(e)
    except ConfigError as e:
        return _usage_exit(e)
    except KeyboardInterrupt:
        return 0


def _main(argv):
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:   # --help
        return e.code or 0
    if args.list_meters:
        from mbus_ports import catalog
        for line in catalog.listing():
            _say(line)
        return 0
    _setup_logging(args.log_level)
    device, baud, parity, stopbits = _line_settings(args)
    is_tcp = device.startswith("tcp:")
    if args.link and device != "pty":
        raise UsageError("--link only goes with --device pty")
    if args.link:
        from mbus_ports.pty_port import link_problem
        problem = link_problem(args.link)
        if problem:
            raise UsageError("--link %s: %s" % (args.link, problem))
    tcp_addr = None
    if is_tcp:
        from mbus_ports.tcp_server import parse_tcp_device
        try:
            tcp_addr = parse_tcp_device(device)
        except ValueError as e:
            raise UsageError("--device: %s" % e)

    meters, seed = _meters(args)
    quirks = _quirks_check(args, meters, is_tcp)
    configured_ids = [m.id for m in meters]
    control, scenario = _live_options(args, meters)

    # settings a master changed last time win over the configuration
    st = {}
    if args.state:
        # a device node, a FIFO, a directory or a symlink is never read nor replaced; a
        # folder that is missing or read-only would lose every change: say so at once
        problem = _state.check_path(args.state)
        if problem:
            raise UsageError("--state %s: %s" % (args.state, problem))
        st = _state.load_state(args.state, warn=log.warning)
        n = _state.apply_state(st, meters, warn=log.warning)
        if n:
            log.info("state %s: restored the settings of %d meter(s)", args.state, n)
        b = _state.state_baud(st, BAUD_RATES)
        if b and b != baud and not is_tcp:
            log.info("state %s: baud rate %d (was switched by a master)", args.state, b)
            baud = b
    _check_addresses(meters)

    delay = args.reply_delay
    if delay is None:
        delay = 0 if is_tcp else None
    elif not is_tcp:
        lo, hi = reply_window_ms(baud)
        if not lo <= delay <= hi:
            log.warning("reply delay %g ms is outside the EN 13757-2 window at %d baud "
                        "(%.1f..%.1f ms): masters may miss the replies", delay, baud, lo, hi)

    # startup banner, like pyMbusSlave's
    log.info("pyMbusSlave-compatible %s", PROG)
    log.info("  Serial device:   %s", device)
    log.info("  Baudrate:        %d%s", baud, " (no effect on TCP)" if is_tcp else
             " %d%s%d" % (8, parity, stopbits))
    if len(meters) == 1:
        m = meters[0]
        log.info("  Slave address:   %d", m.address)
        log.info("  Slave device ID: %08d", m.id)
        log.info("  Manufacturer:    %s, version %d, medium %s",
                 _host.manufacturer_text(m.manufacturer), m.version,
                 _host.medium_name(m.medium))
    else:
        log.info("  Meters:          %d%s", len(meters),
                 " (--seed %d)" % seed if seed is not None else "")
        for i, m in enumerate(meters):
            log.info("  Meter %d: %s", i + 1, _host.describe(m))
    if args.read_only:
        log.info("  Read-only: address, ID and baud changes are refused")
    if args.strict_repeat:
        log.info("  Strict repeats: a repeated REQ_UD2 gets the last telegram unchanged")
    shown = delay if delay is not None else default_reply_delay_ms(baud)
    log.info("  Reply delay:     %g ms", shown)

    slaves = [Slave(m, read_only=args.read_only, ci56=args.ci56,
                    strict_repeat=True if args.strict_repeat else None) for m in meters]
    bus = Bus(slaves)
    keeper = _host.StateKeeper(args.state, meters, configured_ids,
                               None if is_tcp else baud, args.readings_every * 60, bus=bus)
    bus.on_change = keeper.on_change
    quirks = _quirks_setup(args, quirks, bus, device, is_tcp)
    _security_banner(meters, keeper if args.state else None)
    tracer = _host.Tracer() if args.trace else None
    faults = faults_from_args(args, log.info, bus)
    live_control = None
    if control or scenario:
        live_control = _live(args, bus, meters, configured_ids, faults, keeper, control,
                             scenario)
        tracer = live_control.trace(tracer)
        faults = live_control.faults

    # SIGINT/SIGTERM/SIGHUP (the terminal or ssh session went away): a clean stop (state
    # saved, pty link removed, exit status 0), from before the device line is printed, so
    # that whoever reads it may stop us at once
    stopping = []
    runner = None

    def stop(signum, frame):
        stopping.append(signum)
        if runner is not None:
            runner.stop()

    old = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        sig = getattr(signal, name, None)
        if sig is not None:
            old[sig] = signal.signal(sig, stop)

    # open the device
    port = server = None
    try:
        if is_tcp:
            from mbus_ports.tcp_server import TcpServer
            server_cls, paced = TcpServer, {}
            if args.wire_timing:   # replies paced at the line rate (ports/paced.py)
                from mbus_ports.paced import PacedTcpServer as server_cls
                paced = {"parity": parity, "stopbits": stopbits}
            host, tport = tcp_addr
            server = server_cls(bus, host, tport, max_clients=args.max_clients,
                                idle_timeout=args.tcp_idle_timeout, reply_delay_ms=delay,
                                trace=tracer, baud=baud,
                                faults=faults, **paced)
            if host in ("127.0.0.1", "localhost", "::1"):
                log.info("Bound to %s only (loopback: this machine); tcp:0.0.0.0:%d or "
                         "tcp:[::]:%d serve every address", server.listen_text(),
                         server.port, server.port)
            else:
                log.info("Bound to %s", server.listen_text())
            _say("Listening on %s" % server.listen_text())
        elif device == "pty":
            from mbus_ports.pty_port import PtyPort
            if quirks is not None and quirks.auto_baud():
                from mbus_ports.quirks import pty_class
                PtyPort = pty_class()   # it sees the speed a master sets
            port = PtyPort()
            if args.link:
                try:
                    port.make_link(args.link)
                except OSError as e:   # the path the user named: a usage error
                    port.close()
                    return _usage_exit("--link %s: %s" % (args.link, e.strerror or e))
            _say("Point your M-Bus master at %s" % port.name)
            if args.link:
                log.info("Link %s -> %s", args.link, port.name)
        else:
            from mbus_ports.serial_port import SerialPort
            port = SerialPort(device, baud, parity, stopbits)
            log.info("Serving on %s", device)
    except (OSError, ValueError) as e:
        sys.stderr.write("%s: error: cannot open %s: %s\n"
                         % (PROG, device, getattr(e, "strerror", None) or e))
        if port is not None:
            port.close()
        return EXIT_RUNTIME
    except Exception as e:  # pyserial's SerialException and the like
        sys.stderr.write("%s: error: cannot open %s: %s\n" % (PROG, device, e))
        return EXIT_RUNTIME

    if args.wire_timing:
        from mbus_ports.paced import PacedPort, format_text
        if device == "pty":
            port = PacedPort(port, baud, parity, stopbits)
        if device == "pty" or is_tcp:
            log.info("Wire timing: replies paced at %s", format_text(baud, parity, stopbits))
        else:
            log.info("Wire timing: no effect on %s (a serial port keeps the line rate "
                     "itself)", device)

    if server is not None:
        runner = server
        server.after_reply = keeper.after_reply
        server.on_tick = keeper.tick
    else:
        runner = LineServer(bus, port, baud=baud, reply_delay_ms=delay, trace=tracer,
                            faults=faults)
        runner.on_baud = keeper.on_baud
        runner.after_reply = keeper.after_reply
        runner.on_tick = keeper.tick
        if quirks is not None and device == "pty":
            quirks.line = runner
            quirks.speed = getattr(port, "speed", None)

    if live_control is not None:
        live_control.attach(runner)
        if live_control.url():
            _say("Control API at %s" % live_control.url())
    old_wakeup = wake_on_signals(runner)
    if stopping:
        runner.stop()   # a signal came while we were starting
    if args.state:
        keeper.save()   # the file reflects the running configuration from the start
    status = 0
    try:
        runner.serve_forever()
    except Exception as e:  # the device went away (USB unplugged) and the like
        log.debug("run loop failed", exc_info=True)
        sys.stderr.write("%s: error: %s: %s\n" % (PROG, device, e))
        status = EXIT_RUNTIME
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
        if old_wakeup is not None:
            signal.set_wakeup_fd(old_wakeup)
        if args.state:
            keeper.save(final=True)
        if live_control is not None:
            live_control.close()
        if server is not None:
            server.close()
        else:
            port.close()
        log.info("stopped")
    return status


if __name__ == "__main__":
    sys.exit(main())
