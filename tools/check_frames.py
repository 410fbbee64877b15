# mbus-check: the frames a master sends, what a reply must look like (EN 13757-2 frame
# rules, each problem in words), and a telegram as the checks see it (EN 13757-3).
from mbus_core.codec import datatypes as dt
from mbus_core import frame as F
from mbus_core.codec import frame_build
from mbus_core.codec import records as R
from mbus_core.codec import vif as vt
from mbus_core.meter import manufacturer_text
from mbus_core.slave import BAUD_RATES
from mbus_tools.check_io import frame_start, hexs

SND_NKE = 0x40
CI_RESET = 0x50
CI_DATA_SEND = 0x51
CI_SELECT = 0x52
CI_SELECT_MSB = 0x56
CI_BAUD_FIRST = 0xB8
CI_ERROR = 0x70
DATA_CIS = (0x72, 0x7A, 0x78, 0x73)


# -- requests --------------------------------------------------------------------------
def snd_nke(a):
    return frame_build.build(F.SHORT, SND_NKE, a)


def req_ud2(a, fcb):
    return frame_build.build(F.SHORT, 0x7B if fcb else 0x5B, a)


def snd_ud(a, ci, data=b"", fcb=0):
    return frame_build.build(F.LONG, 0x73 if fcb else 0x53, a, ci, data)


def baud_switch(a, rate):
    return snd_ud(a, CI_BAUD_FIRST + BAUD_RATES.index(rate))


def set_address(a, new):
    return snd_ud(a, CI_DATA_SEND, bytes((0x01, 0x7A, new)))


def bad_checksum(frame):
    """The same frame with its checksum off by one."""
    out = bytearray(frame)
    out[-2] = (out[-2] + 1) & 0xFF
    return bytes(out)


class Secondary:
    """A secondary address: ID digits (F: nibble wildcard), manufacturer code, version and
    medium (0xFFFF / 0xFF: wildcard), fabrication number digits (enhanced selection)."""

    def __init__(self, ident, manufacturer=0xFFFF, version=0xFF, medium=0xFF, fab=None):
        self.ident = ident
        self.manufacturer = manufacturer
        self.version = version
        self.medium = medium
        self.fab = fab

    @classmethod
    def parse(cls, text):
        """8 ID digits, or 16 hex digits as libmbus writes them: ID, manufacturer (as on
        the wire, low byte first), version, medium."""
        t = text.strip().upper()
        if len(t) == 8 and all(c in "0123456789F" for c in t):
            return cls(t)
        if len(t) == 16 and all(c in "0123456789F" for c in t[:8]):
            try:
                rest = bytes.fromhex(t[8:])
            except ValueError:
                rest = None
            if rest is not None:
                return cls(t[:8], rest[0] | rest[1] << 8, rest[2], rest[3])
        raise ValueError("want 8 ID digits (F as wildcard) or 16 hex digits "
                         "(ID, manufacturer, version, medium), got %r" % text)

    def like(self, **changes):
        out = Secondary(self.ident, self.manufacturer, self.version, self.medium, self.fab)
        for k, v in changes.items():
            setattr(out, k, v)
        return out

    def data(self, msb_first=False):
        """The selection's data field (CI 52 order; CI 56 select: most significant first)."""
        ident = bytes.fromhex(self.ident)
        man = bytes((self.manufacturer >> 8, self.manufacturer & 0xFF))
        if not msb_first:
            ident, man = ident[::-1], man[::-1]
        out = ident + man + bytes((self.version, self.medium))
        if self.fab is not None:
            out += b"\x0c\x78" + bytes.fromhex(self.fab)[::-1]
        return out

    def text(self):
        parts = ["ID " + self.ident]
        if self.manufacturer != 0xFFFF:
            parts.append(manufacturer_text(self.manufacturer))
        if self.version != 0xFF:
            parts.append("version %d" % self.version)
        if self.medium != 0xFF:
            parts.append("medium %02X (%s)" % (self.medium, vt.medium_name(self.medium)))
        if self.fab is not None:
            parts.append("fabrication number %s" % self.fab)
        return ", ".join(parts)


def select(sec, ci=CI_SELECT, msb_first=False):
    return snd_ud(253, ci, sec.data(msb_first))


# -- replies ---------------------------------------------------------------------------
def check_reply(data, want_addr=None):
    """(kind, frame bytes, problems, intact) of what came back: kind None (nothing), "ack",
    "long", "short" or "garbage"; problems in words, for link.frame; intact: the frame is
    whole with the right checksum (a wrong address or bytes before or behind it leave it
    usable: a master that resyncs on a start byte gets it)."""
    if not data:
        return None, b"", [], False
    start = frame_start(data)
    if start < 0:
        return "garbage", b"", ["not a frame: starts with %02X (a frame starts with E5, "
                                "10 or 68)" % data[0]], False
    lead, data = data[:start], data[start:]
    b = data[0]
    if b == 0xE5:
        kind, frame, problems, intact = "ack", data[:1], [], True
    elif b == 0x68:
        kind = "long"
        frame, problems = _check_long(data)
        intact = not problems
        if intact and want_addr is not None and frame[5] != want_addr:
            problems.append("reply to address %d carries address %d" % (want_addr, frame[5]))
    else:
        kind, frame, problems, intact = "short", data[:5], _check_short(data), False
    if lead:   # noise on the line (link.frame says what it does to a master)
        problems.insert(0, "%d byte(s) before the frame's start: %s" % (len(lead),
                                                                          hexs(lead)))
    if len(data) > len(frame):
        problems.append("%d byte(s) after the frame's end: %s"
                        % (len(data) - len(frame), hexs(data[len(frame):])))
    return kind, frame, problems, intact


def _check_long(d):
    """(the frame's bytes, what is wrong with it)."""
    if len(d) < 6:
        return d, ["incomplete frame: %d bytes (68 L L 68 C A CI ... CS 16)" % len(d)]
    length = d[1]
    if d[2] != length:
        return d, ["L fields differ: %02X and %02X" % (length, d[2])]
    problems = []
    if d[3] != 0x68:
        problems.append("second start byte %02X, not 68" % d[3])
    if length < 3:
        return d, problems + ["L field %d < 3" % length]
    size = length + 6
    if len(d) < size:
        return d, problems + ["incomplete frame: %d of %d bytes (L = %d)"
                              % (len(d), size, length)]
    frame = d[:size]
    cs = sum(frame[4:4 + length]) & 0xFF
    if frame[4 + length] != cs:
        problems.append("checksum %02X, the bytes sum to %02X" % (frame[4 + length], cs))
    if frame[size - 1] != 0x16:
        problems.append("stop byte %02X, not 16" % frame[size - 1])
    c = frame[4]
    if c & 0x40:
        problems.append("C field %02X is a master's (PRM bit set)" % c)
    elif c & 0x0F != 0x08:
        problems.append("C field %02X is not RSP_UD (x8)" % c)
    return frame, problems


def _check_short(d):
    if len(d) < 5:
        return ["incomplete frame: %d of 5 bytes" % len(d)]
    problems = ["a short frame (10 C A CS 16) is no reply of a slave"]
    if d[3] != (d[1] + d[2]) & 0xFF:
        problems.append("checksum %02X, the bytes sum to %02X" % (d[3], (d[1] + d[2]) & 0xFF))
    if d[4] != 0x16:
        problems.append("stop byte %02X, not 16" % d[4])
    return problems


# -- telegrams -------------------------------------------------------------------------
class Telegram:
    """An RSP_UD as the application layer sees it: CI, header, decoded records (or the
    decoder's error), and what identifies its place in a multi-telegram readout."""

    def __init__(self, frame, exchange=None):
        self.raw = bytes(frame)
        self.x = exchange
        self.a = frame[5]
        self.ci = frame[6]
        self.user = self.raw[6:-2]
        self.decoded = None
        self.error = None
        try:
            self.decoded = R.decode_user_data(self.user)
        except (ValueError, IndexError) as e:   # DecodeError is a ValueError
            self.error = str(e) or type(e).__name__
        self.records = self.decoded["records"] if self.decoded else []
        self.header = self.decoded.get("header") if self.decoded else None

    @property
    def app_error(self):
        return self.decoded.get("error") if self.decoded else None

    @property
    def more(self):
        return any(r.special == "more" for r in self.records)

    @property
    def access(self):
        return self.header.get("access") if self.header else None

    @property
    def status(self):
        return self.header.get("status") if self.header else None

    def heads(self):
        """What makes two telegrams the same place in a readout: CI and record heads."""
        if self.ci == CI_ERROR:
            return ("error", self.app_error)
        return (self.ci,) + tuple(r.head for r in self.records)

    def identity(self):
        """(ID digits, manufacturer, version, medium) of a CI 72 header; CI 73 has ID and
        medium; None for 7A/78."""
        h = self.header
        if not h or "id" not in h:
            return None
        return (h["id"], h.get("manufacturer_code"), h.get("version"), h.get("medium"))

    def fabrication(self):
        """The fabrication number (a BCD8 record with VIF 78), as 8 digits, or None."""
        for r in self.records:
            if r.vif is not None and r.vif & 0x7F == 0x78 and r.code == 0x0C:
                return dt.bcd_hex(r.data)
        return None


def position(t, readout):
    """The index of telegram t in readout (a list of Telegram): the one with the same heads,
    and where several share them (a meter of like records) the one with most equal data.
    None when none matches or it stays ambiguous."""
    cands = [i for i, r in enumerate(readout) if r.heads() == t.heads()]
    if len(cands) <= 1:
        return cands[0] if cands else None
    scores = [(sum(a.data == b.data for a, b in zip(t.records, readout[i].records)), i)
              for i in cands]
    scores.sort(reverse=True)
    return scores[0][1] if scores[0][0] > scores[1][0] else None
