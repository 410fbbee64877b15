# Blocking without polling for the host ports (POSIX, CPython): the run loop's wait()
# (ports/line.py) on one file descriptor, which wake() (stop(), also from a signal
# handler or another thread) ends at once through a pipe.
import os
import select


class Waiter:
    def __init__(self, fd):
        self.fd = fd
        self._r, self._w = os.pipe()
        os.set_blocking(self._r, False)
        os.set_blocking(self._w, False)
        self._poll = select.poll()
        self._poll.register(fd, select.POLLIN)
        self._poll.register(self._r, select.POLLIN)

    def wait(self, timeout_ms):
        """Block until `fd` is ready, wake() was called, or timeout_ms passed (None: no
        timeout). Returns fd's poll events (0: none, woken or timed out)."""
        if timeout_ms is not None and timeout_ms < 0:
            timeout_ms = 0
        events = 0
        for fd, ev in self._poll.poll(timeout_ms):
            if fd == self._r:
                try:
                    os.read(self._r, 64)
                except OSError:
                    pass
            else:
                events = ev
        return events

    def wake_fd(self):
        """The descriptor whose write ends a wait (for signal.set_wakeup_fd)."""
        return self._w

    def wake(self):
        try:
            os.write(self._w, b"\0")
        except OSError:   # the pipe is full (a wake-up is pending anyway) or closed
            pass

    def close(self):
        for fd in (self._r, self._w):
            if fd >= 0:
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._r = self._w = -1
