# One line with one or many meters on it. The Bus owns the frame parser, routes each
# frame to the slaves it is for, and, where several answer at once, returns what a real
# bus carries: a 0 bit from any slave wins, so overlapping replies read as the bitwise
# AND of their bytes (the longer reply's tail goes through unchanged). With
# wire_collisions, replies of different lengths (different meters, never bit-aligned) are
# received the way a level converter's UART sees them: framing and parity errors, garbage.
from mbus_core import frame as _frame
from mbus_core.slave import (Slave, ADDR_NETWORK, ADDR_BROADCAST, ADDR_SILENT, CI_SELECT,
                             CI_SELECT_MSB)


class Bus:
    """The sans-IO endpoint a port talks to.

        pos = bus.feed(data, start, end)   # stops after each complete frame
        if bus.reply_len: write bus.reply[:bus.reply_len]
        if bus.new_baud: switch the line to bus.new_baud after the reply went out
        bus.idle()                          # the line was quiet: drop a half frame

    on_change(slave, what) is called when a master changed a setting worth persisting
    ("address", "id", "baud", "selection", "reset"), inside feed(): a port persists
    settings after the reply has gone out, never from this callback.
    """

    def __init__(self, meters):
        self.parser = _frame.FrameParser()
        self.slaves = []
        # primary address -> its first slave (index + 1, 16 bits little endian; 0: none);
        # each slave's _next_here continues the chain. 502 bytes, not 251 lists.
        self._first = bytearray(2 * 251)
        self.tx = None          # where overlapping replies are ANDed: from a 2nd slave on
        self.reply = b""
        self.reply_len = 0
        self.responder = None   # the slave that answered (the last of several)
        self.new_baud = 0
        self.on_change = None
        self.collisions = 0
        self._moved = False     # a slave's address changed: re-index after the dispatch
        # host hooks (ports/quirks.py, ports/faults.py), None on boards: gate.route(p) ->
        # the address a frame is for, gate.admit(slave, p) -> False: the slave never heard
        # it, gate.reply(slave, p, n) -> the size of the reply it left in slave.reply
        self.gate = None
        # a WireReceiver: wire_collision.set_wire_collisions(bus) (not on boards)
        self.wire = None
        for m in meters:
            self.add(m)

    def add(self, meter_or_slave):
        s = meter_or_slave if isinstance(meter_or_slave, Slave) else Slave(meter_or_slave)
        s.on_change = self._changed
        self.slaves.append(s)
        if len(self.slaves) > 1 and self.tx is None:
            self.tx = bytearray(_frame.MAX_FRAME + 1)   # + 1: a wire collision's slip
        self.reindex()
        return s

    def _changed(self, slave, what):
        if what == "address":
            # Not now: the list of the old address may be the one being dispatched to.
            self._moved = True
        if self.on_change is not None:
            self.on_change(slave, what)

    def remove(self, slave):
        """Take a slave off the bus (between two frames)."""
        self.slaves.remove(slave)
        self.reindex()

    def reindex(self):
        """Chain the slaves of each address, in bus order (the last one first); call it
        after changing a meter's address from outside a frame (a master's change is
        re-indexed after its dispatch)."""
        self._moved = False
        first = self._first
        for i in range(len(first)):
            first[i] = 0
        i = len(self.slaves)
        while i > 0:
            s = self.slaves[i - 1]
            a = 2 * s.meter.address
            s._next_here = first[a] | (first[a + 1] << 8)
            first[a] = i & 0xFF
            first[a + 1] = i >> 8
            i -= 1

    def idle(self):
        self.parser.idle()

    def feed(self, data, start=0, end=-1):
        # feed_line() for the bus's own parser, written out: one call less per request
        self.reply_len = 0
        self.new_baud = 0
        p = self.parser
        pos = p.feed(data, start, end)
        if p.kind:
            self._dispatch(p)
        return pos

    def feed_line(self, parser, data, start=0, end=-1):
        """feed() for one of several lines onto the same meters (a TCP gateway's
        clients): each line has its own FrameParser, the meters are shared."""
        self.reply_len = 0
        self.new_baud = 0
        pos = parser.feed(data, start, end)
        if parser.kind:
            self._dispatch(parser)
        return pos

    def _dispatch(self, p):
        gate = self.gate
        a = p.a if gate is None else gate.route(p)
        answers = 0
        if a <= 250:
            i = self._first[2 * a] | (self._first[2 * a + 1] << 8)
            while i:
                s = self.slaves[i - 1]
                i = s._next_here
                answers += self._offer(s, p, answers)
        elif a == ADDR_BROADCAST or a == ADDR_SILENT or a == ADDR_NETWORK:
            # to 253: selection frames go to every meter, anything else to the selected
            network = a == ADDR_NETWORK and not (
                p.kind != _frame.SHORT and (p.ci == CI_SELECT or p.ci == CI_SELECT_MSB)
                and p.c & 0x0F == 0x03)
            for s in self.slaves:
                if not network or s.selected:
                    answers += self._offer(s, p, answers)
        else:
            return  # 251, 252: reserved
        if self._moved:
            self.reindex()
        if answers > 1:
            self.collisions += 1
        if a == ADDR_SILENT:
            self.reply_len = 0

    def _offer(self, s, p, answers):
        """Let slave s act on the frame; 1 when it answered (its reply goes onto the wire
        with those before: the AND of them)."""
        gate = self.gate
        if gate is None:
            n = s.handle(p)
        elif gate.admit(s, p):
            n = s.handle(p)
            if n:
                n = gate.reply(s, p, n)   # may put another reply in s.reply
        else:
            return 0
        if s.new_baud:
            self.new_baud = s.new_baud
            s.new_baud = 0
        if not n:
            return 0
        self.responder = s
        if answers == 0:
            self.reply = s.reply
            self.reply_len = n
        else:
            self._overlap(s.reply, n)
        return 1

    def _overlap(self, other, n):
        if self.wire is not None:
            self.wire.overlap(self, other, n)
            return
        tx = self.tx
        if self.reply is not tx:
            src = self.reply
            for i in range(self.reply_len):
                tx[i] = src[i]
            self.reply = tx
        m = self.reply_len
        for i in range(n if n < m else m):
            tx[i] &= other[i]
        for i in range(m, n):
            tx[i] = other[i]
        if n > m:
            self.reply_len = n
