# Live control for mbus-slave: --control [HOST:]PORT (the HTTP API and web page) and
# --scenario FILE (timed changes). The CLI builds a Live before it opens the device (the
# trace hook and the faults go into the run loop) and attaches it to the run loop after.
import logging

from mbus_ports.control_ops import Controller
from mbus_ports.control_trace import TraceHub, chain
from mbus_ports.faults import Faults

log = logging.getLogger("mbus-slave")


def parse_control_address(text):
    """"8080", "HOST:8080", "[::1]:8080" -> (host, port); 127.0.0.1 unless a host is
    given. Raises ValueError."""
    from mbus_ports.tcp_server import parse_tcp_device
    text = text.strip()
    if not text:
        raise ValueError("empty address (want PORT or HOST:PORT)")
    try:
        return parse_tcp_device("tcp:" + text)
    except ValueError:
        raise ValueError("bad address %r (want PORT, HOST:PORT or [IPV6]:PORT)" % text)


class Live:
    """The control interface of one mbus-slave run.

    bus, meters, configured_ids: the CLI's; make_slave(meter) -> Slave; faults: the line's
    Faults or None (then an empty one is made: faults can be switched on at run time);
    keeper: the StateKeeper (API address/ID changes are saved as a master's are);
    control: (host, port) or None; scenario: a loaded Scenario or None."""

    def __init__(self, bus, meters, configured_ids, make_slave, faults, keeper,
                 control=None, scenario=None, clock=None, fault_seed=1):
        self.faults = faults if faults is not None else Faults([], seed=fault_seed,
                                                                log=log.info, bus=bus)
        kw = {"clock": clock} if clock is not None else {}
        self.controller = Controller(bus, meters, configured_ids, make_slave, self.faults,
                                     on_identity=self._saved if keeper else None, **kw)
        self.keeper = keeper
        self.hub = TraceHub()
        self.server = None
        self.scenario = scenario
        self._runner = None
        if control is not None:   # bound now: a port in use is an error before serving
            from mbus_ports.control_http import ControlServer
            self.server = ControlServer(control, self.controller, self.hub)
            if control[0] not in ("127.0.0.1", "localhost", "::1"):
                log.warning("control API on %s: it has no authentication, whoever reaches "
                            "it can change the meters", self.server.url())

    def _saved(self):
        self.keeper.dirty = True
        self.keeper.flush()

    def trace(self, tracer):
        """The run loop's trace callable: the --trace printer (or None) and the hub."""
        return chain(tracer, self.hub)

    def url(self):
        return self.server.url() if self.server is not None else None

    def attach(self, runner):
        """Hook into the run loop and start serving (call before serve_forever)."""
        self.controller.attach(runner)
        if self.server is not None:
            self.server.start()
        if self.scenario is not None:
            self._runner = self.scenario.start(self.controller)

    def close(self):
        if self._runner is not None:
            self._runner.stop()
        if self.server is not None:
            self.server.close()
