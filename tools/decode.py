"""mbus-decode: decode M-Bus frames given as hex to JSON.

    mbus-decode "68 1F 1F 68 08 ..."      (hex as arguments)
    mbus-decode -f telegram.hex           (hex in a file; several frames allowed)
    mbus-decode --to-meter capture.hex    (a meter file that serves the capture again)
    cat telegram.hex | mbus-decode        (hex on stdin)

One frame gives one JSON object, several give a JSON list. Bad input: one line on
stderr and exit status 1; bad arguments: exit status 2.

The output is strict JSON: a real32 NaN or infinity, which JSON cannot carry, is shown as
the string "NaN", "Infinity" or "-Infinity" (value and raw), and the record gets a "note"
that says so.
"""
import argparse
import json
import sys

from mbus_core.codec import model
from mbus_core.codec import records as R

C_NAMES = {0x40: "SND_NKE", 0x53: "SND_UD", 0x73: "SND_UD", 0x5A: "REQ_UD1", 0x7A: "REQ_UD1",
           0x5B: "REQ_UD2", 0x7B: "REQ_UD2", 0x08: "RSP_UD", 0x18: "RSP_UD", 0x28: "RSP_UD",
           0x38: "RSP_UD"}


def _num(v):
    """A number as strict JSON carries it: whole floats as ints; NaN and +-infinity (a
    real32 can hold them, JSON cannot) as the strings "NaN", "Infinity", "-Infinity"."""
    if not isinstance(v, float):
        return v
    if v != v:
        return "NaN"
    if v in (float("inf"), float("-inf")):
        return "Infinity" if v > 0 else "-Infinity"
    if v == int(v) and abs(v) < 1e15:
        return int(v)
    return v


def record_json(r):
    d = r.as_dict()
    d["value"] = _num(d["value"])
    d["raw"] = _num(d["raw"])
    if isinstance(r.raw, float) and isinstance(d["raw"], str):
        d["note"] = "real32 %s is not a finite number: shown as a string" % d["raw"]
    return d


def _aes():
    from mbus_ports import aes as A
    missing = A.available()
    if missing:
        raise ValueError(missing)
    return A.aes128, A.aes128_decrypt


def _ident(app):
    at = 2 + app[1] if app and app[0] == 0x90 and len(app) > 1 else 0
    if len(app) >= at + 5:
        return "%02X%02X%02X%02X" % (app[at + 4], app[at + 3], app[at + 2], app[at + 1])
    return "?"


def _encrypted(app):
    """{"mode", "blocks"} of application data that is encrypted (AFL, or a CI 72 header
    whose configuration field names a security mode); None when it is not."""
    if app and app[0] == 0x90 and len(app) > 1:
        app = app[2 + app[1]:]
    if len(app) >= 13 and app[0] == 0x72:
        cfg = app[11] | (app[12] << 8)
        if (cfg >> 8) & 0x1F:
            return {"mode": (cfg >> 8) & 0x1F, "blocks": (cfg >> 4) & 0x0F}
    return None


def frame_json(f, key=None, counters=None):
    if len(f) == 1:
        return {"type": "ack"}
    if f[0] == 0x10:
        return {"type": "short", "C": "%02X" % f[1], "A": f[2], "function": C_NAMES.get(f[1], "")}
    out = {"type": "control" if f[1] == 3 else "long", "C": "%02X" % f[4], "A": f[5],
           "CI": "%02X" % f[6], "function": C_NAMES.get(f[4], "")}
    if f[4] & 0x40:  # master to slave: show the user data as it is
        out["data"] = " ".join("%02X" % b for b in f[7:-2])
        return out
    if out["type"] == "control":
        return out
    app = bytes(f[6:-2])
    if key is not None and app[:1] in (b"\x72", b"\x90"):  # CI 70, 78... stay as they are
        from mbus_core.codec import secure
        enc, dec = _aes()
        try:
            app, info = secure.decrypt_user_data(app, key, enc, dec, counters)
        except secure.SecurityError as e:
            raise ValueError("meter %s: %s" % (_ident(app), e))
        out["security"] = info
    else:
        info = _encrypted(app)
        if info is not None:   # no key: the header in clear, no records from ciphertext
            info["note"] = "encrypted: give --key HEX to decrypt"
            out["security"] = info
            tpl = app[2 + app[1]:] if app[0] == 0x90 else app
            header = R.decode_user_data(tpl[:13]).get("header")
            if header is not None:
                out["header"] = header
            out["records"] = []
            return out
    d = R.decode_user_data(app)
    if d.get("header") is not None:
        out["header"] = d["header"]
    if "error" in d:
        out["error"] = d["error"]
        out["error_name"] = d["error_name"]
    if "fixed" in d:
        out["fixed"] = d["fixed"]
    out["records"] = [record_json(r) for r in d["records"]]
    if "security" in out:   # the 2F fillers up to the block boundary are no records
        out["records"] = [r for r in out["records"] if r.get("dif") != "2F"]
    return out


def decode_text(text, key=None):
    """Decode the frames in `text`; with `key` (16 bytes) decrypt mode 5 and mode 7
    telegrams, and check that each meter's mode 7 message counter rises from frame to
    frame (a replay or a falling counter is an error)."""
    frames = model.parse_frames(text)
    counters = {}
    out = []
    for i, f in enumerate(frames):
        try:
            out.append(frame_json(f, key, counters))
        except ValueError as e:
            if key is not None and len(frames) > 1:
                raise ValueError("frame %d: %s" % (i + 1, e))
            raise
    return out[0] if len(out) == 1 else out


def to_meter(path, live=False):
    """mbus-decode --to-meter: the clone of a capture as a meter file on stdout."""
    from mbus_ports.config import load_clone, meter_json
    try:
        text = sys.stdin.read() if path == "-" else None
        out = meter_json(load_clone("stdin" if path == "-" else path, live, text))
    except (ValueError, OSError, UnicodeDecodeError) as e:
        sys.stderr.write("mbus-decode: %s\n" % (str(e).splitlines() or ["error"])[0])
        return 1
    try:
        sys.stdout.write(out)
        sys.stdout.flush()
    except BrokenPipeError:
        sys.stdout = None
    return 0


def main(argv=None):
    p = argparse.ArgumentParser(prog="mbus-decode",
                                description="Decode wired M-Bus frames (hex) to JSON.",
                                epilog="A real32 NaN or infinity is shown as the string "
                                "\"NaN\", \"Infinity\" or \"-Infinity\", with a \"note\" "
                                "in its record: the output stays strict JSON.")
    p.add_argument("hex", nargs="*", help="frame bytes in hex (spaces optional)")
    p.add_argument("-f", "--file", help="read the hex from FILE ('-' for stdin)")
    p.add_argument("--compact", action="store_true", help="one-line JSON")
    p.add_argument("--key", default=None, metavar="HEX",
                   help="AES-128 key (32 hex digits): decrypt OMS security mode 5 and 7 "
                   "telegrams; a wrong key, a bad MAC, a replayed message counter or an "
                   "unencrypted telegram is an error (exit status 1)")
    p.add_argument("--to-meter", default=None, metavar="CAPTURE",
                   help="print a meter file (JSON) that serves the RSP_UD telegram(s) "
                   "captured in the file CAPTURE ('-': stdin; hex, libmbus -d output or "
                   "an mbus-slave --trace) byte for byte, every record editable")
    p.add_argument("--live", action="store_true",
                   help="with --to-meter: energy, volume and mass grow from the captured "
                   "values (counters), temperatures wander around them")
    args = p.parse_args(argv)
    if args.live and not args.to_meter:
        p.error("--live goes with --to-meter")
    if args.to_meter:
        if args.hex or args.file or args.key:
            p.error("--to-meter takes the capture file alone (no hex, -f or --key)")
        return to_meter(args.to_meter, args.live)
    key = None
    if args.key is not None:
        from mbus_core.security import parse_key
        try:
            key = parse_key(args.key)
        except ValueError as e:
            p.error("--key: %s" % e)
    try:
        if args.file and args.hex:
            p.error("give the hex either as arguments or with -f, not both")
        if args.file:
            if args.file == "-":
                text = sys.stdin.read()
            else:
                with open(args.file) as fh:
                    text = fh.read()
        elif args.hex:
            text = " ".join(args.hex)
        else:
            text = sys.stdin.read()
        result = decode_text(text, key)
    except (ValueError, OSError, UnicodeDecodeError) as e:
        sys.stderr.write("mbus-decode: %s\n" % (str(e).splitlines() or ["error"])[0])
        return 1
    except Exception as e:  # never a traceback
        sys.stderr.write("mbus-decode: %s: %s\n" % (type(e).__name__, e))
        return 1
    try:
        json.dump(result, sys.stdout, indent=None if args.compact else 2, ensure_ascii=False,
                  allow_nan=False)  # strict JSON: _num() has turned NaN and inf into text
        sys.stdout.write("\n")
        sys.stdout.flush()
    except BrokenPipeError:  # e.g. piped into head
        try:
            sys.stdout = None
        finally:
            return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
