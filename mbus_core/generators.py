# Value generators for simulated meters: a counter that grows by a rate and a value that
# wanders inside a range. Time comes only from a clock callable the port injects. What
# checks their ranges at load (the values to try) is start-only code: mbus_core.compiled
# source_samples, which the host's codec uses too.


def _restart(g, clock):
    """g's time starts now (clock: a callable returning seconds, or None)."""
    g.clock = clock
    g.t0 = clock() if clock is not None else 0
    g.reads = 0


def _elapsed(g, step=0):
    """Seconds since g's (re)start; without a clock the reads so far, `step` counting this
    one. (A function, not a base class: a class costs a board more heap.)"""
    if g.clock is not None:
        return g.clock() - g.t0
    t = g.reads
    g.reads += step
    return t


class Counter:
    """start + rate * elapsed seconds (or per read without a clock)."""

    wraps = True  # past the range of its record's type it goes on from 0 (record.wrap)

    def __init__(self, start=0, rate=1, clock=None):
        self.start = start
        self.rate = rate
        _restart(self, clock)

    def value(self):
        return self.reading(0, 1)

    def reading(self, ahead=0, step=0):
        """The value `ahead` seconds from now (reads without a clock), without advancing:
        what a state file keeps so that the meter never runs backwards after a restart.
        (value() reads with step 1.)"""
        v = self.start + self.rate * (_elapsed(self, step) + ahead)
        if isinstance(v, float) and v == int(v) and isinstance(self.start, int) \
                and isinstance(self.rate, int):
            return int(v)
        return v

    def resume(self, value):
        """Go on counting from a reading kept from an earlier run, never backwards from
        where the counter stands."""
        now = self.reading()
        ahead = value > now if self.rate >= 0 else value < now
        self.start = value if ahead else now
        _restart(self, self.clock)


class Wander:
    """A random walk of +-step inside [min, max]; one step per elapsed second (per read
    without a clock). Deterministic: xorshift32 seeded by `seed`."""

    def __init__(self, min=0, max=100, step=1, start=None, seed=1, clock=None):
        if max < min:
            raise ValueError("wander: max < min")
        if step <= 0:
            raise ValueError("wander: step must be > 0")
        self.lo = min
        self.hi = max
        self.step = step
        self.x = (min + max) / 2 if start is None else start
        if isinstance(min, int) and isinstance(max, int) and isinstance(step, int) \
                and start is None:
            self.x = (min + max) // 2
        self.state = (seed & 0xFFFFFFFF) or 1
        _restart(self, clock)
        self.last = 0
        self.started = False

    def value(self):
        t = _elapsed(self, 1)
        if not self.started:
            self.started = True
            self.last = t
            return self.x
        n = int(t - self.last)
        if n <= 0:
            return self.x
        self.last += n
        if n > 1000:
            n = 1000
        s = self.state
        while n:
            s ^= (s << 13) & 0xFFFFFFFF   # xorshift32
            s ^= s >> 17
            s ^= (s << 5) & 0xFFFFFFFF
            x = self.x + self.step if s & 1 else self.x - self.step
            if x > self.hi:
                x = self.x - self.step
            if x < self.lo:
                x = self.x + self.step
            if self.lo <= x <= self.hi:
                self.x = x
            n -= 1
        self.state = s
        return self.x
