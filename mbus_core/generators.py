# Value generators for simulated meters: a counter that grows by a rate and a value that
# wanders inside a range. Time comes only from a clock callable the port injects.


class _Ticks:
    """Elapsed time from the injected clock, or a read counter without one."""

    def __init__(self, clock):
        self.clock = clock
        self.t0 = clock() if clock is not None else 0
        self.reads = 0

    def now(self):
        if self.clock is not None:
            return self.clock() - self.t0
        t = self.reads
        self.reads += 1
        return t


class Counter:
    """start + rate * elapsed seconds (or per read without a clock)."""

    wraps = True  # past the range of its record's type it goes on from 0 (record.wrap)

    def __init__(self, start=0, rate=1, clock=None):
        self.start = start
        self.rate = rate
        self.ticks = _Ticks(clock)

    def value(self):
        return self._at(self.ticks.now())

    def _at(self, t):
        v = self.start + self.rate * t
        if isinstance(v, float) and v == int(v) and isinstance(self.start, int) \
                and isinstance(self.rate, int):
            return int(v)
        return v

    def reading(self, ahead=0):
        """The value `ahead` seconds from now (reads without a clock), without advancing:
        what a state file keeps so that the meter never runs backwards after a restart."""
        ticks = self.ticks
        t = ticks.clock() - ticks.t0 if ticks.clock is not None else ticks.reads
        return self._at(t + ahead)

    def resume(self, value):
        """Go on counting from a reading kept from an earlier run, never backwards from
        where the counter stands."""
        now = self.reading()
        ahead = value > now if self.rate >= 0 else value < now
        self.start = value if ahead else now
        self.ticks = _Ticks(self.ticks.clock)

    def samples(self):
        return [self.start, self.rate, self.start + self.rate]


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
        self.ticks = _Ticks(clock)
        self.last = 0
        self.started = False

    def _rand(self):
        s = self.state
        s ^= (s << 13) & 0xFFFFFFFF
        s ^= s >> 17
        s ^= (s << 5) & 0xFFFFFFFF
        self.state = s
        return s

    def value(self):
        t = self.ticks.now()
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
        while n:
            if self._rand() & 1:
                x = self.x + self.step
            else:
                x = self.x - self.step
            if x > self.hi:
                x = self.x - self.step
            if x < self.lo:
                x = self.x + self.step
            if self.lo <= x <= self.hi:
                self.x = x
            n -= 1
        return self.x

    def samples(self):
        return [self.lo, self.hi, self.step, self.x]
