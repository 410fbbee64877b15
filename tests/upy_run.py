# Runs the core tests (tests/core/test_*.py) without pytest, so that the very same
# test files run on the MicroPython unix port and on CPython:
#   micropython tests/upy_run.py [name-filter]
# A test is a module-level function named test_*; it passes when it returns.
# Prints one line per failure and the closing line "N passed, N failed".
# Imported (`import upy_run`), it only sets up the imports: the source tree on the path and
# its ports/ folder under the one name users import it by, mbus_ports.
import sys
import os

HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
ROOT = HERE + "/.."
sys.path.insert(0, ROOT)
sys.path.insert(0, HERE + "/core")
try:
    import mbus_ports  # noqa: F401 (installed: pip install -e .)
except ImportError:  # the source tree, as MicroPython sees it: ports/ is mbus_ports
    import ports
    sys.modules["mbus_ports"] = ports


def main():
    pattern = sys.argv[1] if len(sys.argv) > 1 else ""
    names = sorted(n[:-3] for n in os.listdir(HERE + "/core")
                   if n.startswith("test_") and n.endswith(".py"))
    passed = failed = 0
    for modname in names:
        mod = __import__(modname)
        for name in sorted(dir(mod)):
            if not name.startswith("test_") or pattern not in modname + "." + name:
                continue
            fn = getattr(mod, name)
            if not callable(fn):
                continue
            try:
                fn()
                passed += 1
            except Exception as e:  # report and go on, like pytest
                failed += 1
                print("FAIL %s.%s: %s %s" % (modname, name, type(e).__name__, e))
                if "-v" in sys.argv:
                    sys.print_exception(e) if hasattr(sys, "print_exception") else None
    runtime = sys.implementation.name
    print("%s: %d passed, %d failed" % (runtime, passed, failed))
    return failed


if __name__ == "__main__":
    sys.exit(1 if main() else 0)
