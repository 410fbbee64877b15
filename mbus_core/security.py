# OMS security for wired M-Bus telegrams: security profile A (TPL security mode 5,
# AES-128-CBC with a persistent key) and profile B (mode 7: AES-128-CBC with an ephemeral
# key from the KDF, the AFL with message counter and a truncated AES-CMAC).
#
# Dependency-free: the port hands in an AES-128 *block function factory*,
# `aes(key) -> f`, where f(src, dst) encrypts the 16 bytes of src into dst (two
# different 16-byte bytearrays). mbus_ports.aes has one for MicroPython (cryptolib) and
# CPython (pycryptodome). Buffers are allocated once; mode 5 then encrypts without
# allocating. Mode 7 needs a cipher for each telegram's derived keys, and a cipher is an
# object: Security.prepare(), which a port calls after a reply went out, builds the next
# telegram's, so that the request path allocates nothing in either mode.
#
# Sources (the standards themselves are not public; every layout below is checked against
# published worked examples in tests/core/test_security.py):
# - configuration field (TPL, 2 bytes after the status byte, least significant first),
#   OMS Specification Vol. 2, as quoted in tudborg/exmbus lib/exmbus/parser/tpl/
#   configuration_field.ex: bit 15 B (bidirectional), 14 A (accessibility), 13 S
#   (synchronous) - "for the communication on wired M-Bus, the bits B, A and S shall be set
#   to 0"; bits 12..8 the security mode; bits 7..4 the number of encrypted 16-byte blocks;
#   bits 3..2 CC content of message (00 standard data); bit 1 R (repeater access) and bit 0
#   H (hop count): "a meter shall always set H = 0b and R = 0b". OMS Vol. 2 Annex N.5.4
#   (wired M-Bus, mode 5, one block) has 10 05 = 0x0510.
# - mode 5 IV: manufacturer (2), ID (4), version, medium, then the access number 8 times
#   (EN 13757-7; OMS Vol. 2 9.4.4); plaintext starts with 2F 2F, filler 2F.
# - mode 7: configuration field 0x0700 | N << 4 and the configuration field extension 10h
#   (KDF-A, key ID 0), IV zero; KDF-A: K = CMAC(MK, DC || MC(4, LSB first) || ID(4, as
#   sent) || 07h x 7), DC 00h for Kenc and 01h for Kmac (meter to partner); AFL CI 90h,
#   AFL.L 0Fh, FCL 2C00h (MCL, MCR and MAC present), MCL 25h (counter present, AT 5:
#   CMAC truncated to 8 bytes), MAC = CMAC(Kmac, MCL || MCR || the TPL from its CI to the
#   end) truncated to 8 bytes. CEN/TR 17167:2018 F.3, as quoted in tudborg/exmbus
#   test/parser/afl/afl_example_test.exs.
# - AES-CMAC: RFC 4493 / NIST SP 800-38B.
try:
    from micropython import const
except ImportError:  # CPython
    def const(x):
        return x

MODE_NONE = const(0)
MODE_5 = const(5)
MODE_7 = const(7)
CI_AFL = const(0x90)
CI_LONG = const(0x72)
FILLER = const(0x2F)
MAX_BLOCKS = const(15)      # 4 bits of the configuration field
AFL_LEN = const(17)         # CI 90, AFL.L, FCL (2), MCL, MCR (4), MAC (8)
AFL_FCL = const(0x2C00)     # MCLP | MCRP | MACP
AFL_MCL = const(0x25)       # MCMP (message counter present) | AT 5 (CMAC, 8 bytes)
CFE_KDF_A = const(0x10)     # configuration field extension: KDF-A, key ID 0
DC_KENC = const(0x00)
DC_KMAC = const(0x01)
COUNTER_RESERVE = const(64)  # message counters persisted ahead of use (see Security)
COUNTER_EARLY = const(16)    # this few left: a port may move the bound on between frames


# The AES-128 block function factory a port provides (mbus_ports.aes registers its own on
# import), for meters built from a description: [factory, why there is none].
_AES = [None, "no AES-128 block function: the port provides one (import mbus_ports.aes)"]


def set_default_aes(factory, why=None):
    _AES[0] = factory
    if why:
        _AES[1] = why


def default_aes():
    """The registered AES-128 block function factory; ValueError saying what is missing
    when there is none."""
    if _AES[0] is None:
        raise ValueError(_AES[1])
    return _AES[0]


def parse_key(text):
    """16 bytes from 32 hex digits (spaces allowed)."""
    if isinstance(text, (bytes, bytearray)):
        key = bytes(text)
    else:
        t = "".join(str(text).split())
        if len(t) != 32:
            raise ValueError("an AES-128 key is 32 hex digits")
        try:
            key = bytes(int(t[i:i + 2], 16) for i in range(0, 32, 2))
        except ValueError:
            raise ValueError("an AES-128 key is 32 hex digits")
    if len(key) != 16:
        raise ValueError("an AES-128 key is 16 bytes")
    return key


def config_word(mode, blocks):
    """The TPL configuration field for `mode` with `blocks` encrypted blocks, as a
    wired M-Bus meter sends it: B, A, S, CC, R and H all 0 (see the sources above)."""
    return ((mode & 0x1F) << 8) | ((blocks & 0x0F) << 4)


def _shift1(src, dst):
    """dst = src << 1 (16 bytes, big-endian); returns the bit shifted out."""
    carry = 0
    i = 15
    while i >= 0:
        b = src[i]
        dst[i] = ((b << 1) & 0xFF) | carry
        carry = b >> 7
        i -= 1
    return carry


class Cmac:
    """AES-CMAC (RFC 4493, NIST SP 800-38B) over a block function; buffers preallocated."""

    def __init__(self, block):
        self.block = block
        self.k1 = bytearray(16)
        self.k2 = bytearray(16)
        self.x = bytearray(16)
        self.y = bytearray(16)
        self.mac = bytearray(16)
        self._n = 0    # set here: a new attribute in start() would allocate
        zero = bytearray(16)
        ell = bytearray(16)
        block(zero, ell)
        if _shift1(ell, self.k1):
            self.k1[15] ^= 0x87
        if _shift1(self.k1, self.k2):
            self.k2[15] ^= 0x87

    def start(self):
        x = self.x
        for i in range(16):
            x[i] = 0
        self._n = 0    # bytes pending in y (a block is only processed when more follows)

    def update(self, data, start=0, end=-1):
        if end < 0:
            end = len(data)
        y = self.y
        x = self.x
        n = self._n
        i = start
        while i < end:
            if n == 16:  # a full block and more data: CBC step
                for k in range(16):
                    y[k] ^= x[k]
                self.block(y, x)
                n = 0
            y[n] = data[i]
            n += 1
            i += 1
        self._n = n

    def update_byte(self, b):
        y = self.y
        if self._n == 16:
            x = self.x
            for k in range(16):
                y[k] ^= x[k]
            self.block(y, x)
            self._n = 0
        y[self._n] = b & 0xFF
        self._n += 1

    def finish(self):
        """The 16-byte tag in self.mac."""
        y = self.y
        n = self._n
        if n == 16:
            k = self.k1
        else:
            k = self.k2
            y[n] = 0x80
            for i in range(n + 1, 16):
                y[i] = 0
        x = self.x
        for i in range(16):
            y[i] ^= x[i] ^ k[i]
        self.block(y, self.mac)
        return self.mac


def cmac(block, data):
    """The 16-byte AES-CMAC of `data` (bytes) under the block function `block`."""
    c = Cmac(block)
    c.start()
    c.update(data)
    return bytes(c.finish())


def kdf_a(aes, master, dc, counter4, id4):
    """OMS KDF-A: CMAC(MK, DC || MC || ID || 07h x 7) -> 16 bytes. counter4 and id4 are
    the 4 bytes as sent (least significant first)."""
    msg = bytearray(16)
    _kdf_message(msg, dc, counter4, id4)
    return cmac(aes(master), msg)


def _kdf_message(msg, dc, counter4, id4):
    """KDF-A's 16-byte input into msg: DC || MC || ID || 07h x 7."""
    msg[0] = dc
    for i in range(4):
        msg[1 + i] = counter4[i]
        msg[5 + i] = id4[i]
    for i in range(9, 16):
        msg[i] = 0x07


def cbc_encrypt(block, iv, buf, start, nblocks, tmp, out):
    """Encrypt nblocks 16-byte blocks at buf[start:] in place, AES-CBC with `iv`; tmp and
    out are 16-byte scratch bytearrays (nothing is allocated)."""
    p = start
    prev = -1
    for _ in range(nblocks):
        if prev < 0:
            for k in range(16):
                tmp[k] = buf[p + k] ^ iv[k]
        else:
            for k in range(16):
                tmp[k] = buf[p + k] ^ buf[prev + k]
        block(tmp, out)
        for k in range(16):
            buf[p + k] = out[k]
        prev = p
        p += 16


def cbc_decrypt(decrypt_block, iv, data):
    """AES-CBC decryption of `data` (a multiple of 16 bytes) with a *decrypting* block
    function; host side (the decoder), allocates freely."""
    out = bytearray(len(data))
    prev = bytes(iv)
    src = bytearray(16)
    dst = bytearray(16)
    for p in range(0, len(data), 16):
        for k in range(16):
            src[k] = data[p + k]
        decrypt_block(src, dst)
        for k in range(16):
            out[p + k] = dst[k] ^ prev[k]
        prev = bytes(src)
    return bytes(out)


def _byte_sum(buf, start, end):
    s = 0
    i = start
    while i < end:
        s += buf[i]
        i += 1
    return s & 0xFF


class Security:
    """How one meter encrypts its RSP_UD telegrams (CI 72 only).

    mode 5: Security(5, key, aes); mode 7: Security(7, key, aes, counter=N).
    Mode 7's message counter rises with every telegram written. `reserve`, when set, is
    called with a new upper bound before the counter passes the last one handed out, so
    that a port can persist it first: after a crash the meter resumes at that bound and
    the counter never goes backwards (a few values are skipped, none repeated)."""

    def __init__(self, mode, key, aes, counter=0, reserve=None, clear=0):
        if mode not in (MODE_5, MODE_7):
            raise ValueError("security mode must be 5 or 7")
        self.mode = mode
        self.key = parse_key(key)
        self.aes = aes
        self.block = aes(self.key)    # mode 7: the KDF's cipher
        self.iv = bytearray(16)
        self.tmp = bytearray(16)
        self.out = bytearray(16)
        self.mcr = bytearray(4)       # message counter as sent, least significant first
        self.set_counter(counter)
        self._limit = bytearray(4)    # the bound reserved ahead of use, as the counter
        self._reserved = False
        self._left = 0                # counters left before the reserved bound
        self.reserve_due = False      # few left: reserve_early() between frames
        self.reserve = reserve
        if mode == MODE_7:
            self._kdf = Cmac(self.block)
            self._kdf_msg = bytearray(16)
            self._kenc = bytearray(16)
            self._kmac = bytearray(16)
            self._ready = bytearray(8)    # counter and ID the prepared ciphers are for
            self._enc = None              # prepared: Kenc's block function
            self._mac = None              # and a Cmac under Kmac
        # the meter's last `clear` records go unencrypted after the encrypted blocks of the
        # last telegram of a readout (an "unencrypted tail", as in OMS Vol. 2 N.5.4)
        self.clear = clear
        # faults (ports/faults.py): a telegram spoiled on purpose, once each when set
        self.fault = None
        self.fault_by = None

    # -- the message counter (mode 7) -----------------------------------------------
    def set_counter(self, n):
        if not 0 <= n <= 0xFFFFFFFF:
            raise ValueError("message counter out of range")
        for i in range(4):
            self.mcr[i] = (n >> (8 * i)) & 0xFF

    @property
    def counter(self):
        """The counter of the last telegram (an int up to 2^32: host side only; the
        telegram path works on the bytes)."""
        m = self.mcr
        return m[0] | (m[1] << 8) | (m[2] << 16) | (m[3] << 24)

    @property
    def limit(self):
        """The reserved bound (host side), -1 before the first reservation."""
        if not self._reserved:
            return -1
        m = self._limit
        return m[0] | (m[1] << 8) | (m[2] << 16) | (m[3] << 24)

    def _step_counter(self, step):
        """The counter bytes plus 1 (step 1) or minus 1 (step FFh), modulo 2^32."""
        m = self.mcr
        i = 0
        while i < 4:
            v = m[i] + step
            m[i] = v & 0xFF
            if (v >> 8) == (step >> 7):    # no carry (up) / no borrow (down) out of it
                break
            i += 1

    def _next_counter(self):
        self._step_counter(1)
        if self.reserve is None:
            return
        if self._reserved:
            self._left -= 1
            if self._left > 0:
                if self._left <= COUNTER_EARLY:
                    self.reserve_due = True
                return
        self._reserve_ahead()   # the bound is reached (or none yet): before this telegram

    def reserve_early(self):
        """A port, between frames, once reserve_due is set: persist a bound a full
        COUNTER_RESERVE ahead now, so that the request path never has to."""
        if self.reserve_due:
            self._reserve_ahead()

    def _reserve_ahead(self):
        m = self.mcr
        lim = self._limit
        carry = COUNTER_RESERVE
        for i in range(4):
            v = m[i] + carry
            lim[i] = v & 0xFF
            carry = v >> 8
        self._left = COUNTER_RESERVE
        if carry:          # the bound would wrap: reserve up to the last counter
            for i in range(4):
                lim[i] = 0xFF
            self._left = 0xFF - m[0]   # fewer than COUNTER_RESERVE left: m is FFFFFFxx
        self._reserved = True
        self.reserve_due = False
        self.reserve(self.limit)

    # -- the derived keys (mode 7) ---------------------------------------------------
    def _derive(self, dc, mcr, id4, out):
        """KDF-A (see kdf_a) under the meter's key into `out`, allocating nothing."""
        msg = self._kdf_msg
        _kdf_message(msg, dc, mcr, id4)
        c = self._kdf
        c.start()
        c.update(msg)
        mac = c.finish()
        for i in range(16):
            out[i] = mac[i]

    def _is_ready(self, mcr, id4):
        r = self._ready
        if self._enc is None:
            return False
        for i in range(4):
            if r[i] != mcr[i] or r[4 + i] != id4[i]:
                return False
        return True

    def prepare(self, meter):
        """Mode 7: build the ciphers of the next telegram's keys now (a port calls this
        after a reply went out; the request path then allocates nothing). Does nothing
        when they are ready, or in mode 5."""
        if self.mode != MODE_7:
            return
        r = self._ready
        m = self.mcr
        carry = 1
        for i in range(4):        # the next counter, as _next_counter() will make it
            v = m[i] + carry
            r[i] = v & 0xFF
            carry = v >> 8
        ident = meter.id_bytes
        for i in range(4):
            r[4 + i] = ident[i]
        if self._is_ready(r, ident):
            return
        self._enc = None
        self._derive(DC_KENC, r, ident, self._kenc)
        self._derive(DC_KMAC, r, ident, self._kmac)
        enc = self.aes(bytes(self._kenc))
        self._mac = Cmac(self.aes(bytes(self._kmac)))
        self._enc = enc

    def _ciphers(self, meter, key):
        """Kenc's block function for the current counter, Kmac's Cmac in self._mac: the
        prepared ones, else built now (the first telegram, a fault's key or counter)."""
        ident = meter.id_bytes
        if key is self.key and self._is_ready(self.mcr, ident):
            enc = self._enc
            self._enc = None      # used: prepare() makes the next telegram's
            return enc
        kmac = kdf_a(self.aes, key, DC_KMAC, self.mcr, ident)
        self._mac = Cmac(self.aes(kmac))
        return self.aes(kdf_a(self.aes, key, DC_KENC, self.mcr, ident))

    # -- layout ---------------------------------------------------------------------
    def header_extra(self):
        """Bytes before the records besides the 12-byte CI 72 header: AFL, CFE, 2F 2F."""
        if self.mode == MODE_7:
            return AFL_LEN + 1 + 2
        return 2

    def record_room(self, room):
        """Record bytes a telegram holds when `room` bytes follow the CI 72 header: the
        encrypted part is whole blocks (at most 15), starting with 2F 2F."""
        if self.mode == MODE_7:
            room -= AFL_LEN + 1
        blocks = room // 16
        if blocks > MAX_BLOCKS:
            blocks = MAX_BLOCKS
        return blocks * 16 - 2

    # -- writing --------------------------------------------------------------------
    def write(self, meter, buf, pos, access, records, tail=b""):
        """Write the encrypted application data (CI onwards) of a telegram carrying
        `records` (then `tail` in clear) at buf[pos:]; returns its length; meter.last_sum
        is its byte sum."""
        mode = self.mode
        t = pos + AFL_LEN if mode == MODE_7 else pos
        meter._write_variable(buf, t, CI_LONG, access, b"", 0)   # CI and the 12-byte header
        d = t + 13
        if mode == MODE_7:
            buf[d] = CFE_KDF_A
            d += 1
        n = len(records)
        blocks = (n + 2 + 15) // 16
        buf[d] = FILLER
        buf[d + 1] = FILLER
        buf[d + 2:d + 2 + n] = records
        end = d + blocks * 16
        i = d + 2 + n
        while i < end:
            buf[i] = FILLER
            i += 1
        cfg = config_word(mode, blocks)
        fault = self.fault
        if fault == "blocks":       # a block count that does not match the data
            cfg = config_word(mode, blocks + 1 if blocks < MAX_BLOCKS else blocks - 1)
        buf[t + 11] = cfg & 0xFF
        buf[t + 12] = cfg >> 8
        iv = self.iv
        if mode == MODE_5:
            ident = meter.id_bytes
            man = meter.manufacturer
            iv[0] = man & 0xFF
            iv[1] = man >> 8
            for k in range(4):
                iv[2 + k] = ident[k]
            iv[6] = meter.version
            iv[7] = meter.medium
            a = access & 0xFF
            for k in range(8, 16):
                iv[k] = a
            block = self.block
        else:
            for k in range(16):
                iv[k] = 0
            if fault == "rewind":   # a counter below the last telegram's, once
                self._step_counter(0xFF)
            elif fault != "replay":   # "replay": the counter of the last telegram again
                self._next_counter()
        key = self.key
        if fault == "key":          # a meter that encrypts (and MACs) with another key
            wrong = bytearray(key)
            wrong[0] ^= 0xFF
            key = bytes(wrong)
            if mode == MODE_5:
                block = self.aes(key)
        if mode == MODE_7:
            block = self._ciphers(meter, key)
        if fault != "plain":        # "plain": an unencrypted reply that claims mode 5/7
            cbc_encrypt(block, iv, buf, d, blocks, self.tmp, self.out)
        n = len(tail)
        if n:
            buf[end:end + n] = tail
            end += n
        if mode == MODE_7:
            self._write_afl(buf, pos, t, end, self._mac)
        if fault == "cipher":       # corrupted ciphertext (after the MAC was computed)
            buf[d] ^= 0x01
        elif fault == "mac" and mode == MODE_7:
            buf[pos + 16] ^= 0x01
        if fault == "rewind":
            self._step_counter(1)   # back where it was: the next telegram goes on from it
        self.fault = None
        meter.last_sum = _byte_sum(buf, pos, end)
        return end - pos

    def _write_afl(self, buf, pos, t, end, c):
        buf[pos] = CI_AFL
        buf[pos + 1] = AFL_LEN - 2
        buf[pos + 2] = AFL_FCL & 0xFF
        buf[pos + 3] = AFL_FCL >> 8
        buf[pos + 4] = AFL_MCL
        mcr = self.mcr
        for k in range(4):
            buf[pos + 5 + k] = mcr[k]
        c.start()
        c.update(buf, pos + 4, pos + 9)     # MCL, MCR
        c.update(buf, t, end)               # the TPL from its CI to the end
        mac = c.finish()
        for k in range(8):
            buf[pos + 9 + k] = mac[k]
