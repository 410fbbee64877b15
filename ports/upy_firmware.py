# The firmware a MicroPython board runs (main.py: `import mbus_boards.pico as board`,
# `from mbus_ports.upy_firmware import run; run(board)`).
#
# run(board): builds the meter(s) from the compiled meter file on the board's filesystem
# (/meter.mbus.json, which mbus-deploy makes on the host: no codec on the board; a
# hand-written /meter.json and the demo meter), applies the settings a master changed
# earlier (mbus_ports.state), serves the line with the shared LineServer, persists new
# settings after the reply went out (atomically: temp file, rename), feeds the watchdog,
# and keeps serving through any exception (logged, short pause, go on). What only the start
# needs is in mbus_ports.upy_start, dropped again before serving (with the boards'
# /board.json loader), so that its code does not stay on the heap.
#
# A board module provides: NAME, BAUD, meter_path, state_path, make_port(baud) -> port,
# wdt() -> object with feed() or None (both called once, at start), led (a Pin or None),
# config (dict, optional):
#   "address"/"id": override the first meter's; "hook": module with setup(meters, board)
#   that attaches value callbacks (default "sensors", optional); "reply_delay_ms";
#   "mem_report": 1 prints the memory report after start (and "mem_every" N requests).
# A function the board module keeps must not come from a module the firmware drops (it
# would keep that module's code alive): see board_hooks().
import gc

try:
    from time import ticks_ms, ticks_diff, ticks_add, sleep_ms
except ImportError:  # CPython
    from mbus_ports.line import ticks_ms, ticks_diff, ticks_add, sleep_ms

from mbus_core.live_record import NEWLY_WRAPPED

# the serving loop collects once this many bytes were allocated since the last collection,
# so the heap in use never goes far past what the firmware keeps (see mem_report)
GC_SLACK = 8192
# what a master changed is saved once the line has been quiet (no request, no reply) this
# long, so that writing flash (about 0.1 s on a Pico) never delays the answer to the
# master's next request; with traffic that never pauses, at the latest this long after
SAVE_QUIET_MS = 300
SAVE_LATEST_MS = 5000

# memory figures of the running firmware (bytes): see mem_report()
MEM = {"start": 0, "free": 0, "peak": 0, "requests": 0, "errors": 0, "line": None}


def log(msg):
    print("mbus: " + msg)


def board_hooks(board):
    """make_port(baud) and wdt() for a board module that boards/board_config.py configured
    (board: its globals()). They import the loader when called: defined there, they would
    keep its code on the heap after the firmware dropped it."""
    def make_port(baud):
        from mbus_boards.board_config import port
        return port(board, baud)

    def wdt():
        from mbus_boards.board_config import watchdog
        return watchdog(board)
    return make_port, wdt


def _err(e):
    return "%s: %s" % (type(e).__name__, e)


def drop_modules(names):
    """Drop modules so that their code and tables can be collected (what stays of them is
    their interned names): the start's (mbus_ports.upy_start), the state file's between
    two saves."""
    import sys
    for name in names:
        sys.modules.pop(name, None)
        pkg, _, attr = name.rpartition(".")
        parent = sys.modules.get(pkg)
        if parent is not None and attr in getattr(parent, "__dict__", {}):
            try:
                delattr(parent, attr)
            except (AttributeError, TypeError):
                pass
    gc.collect()


STATE = ("mbus_ports.state",)   # loaded to read and to save the state file only
NOTES = ("mbus_core.notes",)    # loaded to say that a counter wrapped only


def mem_report():
    line = MEM.get("line")
    if line is not None:  # the loop may have been stopped before it counted the last one
        MEM["requests"] = line.requests
    a = gc.mem_alloc()
    if a > MEM["peak"]:
        MEM["peak"] = a
    gc.collect()
    now = gc.mem_alloc()
    text = ("memory: heap in use after start %d bytes (free %d), peak while serving %d "
            "bytes, in use now %d bytes, %d requests, %d errors"
            % (MEM["start"], MEM["free"], MEM["peak"], now, MEM["requests"], MEM["errors"]))
    log(text)
    return text


class Firmware:
    """Everything run() builds, kept together so a test or the REPL can look inside."""

    def __init__(self, board):
        # built by the start module (mbus_ports.upy_start), which is dropped again with
        # the board's /board.json loader once the port and the watchdog are made
        from mbus_ports import upy_start
        names = upy_start.build(self, board)
        upy_start = None
        drop_modules(names)

    def clock(self):
        """Seconds since start for value generators (fw.clock, a bound method: no class of
        its own), from ticks_ms without the wrap; upy_start sets _t and _s."""
        now = ticks_ms()
        self._s += ticks_diff(now, self._t) / 1000
        self._t = now
        return self._s

    def _changed(self, slave, what):
        # called from inside bus.feed, before the reply goes out: only take note here
        if what in ("address", "id", "baud"):
            self._mark_dirty()

    def _mark_dirty(self, rate=None):
        # also the line's on_baud(rate): a new baud rate is saved like any other change
        if not self.dirty:
            self.dirty = True
            self.dirty_at = ticks_ms()
        self.line.tick_soon()

    def prepare_keys(self):
        """Mode 7: the ciphers of each meter's next telegram, built between requests;
        a counter bound that is due to move on is saved once the line is quiet."""
        for m in self.mode7:
            m.security.prepare(m)
            if m.security.reserve_due:
                self.line.tick_soon()

    def housekeeping(self):
        """The line's on_tick, between frames: the deferred save of what a master
        changed, the periodic save of the counters' readings. Returns the ms until it is
        due again (None: nothing pending)."""
        # ticks, not self.clock(): a float per loop turn would churn the heap
        now = ticks_ms()
        due = self.dirty
        for m in self.mode7:   # a mode 7 counter bound that is due to move on
            if m.security.reserve_due:
                due = True
        if due:
            wait = SAVE_QUIET_MS - self.line.quiet_ms()
            if wait > 0 and not (self.dirty and
                                 ticks_diff(now, self.dirty_at) >= SAVE_LATEST_MS):
                return wait
            for m in self.mode7:   # a mode 7 counter bound: saved ahead (_reserve)
                m.security.reserve_early()
            if self.dirty:
                self.persist()
        if not self.readings_s:
            return None
        left = ticks_diff(self.readings_due, now)
        if left <= 0:
            self.readings_due = ticks_add(now, int(self.readings_s * 1000))
            self.persist()
            left = ticks_diff(self.readings_due, now)
        return left

    def persist(self, bound=None):
        """Save the settings when they differ from the saved ones (spares the flash). Also
        mode 7's reserve(bound): a new message counter bound goes to flash before any
        telegram passes it (a master rejects a counter it has seen; a restart must never
        repeat one)."""
        self.dirty = False
        from mbus_ports import state
        try:
            snap = state.snapshot(self.meters, self.configured, self.line.baud,
                                  2 * self.readings_s)
            if snap == self.saved:
                return False
            state.save_state(self.state_path, snap)
        finally:
            state = None
            drop_modules(STATE)
        self.saved = snap
        log("saved settings to %s" % self.state_path)
        return True


def run(board, steps=0, turn=None):
    """Serve forever (or `steps` loop turns, for tests). Returns on KeyboardInterrupt.
    turn: called with the Firmware after every loop turn, for test builds (one locks the
    heap after warm-up); the loop stops when it returns true."""
    gc.collect()
    fw = Firmware(board)   # logs the board, the meters and "serving ..."; ends collected
    line = fw.line
    every = fw.mem_every
    wdt = fw.wdt
    MEM["start"] = gc.mem_alloc()
    MEM["free"] = gc.mem_free()
    MEM["peak"] = MEM["start"]
    MEM["line"] = line
    fw.prepare_keys()
    if hasattr(gc, "threshold"):
        gc.threshold(GC_SLACK)
    if fw.mem_report:
        mem_report()
    replies = 0
    turns = 0
    try:
        while True:
            try:
                line.step()   # its on_tick (fw.housekeeping) saves what changed
                if line.replies != replies:
                    replies = line.replies
                    if NEWLY_WRAPPED[0]:   # a counter wrapped: say so, once
                        from mbus_core.notes import wrap_notes
                        for note in wrap_notes(fw.meters):
                            log(note)
                        wrap_notes = None
                        drop_modules(NOTES)
                    fw.prepare_keys()
                    if fw.led is not None:
                        fw.led.value(replies & 1)
                if line.requests != MEM["requests"]:
                    MEM["requests"] = line.requests
                    a = gc.mem_alloc()
                    if a > MEM["peak"]:
                        MEM["peak"] = a
                    if every and line.requests % every == 0:
                        mem_report()
            except KeyboardInterrupt:
                raise
            except Exception as e:  # MemoryError, OSError, a bug: log it and keep serving
                MEM["errors"] += 1
                try:
                    log("error in the loop: " + _err(e))
                except Exception:
                    pass
                gc.collect()
                sleep_ms(100)
            if wdt is not None:
                wdt.feed()
            if turn is not None and turn(fw):
                break
            if steps:
                turns += 1
                if turns >= steps:
                    break
    except KeyboardInterrupt:
        log("stopped")
    if fw.dirty:   # a change still waiting for a quiet line: saved now
        fw.persist()
    if fw.mem_report:
        mem_report()
    try:
        fw.port.close()
    except Exception:
        pass
    return fw
