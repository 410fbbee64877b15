# Board descriptions. A board is a JSON file beside this one (raspberry_pi_hat.json) or a
# module; load_board("raspberry-pi-hat") returns its dict. Runtime-neutral (json only).
import json

try:
    _HERE = __file__.rsplit("/", 1)[0] if "/" in __file__ else "."
except NameError:  # frozen into firmware
    _HERE = "."


def board_file(name):
    return _HERE + "/" + name.replace("-", "_") + ".json"


def load_board(name):
    """The board called `name` ("raspberry-pi-hat" or "raspberry_pi_hat") as a dict.
    Raises ValueError with a one-line message when it does not exist or is broken."""
    ok = len(name) > 0
    for ch in name:
        if not (ch.isalpha() or ch.isdigit() or ch in "-_"):
            ok = False
    if not ok:
        raise ValueError("bad board name %r" % (name,))
    path = board_file(name)
    try:
        f = open(path)
    except OSError:
        raise ValueError("unknown board %r (known: %s)" % (name, ", ".join(known_boards())))
    try:
        try:
            data = json.loads(f.read())
        finally:
            f.close()
    except ValueError as e:
        raise ValueError("board %s: bad JSON: %s" % (path, e))
    if not isinstance(data, dict):
        raise ValueError("board %s: not a JSON object" % path)
    return data


def known_boards():
    try:
        import os
        names = os.listdir(_HERE)
    except (ImportError, OSError):
        return []
    return sorted(n[:-5].replace("_", "-") for n in names if n.endswith(".json"))
