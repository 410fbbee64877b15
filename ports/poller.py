# Socket readiness for the TCP server, waited for in one system call. select.epoll (Linux)
# or select.poll (other Unixes) directly: the selectors module's wrapper around them
# costs about a microsecond a request in Python, a tenth of a TCP round trip on loopback.
# select.select where neither exists (Windows).
import select

READ = 1    # POLLIN / EPOLLIN
WRITE = 4   # POLLOUT / EPOLLOUT
# what also means "read now": an error or a hang-up, which the read then reports
READ_ANY = READ | 8 | 16   # | POLLERR | POLLHUP (the same bits for epoll)
# the most events one epoll wait returns; more stay ready (level-triggered) for the next
MAX_EVENTS = 64


class Poller:
    """register(sock, data, write=False), modify(sock, data, write), unregister(sock),
    wait(timeout seconds or None) -> [(fd, events)] (events & READ_ANY: read it,
    events & WRITE: write it; .data[fd]: what the socket was registered with), close()."""

    def __init__(self):
        self.data = {}        # fd -> data
        self._write = {}      # fd -> bool, for the select() fallback
        self._socks = {}      # fd -> socket, for the select() fallback
        if hasattr(select, "epoll"):
            self._p = select.epoll()
            self._ms = False
        elif hasattr(select, "poll"):
            self._p = select.poll()
            self._ms = True
        else:
            self._p = None
            self._ms = False

    def register(self, sock, data, write=False):
        fd = sock.fileno()
        self.data[fd] = data
        self._write[fd] = write
        self._socks[fd] = sock
        if self._p is not None:
            self._p.register(fd, READ | (WRITE if write else 0))

    def modify(self, sock, data, write):
        fd = sock.fileno()
        self.data[fd] = data
        self._write[fd] = write
        if self._p is not None:
            self._p.modify(fd, READ | (WRITE if write else 0))

    def unregister(self, sock):
        """Forget sock (before closing it); a socket never registered is no error."""
        fd = sock.fileno()
        if self.data.pop(fd, None) is None and fd not in self._write:
            return
        self._write.pop(fd, None)
        self._socks.pop(fd, None)
        if self._p is not None:
            try:
                self._p.unregister(fd)
            except (KeyError, ValueError, OSError):
                pass

    def wait(self, timeout=None):
        """Block until a socket is ready or `timeout` seconds passed (None: no limit)."""
        if self._ms:
            return self._p.poll(None if timeout is None else int(timeout * 1000 + 0.999))
        if self._p is None:
            return self._select(timeout)
        # epoll: seconds as we have them (None: no limit); maxevents -1 would have it
        # set up room for 1023 events at each call
        return self._p.poll(timeout, MAX_EVENTS)

    def _select(self, timeout):
        socks = list(self._socks.values())
        writers = [s for s in socks if self._write.get(s.fileno())]
        r, w, _ = select.select(socks, writers, [], timeout)
        ready = {}
        for s in r:
            ready[s.fileno()] = READ
        for s in w:
            ready[s.fileno()] = ready.get(s.fileno(), 0) | WRITE
        return list(ready.items())

    def close(self):
        if self._p is not None and hasattr(self._p, "close"):
            self._p.close()
        self.data.clear()
        self._write.clear()
        self._socks.clear()
