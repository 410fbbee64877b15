# Live control, the line side: changes from the HTTP API (ports/control_http.py) and
# from scenarios (ports/scenario.py) wait in a queue and are applied by the run loop
# between two frames (LineServer/TcpServer.between_frames), never in the middle of a
# reply. Reads get a snapshot made there too. Other threads only call submit()/post().
import collections
import copy
import logging
import threading
import time

from mbus_core.codec import model as _model
from mbus_core.codec.model import ConfigError, make_value, parse_id
from mbus_ports import faults as _faults

log = logging.getLogger("mbus-slave")

MAX_METERS = 250        # a primary-address bus holds 250 meters
JOBS_PER_STEP = 16      # changes applied per loop step; the rest after the next frame
SUBMIT_TIMEOUT = 5.0    # seconds an API call waits for the loop to take its change
# what {"alarm": true} raises: error flags 1 (a meter's "something is wrong" record)
DEFAULT_ALARM = [{"quantity": "error flags", "value": 1}]
PATCH_KEYS = ("status", "present", "address", "id", "alarm")


class ControlError(Exception):
    """A refused change: HTTP status and a one-line message."""

    def __init__(self, status, message):
        Exception.__init__(self, message)
        self.status = status
        self.message = message


class _Job:
    __slots__ = ("fn", "done", "result", "error", "cancelled")

    def __init__(self, fn, wait):
        self.fn = fn
        self.cancelled = False   # its caller gave up waiting: never applied late
        self.done = threading.Event() if wait else None
        self.result = None
        self.error = None


# -- validation (any thread: touches no meter) -------------------------------------------
def _is_int(v):
    return isinstance(v, int) and not isinstance(v, bool)


def check_address(v, what="address"):
    if not _is_int(v) or not 0 <= v <= 250:
        raise ControlError(400, "%s must be an integer 0..250, got %s" % (what, _shown(v)))
    return v


def _shown(v):
    text = repr(v) if not isinstance(v, (dict, list)) else type(v).__name__
    return text if len(text) <= 40 else text[:40] + "..."


def check_patch(body):
    """{"status": 16, "present": false, "address": 7, "id": 12345678, "alarm": ...} ->
    the validated changes (a dict). Alarm: true (error flags 1), false/null (clear) or
    a list of records as in meter files."""
    if not isinstance(body, dict) or not body:
        raise ControlError(400, "want a JSON object with one or more of: %s"
                           % ", ".join(PATCH_KEYS))
    out = {}
    for k, v in body.items():
        if k == "status":
            if not _is_int(v) or not 0 <= v <= 255:
                raise ControlError(400, "status must be an integer 0..255 (16: temporary "
                                   "error), got %s" % _shown(v))
        elif k == "present":
            if not isinstance(v, bool):
                raise ControlError(400, "present must be true or false, got %s" % _shown(v))
        elif k == "address":
            check_address(v)
        elif k == "id":
            try:
                v = parse_id(v)
            except ValueError as e:
                raise ControlError(400, str(e))
        elif k == "alarm":
            v = check_alarm(v)
        else:
            raise ControlError(400, "unknown field %r (known: %s)" % (k, ", ".join(PATCH_KEYS)))
        out[k] = v
    return out


def check_alarm(v):
    """The class 1 data bytes of an alarm value; b"" to clear."""
    if v is None or v is False:
        return b""
    if v is True:
        v = DEFAULT_ALARM
    if not isinstance(v, list):
        raise ControlError(400, "alarm must be true, false or a list of records")
    try:
        return _model._alarm_from_config(v, "alarm", None)
    except (ConfigError, ValueError, TypeError) as e:
        raise ControlError(400, str(e))


def check_record_change(body, clock):
    """{"value": constant or {"counter": ...}/{"wander": ...}} or {"add": N} ->
    ("value", source) or ("add", N)."""
    if not isinstance(body, dict) or len(body) != 1 or not ("value" in body or "add" in body):
        raise ControlError(400, 'want {"value": ...} (a number, a string, {"counter": {...}} '
                           'or {"wander": {...}}) or {"add": N}')
    if "add" in body:
        n = body["add"]
        if not isinstance(n, (int, float)) or isinstance(n, bool) or n != n \
                or n in (float("inf"), float("-inf")):
            raise ControlError(400, "add must be a number, got %s" % _shown(n))
        return "add", n
    try:
        return "value", make_value(body["value"], clock)
    except (ValueError, TypeError) as e:
        raise ControlError(400, "value: %s" % e)


def check_fault(spec, address):
    """A fault spec ("drop:0.5", "busy:every:3", ...) for the meter at `address`."""
    if not isinstance(spec, str):
        raise ControlError(400, "fault must be a spec text such as \"drop:0.5\" (%s)"
                           % _faults.SPEC_HELP)
    try:
        f = _faults.parse_fault_spec(spec)
    except ValueError as e:
        raise ControlError(400, str(e))
    if f.kind in getattr(_faults, "LINE_WIDE", ()):
        raise ControlError(400, "%s is a fault of the whole line, not of one meter: "
                           "give it with --fault at start" % f.kind)
    if f.address is not None and f.address != address:
        raise ControlError(400, "fault %r names meter %d, the URL meter %d"
                           % (spec, f.address, address))
    f.address = address
    return f


def check_duration(v):
    if v is None:
        return None
    if not isinstance(v, (int, float)) or isinstance(v, bool) or not 0 < v < 1e7:
        raise ControlError(400, "duration must be a number of seconds > 0, got %s" % _shown(v))
    return float(v)


# -- the controller --------------------------------------------------------------------
class Controller:
    """The meters' live changes, applied on the line's thread.

    bus: the mbus_core Bus; meters, configured_ids: the CLI's lists (the state keeper's
    too: kept aligned on add/remove); make_slave(meter) -> Slave with the CLI's options;
    faults: the line's Faults (runtime switches); on_identity(): an address or ID changed
    (the state file saves it)."""

    def __init__(self, bus, meters, configured_ids, make_slave, faults, clock=time.monotonic,
                 on_identity=None):
        self.bus = bus
        self.meters = meters
        self.configured_ids = configured_ids
        self.make_slave = make_slave
        self.faults = faults
        self.clock = clock
        self.on_identity = on_identity
        self.wake = None          # the run loop's wake() (set by attach)
        self._jobs = collections.deque()
        self._snap = None         # this step's snapshot, shared by the readers in it
        self.expiry = {}          # Fault -> clock() when it switches itself off
        self.fault_ids = {}       # Fault -> its number in the API
        self._next_fault = 1
        self.applied = 0
        self.failed = 0

    def attach(self, runner):
        runner.between_frames = self.between_frames
        self.wake = runner.wake

    # -- other threads -------------------------------------------------------------
    def submit(self, fn, timeout=SUBMIT_TIMEOUT):
        """Run fn() on the line thread between two frames; its result, or ControlError."""
        job = _Job(fn, True)
        self._jobs.append(job)   # deque.append: atomic, no lock on the line's side
        self._poke()
        if not job.done.wait(timeout):
            job.cancelled = True
            raise ControlError(503, "the line loop did not take the change within %g s"
                               % timeout)
        if job.error is not None:
            raise job.error
        return job.result

    def post(self, fn):
        """Queue fn() for the line thread without waiting (timers)."""
        self._jobs.append(_Job(fn, False))
        self._poke()

    def _poke(self):
        wake = self.wake
        if wake is not None:
            wake()

    # -- the line thread -----------------------------------------------------------
    def between_frames(self):
        jobs = self._jobs
        if not jobs:
            return
        self._snap = None
        n = 0
        while jobs and n < JOBS_PER_STEP:
            job = jobs.popleft()
            if job.cancelled:
                continue
            try:
                job.result = job.fn()
                self.applied += 1
            except ControlError as e:
                job.error = e
                self.failed += 1
            except Exception as e:  # a gap in the checks must never stop the line
                log.debug("control change failed", exc_info=True)
                job.error = ControlError(500, "%s: %s" % (type(e).__name__, e))
                self.failed += 1
            if job.done is not None:
                job.done.set()
            n += 1
        self._snap = None
        if jobs:   # more than a step's share: the rest after the next look at the line
            self._poke()

    def find(self, address):
        for s in self.bus.slaves:
            if s.meter.address == address:
                return s
        raise ControlError(404, "no meter at primary address %d" % address)

    def snapshot(self):
        """[raw state of each meter] (line thread; one per step, shared by its readers)."""
        if self._snap is None:
            from mbus_ports.control_view import raw_meter
            self._snap = [raw_meter(s, self) for s in self.bus.slaves]
        return self._snap

    def changed(self):
        self._snap = None

    # -- the operations (line thread) -------------------------------------------------
    def patch(self, address, changes):
        s = self.find(address)
        m = s.meter
        try:   # checked before anything changes
            _model.check_alarm_room(m, changes.get("alarm"), "meter %d" % address)
        except _model.ConfigError as e:
            raise ControlError(400, str(e))
        if "address" in changes and changes["address"] != address:
            new = changes["address"]
            m.address = new
            s.invalidate(records=False)
            self.bus.reindex()
            for f in self.faults.faults:    # a meter's runtime faults follow it
                if f.address == address and f in self.fault_ids:
                    f.address = new
            self._identity()
        if "id" in changes:
            m.id = changes["id"]
            s.invalidate(records=False)
            self._identity()
        if "status" in changes:
            m.status = changes["status"]
        if "alarm" in changes:
            m.alarm = changes["alarm"] or None
        if "present" in changes and changes["present"] != s.present:
            s.present = changes["present"]
            s.selected = False   # off the bus and back: powered up afresh
            s.reset_link()
        self.changed()
        log.info("control: meter at %d: %s", address, _changes_text(changes))
        return m.address

    def set_record(self, address, index, change):
        s = self.find(address)
        m = s.meter
        if m.replay is not None or m.ci == 0x73:
            raise ControlError(409, "meter %d %s: it has no records to set" % (
                address, "replays captured telegrams" if m.replay is not None
                else "sends the fixed data structure (CI 73)"))
        if not 0 <= index < len(m.records):
            raise ControlError(404, "meter %d has no record %d (records 0..%d)"
                               % (address, index, len(m.records) - 1))
        rec = m.records[index]
        if isinstance(rec, (bytes, bytearray)):
            rec = settable_record(rec)
        if rec is None or not hasattr(rec, "source"):
            raise ControlError(409, "record %d of meter %d is bytes the codec cannot "
                               "take apart (manufacturer data, a filler): its value "
                               "cannot be set" % (index, address))
        what, arg = change
        src = arg if what == "value" else _added(rec.source, arg, rec.current())
        try:
            new = type(rec)(rec.head, rec.code, src, rec.pow10, rec.kind, rec.name)
        except (ValueError, TypeError, OverflowError) as e:
            raise ControlError(400, "record %d of meter %d: %s" % (index, address, e))
        m.records[index] = new
        m.invalidate()
        self.changed()
        log.info("control: meter at %d: record %d %s", address, index,
                 "+%g" % arg if what == "add" else "= %s" % _source_text(src))
        return index

    def add_meter(self, meter):
        if len(self.bus.slaves) >= MAX_METERS:
            raise ControlError(409, "the bus has %d meters already" % MAX_METERS)
        s = self.make_slave(meter)
        self.bus.add(s)
        self.meters.append(meter)
        self.configured_ids.append(meter.id)
        if self.faults.faults:
            self.faults.attach(self.bus)
        self.changed()
        log.info("control: meter added at %d, ID %08d", meter.address, meter.id)
        return meter.address

    def remove_meter(self, address):
        s = self.find(address)
        self.bus.remove(s)
        for i, m in enumerate(self.meters):
            if m is s.meter:
                del self.meters[i]
                del self.configured_ids[i]
                break
        for f in list(self.faults.faults):
            if f.address == address and f in self.fault_ids:
                self._fault_off(f)
        self.changed()
        log.info("control: meter at %d removed", address)
        return address

    def fault_on(self, address, fault, duration):
        self.find(address)
        faults = self.faults
        faults.add(fault)
        faults.attach(self.bus)
        self.fault_ids[fault] = n = self._next_fault
        self._next_fault += 1
        if duration:
            self.expiry[fault] = self.clock() + duration
            t = threading.Timer(duration, self.post, (lambda: self._expire(fault),))
            t.daemon = True
            t.start()
        self.changed()
        log.info("control: fault %s on%s", fault.spec(),
                 " for %g s" % duration if duration else "")
        return n

    def _expire(self, fault):
        if fault in self.fault_ids:
            log.info("control: fault %s over (its duration passed)", fault.spec())
            self._fault_off(fault)

    def faults_off(self, address, number=None):
        """Switch off the runtime faults of a meter (all, or the one numbered)."""
        self.find(address)
        gone = []
        for f in list(self.faults.faults):
            if f.address == address and f in self.fault_ids and \
                    (number is None or self.fault_ids[f] == number):
                gone.append(self.fault_ids[f])
                self._fault_off(f)
                log.info("control: fault %s off", f.spec())
        if number is not None and not gone:
            raise ControlError(404, "meter %d has no runtime fault %d" % (address, number))
        self.changed()
        return gone

    def _fault_off(self, f):
        self.faults.remove(f)
        self.fault_ids.pop(f, None)
        self.expiry.pop(f, None)

    def _identity(self):
        if self.on_identity is not None:
            self.on_identity()


def settable_record(raw):
    """A record given as hex bytes (a meter file's "0216C801") as a Record with the same
    bytes whose value is in the units the decoder shows (456 m3, not raw 456 * 10^k);
    None when it is not one plain record."""
    from mbus_core.codec.records import decode_records, DecodeError
    from mbus_core.codec.vif import vif_info
    try:
        ds = decode_records(raw)
    except (DecodeError, ValueError):
        return None
    if len(ds) != 1 or ds[0].special:
        return None
    d = ds[0]
    rec = d.to_record()
    if not hasattr(rec, "source"):
        return None
    info = vif_info(d.vif, d.vife) if d.text_unit is None else None
    if rec.kind == "num" and info is not None and isinstance(d.value, (int, float)):
        k = _power_of_ten(info[2])
        if k is not None:
            try:
                scaled = type(rec)(rec.head, rec.code, d.value, -k, "num", None)
                if scaled.encode() == bytes(raw):
                    return scaled
            except (ValueError, TypeError, OverflowError):
                pass
    return rec


def _power_of_ten(f):
    """k with 10**k == f (f a VIF's factor), or None."""
    for k in range(-12, 13):
        if abs(f - 10.0 ** k) <= 1e-9 * 10.0 ** k:
            return k
    return None


def _added(src, n, now):
    """The value source `n` higher: a counter jumps (and keeps counting), a random walk
    moves (inside its range), a constant becomes another."""
    from mbus_core.generators import Counter, Wander
    if isinstance(src, Counter):
        c = copy.copy(src)
        c.start = src.start + n
        return c
    if isinstance(src, Wander):
        w = copy.copy(src)
        w.x = min(max(src.x + n, src.lo), src.hi)
        return w
    if isinstance(now, (int, float)) and not isinstance(now, bool):
        return now + n
    raise ControlError(400, "add needs a record with a number, not %s" % _shown(now))


def _source_text(src):
    if hasattr(src, "rate"):
        return "counter from %g at %g/s" % (src.start, src.rate)
    if hasattr(src, "step"):
        return "wander %g..%g" % (src.lo, src.hi)
    return repr(src)


def _changes_text(changes):
    out = []
    for k, v in changes.items():
        if k == "alarm":
            out.append("alarm %s" % ("raised" if v else "cleared"))
        elif k == "status":
            out.append("status 0x%02X" % v)
        elif k == "present":
            out.append("plugged in" if v else "unplugged")
        else:
            out.append("%s %s" % (k, v))
    return ", ".join(out)
