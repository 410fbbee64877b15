# --scenario FILE: timed changes to the running meters, logged as they run.
#
#   {"steps": [
#     {"at": 10, "meter": 3, "record": 0, "add": 100},        counter (or value) +100
#     {"at": 12, "meter": 3, "record": 1, "value": 42.5},     a constant or a value source
#     {"at": 15, "meter": 3, "status": 16},                   status byte
#     {"at": 20, "meter": 4, "fault": "drop:0.5", "for": 30}, a fault for 30 s
#     {"at": 60, "meter": 2, "alarm": true},                  alarm on (false: off)
#     {"at": 70, "meter": 5, "unplug": true}, {"at": 80, "meter": 5, "plug": true},
#     {"at": 90, "meter": 5, "address": 9}, {"at": 95, "meter": 9, "id": 11223344}]}
#
# "at" counts seconds from the start of serving; "meter" is the primary address the meter
# has at that moment. The whole file is checked at start (one-line error); each step goes
# through the same queue as the HTTP API (ports/control_ops.py), between two frames.
import json
import logging
import threading
import time

from mbus_core.codec.model import make_value
from mbus_ports.control_ops import (ControlError, check_address, check_patch,
                                    check_record_change, check_fault, check_duration)

log = logging.getLogger("mbus-slave")

ACTIONS = ("value", "add", "status", "alarm", "fault", "unplug", "plug", "address", "id")
STEP_KEYS = ("at", "meter", "record", "for", "comment") + ACTIONS
MAX_SIZE = 1 << 20
MAX_STEPS = 10000


class Step:
    def __init__(self, number, at, meter, action, arg, record=None, duration=None):
        self.number = number
        self.at = at
        self.meter = meter
        self.action = action
        self.arg = arg
        self.record = record
        self.duration = duration

    def text(self):
        a = self.action
        where = "meter %d" % self.meter
        if a in ("value", "add"):
            what = "record %d %s" % (self.record, ("+%g" % self.arg) if a == "add"
                                     else "= %s" % json.dumps(self.arg))
        elif a == "fault":
            what = "fault %s%s" % (self.arg, " for %g s" % self.duration
                                   if self.duration else "")
        elif a in ("unplug", "plug"):
            what = a
        elif a == "alarm":
            what = "alarm %s" % ("off" if self.arg in (False, None) else "on")
        elif a == "status":
            what = "status %d" % self.arg
        else:
            what = "%s %s" % (a, self.arg)
        return "%s: %s" % (where, what)

    def run(self, ctl):
        """The change, on the line thread (through ctl.submit)."""
        a = self.action
        m = self.meter
        if a in ("value", "add"):
            change = check_record_change({a: self.arg}, ctl.clock)
            return ctl.submit(lambda: ctl.set_record(m, self.record, change))
        if a == "fault":
            f = check_fault(self.arg, m)
            return ctl.submit(lambda: ctl.fault_on(m, f, self.duration))
        if a in ("unplug", "plug"):
            changes = {"present": a == "plug"}
        else:
            changes = check_patch({a: self.arg})
        return ctl.submit(lambda: ctl.patch(m, changes))


def _num(v, what):
    if not isinstance(v, (int, float)) or isinstance(v, bool) or v != v or v < 0 \
            or v > 1e7:
        raise ValueError("%s must be a number of seconds >= 0, got %r" % (what, v))
    return v


def parse_step(n, d, meters):
    """Step n (1-based) of the file -> Step, checked against `meters` (address -> the
    meter's record count, as it stands at that point of the scenario)."""
    if not isinstance(d, dict):
        raise ValueError("step %d: a step is an object" % n)
    for k in d:
        if k not in STEP_KEYS:
            raise ValueError("step %d: unknown key %r (known: %s)" % (n, k, ", ".join(STEP_KEYS)))
    acts = [k for k in ACTIONS if k in d]
    if len(acts) != 1:
        raise ValueError("step %d: one action per step (one of %s), found %s"
                         % (n, ", ".join(ACTIONS), ", ".join(acts) or "none"))
    act = acts[0]
    at = _num(d.get("at"), "step %d: at" % n)
    try:
        meter = check_address(d.get("meter"), "meter")
    except ControlError as e:
        raise ValueError("step %d: %s (the meter's primary address)" % (n, e.message))
    if meter not in meters:
        raise ValueError("step %d: no meter at primary address %d at %g s" % (n, meter, at))
    arg = d[act]
    record = duration = None
    try:
        if act in ("value", "add"):
            record = d.get("record")
            if not isinstance(record, int) or isinstance(record, bool) or \
                    not 0 <= record < meters[meter]:
                raise ValueError("record must be the index of one of the meter's %d "
                                 "records (0..%d)" % (meters[meter], meters[meter] - 1))
            if act == "value":
                make_value(arg)
            check_record_change({act: arg}, None)
        elif act == "fault":
            check_fault(arg, meter)
            duration = check_duration(d.get("for"))
        elif act in ("unplug", "plug"):
            if arg is not True:
                raise ValueError('write "%s": true' % act)
        else:
            check_patch({act: arg})
        if "record" in d and act not in ("value", "add"):
            raise ValueError("record goes with value or add only")
        if "for" in d and act != "fault":
            raise ValueError("for (seconds) goes with fault only")
    except ControlError as e:
        raise ValueError("step %d: %s" % (n, e.message))
    except ValueError as e:
        raise ValueError("step %d: %s" % (n, e))
    if act == "address":
        meters[arg] = meters.pop(meter)
    return Step(n, at, meter, act, arg, record, duration)


def parse_scenario(cfg, meters):
    """The parsed JSON of a scenario file -> Scenario (ValueError: one line)."""
    if not isinstance(cfg, dict) or not isinstance(cfg.get("steps"), list):
        raise ValueError('want {"steps": [{"at": SECONDS, "meter": ADDRESS, ...}, ...]}')
    for k in cfg:
        if k not in ("steps", "comment", "description"):
            raise ValueError("unknown key %r (known: steps, comment)" % k)
    if len(cfg["steps"]) > MAX_STEPS:
        raise ValueError("%d steps (at most %d)" % (len(cfg["steps"]), MAX_STEPS))
    counts = {}
    for m in meters:
        counts.setdefault(m.address, len(m.records) if m.replay is None else 0)
    order = sorted(enumerate(cfg["steps"]), key=lambda p: _at_key(p[1]))
    steps = [parse_step(i + 1, d, counts) for i, d in order]
    return Scenario(steps)


def _at_key(d):
    at = d.get("at") if isinstance(d, dict) else None
    return at if isinstance(at, (int, float)) and not isinstance(at, bool) else -1


def load_scenario(path, meters):
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_SIZE + 1)
    except OSError as e:
        raise ValueError("cannot read: %s" % (e.strerror or e))
    if len(data) > MAX_SIZE:
        raise ValueError("larger than %d bytes" % MAX_SIZE)
    try:
        cfg = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise ValueError("bad JSON: %s" % e)
    except RecursionError:
        raise ValueError("bad JSON: nested too deeply")
    return parse_scenario(cfg, meters)


class Scenario:
    def __init__(self, steps):
        self.steps = steps

    def start(self, ctl, clock=time.monotonic):
        r = ScenarioRunner(self, ctl, clock)
        r.start()
        return r


class ScenarioRunner(threading.Thread):
    """Runs the steps at their times; each one logged (a refused step: a warning)."""

    def __init__(self, scenario, ctl, clock=time.monotonic):
        threading.Thread.__init__(self, name="mbus-scenario", daemon=True)
        self.scenario = scenario
        self.ctl = ctl
        self.clock = clock
        self.done = 0
        self.failed = 0
        self._stop = threading.Event()

    def run(self):
        t0 = self.clock()
        steps = self.scenario.steps
        log.info("scenario: %d steps over %g s", len(steps), steps[-1].at if steps else 0)
        for st in steps:
            wait = t0 + st.at - self.clock()
            if wait > 0 and self._stop.wait(wait):
                return
            if self._stop.is_set():
                return
            try:
                st.run(self.ctl)
                self.done += 1
                log.info("scenario: %g s: %s", st.at, st.text())
            except ControlError as e:
                self.failed += 1
                log.warning("scenario: %g s: step %d (%s) refused: %s", st.at, st.number,
                            st.text(), e.message)
        log.info("scenario: finished (%d steps done, %d refused)", self.done, self.failed)

    def stop(self):
        self._stop.set()
