# Captured traffic as people have it -> the hex of its frames: libmbus's `-d` output
# ("[2024-05-01 12:00:00] RECV (030): 68 ..."), mbus-slave's own --trace lines
# ("SEND (030): 68 ...   [127.0.0.1:51234]"), or plain hex with comments and line breaks.

_MARKERS = ("SEND (", "RECV (")


def _frame_part(line):
    """The hex after 'SEND (nnn):' / 'RECV (nnn):' in a trace line, or None."""
    for m in _MARKERS:
        at = line.find(m)
        if at >= 0:
            colon = line.find(":", at)
            if colon < 0:
                return None
            rest = line[colon + 1:]
            peer = rest.find("[")  # a TCP client after the frame
            return rest if peer < 0 else rest[:peer]
    return None


def _uncomment(line):
    for mark in ("#", "//", ";"):
        at = line.find(mark)
        if at >= 0:
            line = line[:at]
    return line


def capture_hex(text):
    """The hex of the frames in a capture. A text with trace lines (SEND/RECV) gives the
    frames of those lines only, in both directions, and ignores every other line (a tool's
    XML, log lines); otherwise every line is hex, after `#`, `//` or `;` comments."""
    lines = text.replace("\r", "\n").split("\n")
    traced = []
    for line in lines:
        part = _frame_part(line)
        if part is not None:
            traced.append(part)
    if traced:
        return "\n".join(traced)
    return "\n".join(_uncomment(line) for line in lines)


def is_reply(frame):
    """A long frame a meter sent (C field without the PRM bit: RSP_UD 08, with ACD/DFC)."""
    return len(frame) >= 9 and frame[0] == 0x68 and not frame[4] & 0x40
