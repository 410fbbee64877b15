import os
import sys

# The core tests import their helpers as a top-level module (so that MicroPython, which
# has no packages for tests, runs the same files).
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "core"))
