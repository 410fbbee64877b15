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
