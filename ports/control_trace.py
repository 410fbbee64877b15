# Live control, the bus trace: every frame in and out goes to the connected trace
# clients (GET /api/trace, Server-Sent Events). The line thread only drops the bytes into
# each client's bounded queue (never waits); the text is made on the client's thread.
import queue
import threading
import time

MAX_CLIENTS = 16       # trace clients at once; more get 503
BACKLOG = 2000         # frames a slow client may fall behind before frames are dropped

C_NAMES = {0x40: "SND_NKE", 0x53: "SND_UD", 0x73: "SND_UD", 0x5A: "REQ_UD1",
           0x7A: "REQ_UD1", 0x5B: "REQ_UD2", 0x7B: "REQ_UD2", 0x08: "RSP_UD",
           0x18: "RSP_UD", 0x28: "RSP_UD", 0x38: "RSP_UD"}
CI_NAMES = {0x50: "application reset", 0x51: "data send", 0x52: "select", 0x56: "select",
            0x70: "application error", 0x72: "variable data", 0x73: "fixed data",
            0x78: "variable data", 0x7A: "variable data"}


def describe(data):
    """A short decode of a frame: "REQ_UD2 to 3", "RSP_UD from 3, ID 12345678, ACD"."""
    n = len(data)
    if n == 1 and data[0] == 0xE5:
        return "ACK"
    if n == 5 and data[0] == 0x10:
        c, a = data[1], data[2]
        return "%s to %d" % (C_NAMES.get(c, "C=%02X" % c), a)
    if n >= 9 and data[0] == 0x68:
        c, a, ci = data[4], data[5], data[6]
        name = C_NAMES.get(c, "C=%02X" % c)
        if not c & 0x40:   # from a slave
            text = "RSP_UD from %d" % a
            if ci in (0x72, 0x76) and n >= 21:
                text += ", ID %02X%02X%02X%02X, status %02X" % (data[10], data[9], data[8],
                                                                data[7], data[16])
            elif ci == 0x70 and n >= 10:
                text += ", application error %02X" % data[7]
            if c & 0x20:
                text += ", ACD (alarm pending)"
            return text
        return "%s to %d, CI %02X%s" % (name, a, ci, (" (%s)" % CI_NAMES[ci])
                                         if ci in CI_NAMES else "")
    return "%d bytes (not a whole frame)" % n


class TraceHub:
    """callable(direction, data, peer=None) for the run loop; subscribe() for clients."""

    def __init__(self, max_clients=MAX_CLIENTS, clock=time.time):
        self.max_clients = max_clients
        self.clock = clock
        self.clients = ()          # replaced whole (the line thread reads it unlocked)
        self.dropped = 0
        self.refused = 0
        self._lock = threading.Lock()

    def __call__(self, direction, data, peer=None):
        clients = self.clients
        if not clients:
            return
        item = (self.clock(), direction, data, peer)
        for q in clients:
            try:
                q.put_nowait(item)
            except queue.Full:
                self.dropped += 1

    def subscribe(self):
        """A queue of (time, direction, bytes, peer), or None when the clients are many."""
        with self._lock:
            if len(self.clients) >= self.max_clients:
                self.refused += 1
                return None
            q = queue.Queue(BACKLOG)
            self.clients = self.clients + (q,)
            return q

    def unsubscribe(self, q):
        with self._lock:
            self.clients = tuple(c for c in self.clients if c is not q)


def event(item):
    """A trace item as the JSON object of one SSE event."""
    t, direction, data, peer = item
    out = {"time": round(t, 6), "iso": time.strftime("%H:%M:%S", time.localtime(t))
           + (".%03d" % int((t % 1) * 1000)), "dir": direction,
           "hex": " ".join("%02X" % b for b in data), "text": describe(data)}
    if peer:
        out["peer"] = peer
    return out


def chain(first, second):
    """One trace callable from two (either may be None)."""
    if first is None:
        return second
    if second is None:
        return first

    def both(direction, data, peer=None):
        first(direction, data, peer)
        second(direction, data, peer)
    return both
