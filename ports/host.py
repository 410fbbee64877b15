# CPython glue for the CLI: meters from flags, random buses, the frame trace, the state
# file kept in step with what masters change.
import logging
import random
import sys
import time

from mbus_core.codec.vif import medium_name
from mbus_core.meter import Meter, manufacturer_text
from mbus_core.codec.model import meters_from_config, demo_records
from mbus_core.live_record import NEWLY_WRAPPED
from mbus_core.notes import wrap_notes
from mbus_core import slave as _slave
from mbus_ports import state as _state

log = logging.getLogger("mbus-slave")

# The demo meter: what the original pyMbusSlave served and libmbus's traces show
# (voltage 1234 V, volume 456 m3).
DEMO_RECORDS = (bytes.fromhex("02FD49D204"), bytes.fromhex("0216C801"))

RANDOM_MEDIA = (0x07, 0x04, 0x02, 0x03, 0x06)   # water, heat, electricity, gas, warm water
RANDOM_MANUFACTURERS = ("TST", "ABB", "KAM", "SEN", "ZRI", "LUG", "EMH")


_COMMANDS = {_slave.CMD_RESET: "application reset", _slave.CMD_GLOBAL: "global readout",
             _slave.CMD_SELECTION: "selective readout"}


def command_text(slave):
    """The last SND_UD a slave acted on, as a log line's text (None: none yet). The core
    only keeps its code: it formats nothing while serving."""
    cmd = slave.command
    m = slave.meter
    if cmd == _slave.CMD_ADDRESS:
        return "primary address %d -> %d" % (slave.command_arg, m.address)
    if cmd == _slave.CMD_IDENTITY:
        return "identity %08d %s %d %d" % (m.id, manufacturer_text(m.manufacturer),
                                           m.version, m.medium)
    if cmd == _slave.CMD_ID:
        return "id %08d" % m.id
    if cmd == _slave.CMD_BAUD:
        return "baud rate %d" % slave.command_arg
    return _COMMANDS.get(cmd)


def demo_meter(address=3, ident=12345678, manufacturer="TST", medium=0, version=1):
    return Meter(id=ident, manufacturer=manufacturer, version=version, medium=medium,
                 address=address, records=list(DEMO_RECORDS))


def random_meters(n, seed, clock=time.monotonic):
    """n meters at primary addresses 1..n with distinct random 8-digit IDs, a random
    medium and manufacturer each, and the model's demo records for that medium."""
    rng = random.Random(seed)
    ids = set()
    cfgs = []
    for i in range(n):
        while True:
            ident = rng.randint(10000000, 99999999)
            if ident not in ids:
                break
        ids.add(ident)
        medium = rng.choice(RANDOM_MEDIA)
        recs = demo_records(medium)
        for r in recs:   # give every random walk its own seed
            v = r.get("value")
            if isinstance(v, dict) and "wander" in v:
                v["wander"]["seed"] = rng.randint(1, 0x7FFFFFFF)
        cfgs.append({"name": "random-%d" % (i + 1), "address": i + 1, "id": ident,
                     "manufacturer": rng.choice(RANDOM_MANUFACTURERS), "version": 1,
                     "medium": medium, "records": recs})
    return meters_from_config({"meters": cfgs}, clock)


def describe(meter):
    return "address %d, ID %08d, %s, version %d, %s" % (
        meter.address, meter.id, manufacturer_text(meter.manufacturer), meter.version,
        medium_name(meter.medium))


class Tracer:
    """Frame trace lines in libmbus's format: `RECV (005): 10 40 03 43 16`."""

    def __init__(self, out=None):
        self.out = out if out is not None else sys.stdout

    @staticmethod
    def line(direction, data):
        return "%s (%03d): %s" % (direction, len(data),
                                  " ".join("%02X" % b for b in data))

    def __call__(self, direction, data, peer=None):
        text = self.line(direction, data)
        if peer:
            text += "   [%s]" % peer
        try:
            self.out.write(text + "\n")
            self.out.flush()
        except (OSError, ValueError):
            pass


class StateKeeper:
    """Keeps the state file in step with the bus: saves after every address/ID change
    (in flush(), which the run loop calls once the reply has gone out: two fsyncs on an
    SD card must not push the E5 past the reply window), after every baud switch, and
    once more at exit."""

    SAVED_ON = ("address", "id")

    def __init__(self, path, meters, configured_ids, baud=None, readings_every=600,
                 clock=time.monotonic, bus=None):
        self.path = path
        self.meters = meters
        self.bus = bus   # its responder is the meter after_reply looks at (None: all)
        self.configured_ids = configured_ids
        self.baud = baud
        self.saves = 0
        self.dirty = False
        # counters' readings: saved every `readings_every` s, each time at their value
        # 2 x that far ahead, so a crash never makes a meter run backwards (0: at exit only)
        self.readings_every = readings_every
        self.clock = clock
        self._readings_due = clock() + readings_every

    def save(self, final=False):
        """Write the state file; `final` at exit: the counters' readings as they are."""
        if not self.path:
            return
        ahead = 0 if final else 2 * self.readings_every
        try:
            _state.save_state(self.path, _state.snapshot(self.meters, self.configured_ids,
                                                         self.baud, ahead))
            self.saves += 1
        except OSError as e:
            log.error("cannot save the state to %s: %s", self.path, e)

    def on_change(self, slave, what):
        text = command_text(slave)
        if text:
            log.info("meter %08d: %s", slave.meter.id, text)
        if what in self.SAVED_ON:
            self.dirty = True

    def flush(self):
        """Save what changed since the last save (called after each reply)."""
        if self.dirty:
            self.dirty = False
            self.save()

    def after_reply(self):
        """After each reply: persist what changed, log counters that wrapped (once),
        build the next ciphers of the meter that answered (mode 7) and move its counter
        bound on (off the request path, as a board does). Only that meter's: the others
        sent nothing, and a bus of 250 meters would pay for all of them every time.
        After most replies none of this has work to do: it then costs a few tests (over
        TCP it runs after every request)."""
        if self.dirty:
            self.flush()
        if NEWLY_WRAPPED[0]:
            for note in wrap_notes(self.meters):
                log.warning(note)
        bus = self.bus
        if bus is None:
            for m in self.meters:
                if m.security is not None:
                    self._prepare(m)
        elif bus.responder is not None and bus.responder.meter.security is not None:
            self._prepare(bus.responder.meter)

    @staticmethod
    def _prepare(m):
        m.security.prepare(m)
        m.security.reserve_early()   # a counter bound due to move on: now

    def tick(self):
        """Called by the run loop (on_tick): the periodic save of the readings. Returns
        the milliseconds until it is due again (the loop sleeps until then), None when
        there is nothing periodic."""
        if not self.readings_every:
            return None
        now = self.clock()
        if now >= self._readings_due:
            self._readings_due = now + self.readings_every
            self.save()
        return int((self._readings_due - now) * 1000) + 1

    def on_baud(self, rate):
        log.info("line switched to %d baud", rate)
        if self.baud is not None:
            self.baud = rate
            self.save()
