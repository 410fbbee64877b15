import os
import sys

# The core tests import their helpers as a top-level module (so that MicroPython, which
# has no packages for tests, runs the same files).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "core"))

# Hypothesis: no per-example deadline (speed is measured by the benchmarks, never asserted
# in tests), and under CI a fixed example sequence so that a run can be repeated.
try:
    from hypothesis import settings as _settings

    _settings.register_profile("mbus", deadline=None,
                               derandomize=bool(os.environ.get("CI")))
    _settings.load_profile("mbus")
except ImportError:
    pass


# mbus-slave processes on a pty or a TCP port, stopped after the test
import pytest  # noqa: E402


def _serve(cls, tmp_path):
    started = []

    def start(*args, **kw):
        s = cls(list(args), tmp_path, **kw)
        started.append(s)
        return s
    yield start
    for s in started:
        s.stop()


@pytest.fixture
def slave_factory(tmp_path):
    from tests.hostutil import PtySlave
    yield from _serve(PtySlave, tmp_path)


@pytest.fixture
def tcp_factory(tmp_path):
    from tests.hostutil import TcpSlave
    yield from _serve(TcpSlave, tmp_path)
