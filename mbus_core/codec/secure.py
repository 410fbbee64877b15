# Decrypting what an OMS security profile A/B meter sent (mode 5 and mode 7; see
# mbus_core/security.py for the layouts and their sources). Host side (the decoder, tests):
# allocates freely. Every way a telegram can fail raises SecurityError with one line that
# says what is wrong.
from mbus_core import security as S


class SecurityError(ValueError):
    pass


def _afl(app):
    """(AFL fields, offset of the TPL) of application data starting with CI 90."""
    if len(app) < 4:
        raise SecurityError("AFL (CI 90) too short")
    n = app[1]
    end = 2 + n
    if end > len(app):
        raise SecurityError("AFL length %d runs past the data" % n)
    fcl = app[2] | (app[3] << 8)
    p = 4
    info = {"fcl": fcl}
    if fcl & 0x2000:        # MCLP
        info["mcl"] = app[p]
        p += 1
    if fcl & 0x0200:        # KIP
        info["ki"] = bytes(app[p:p + 2])
        p += 2
    if fcl & 0x0800:        # MCRP
        info["mcr"] = bytes(app[p:p + 4])
        p += 4
    if fcl & 0x0400:        # MACP: AT 5 = 8 bytes (the only length OMS profile B uses)
        at = info.get("mcl", 0) & 0x0F
        size = {4: 4, 5: 8, 6: 12, 7: 16}.get(at)
        if size is None:
            raise SecurityError("AFL authentication type %d is not supported" % at)
        info["mac"] = bytes(app[p:p + size])
        p += size
    if fcl & 0x1000:        # MLP
        p += 2
    if p > end:
        raise SecurityError("AFL fields run past AFL.L")
    return info, end


def decrypt_user_data(app, key, aes, aes_decrypt, last_counters=None):
    """The application data `app` (CI onwards) with its encrypted part decrypted:
    (clear, info). `clear` is CI 72 + the 12-byte header + the records (the 2F 2F check
    bytes removed, the unencrypted tail kept); info = {"mode", "blocks", "counter"}.
    `last_counters` (a dict, meter ID bytes -> last mode 7 counter) rejects a replayed or
    falling message counter and is updated. Raises SecurityError."""
    app = bytes(app)
    key = S.parse_key(key)
    afl = None
    tpl_at = 0
    if app and app[0] == S.CI_AFL:
        afl, tpl_at = _afl(app)
    tpl = app[tpl_at:]
    if not tpl or tpl[0] != S.CI_LONG or len(tpl) < 13:
        raise SecurityError("no CI 72 long header to decrypt (CI %02X)"
                            % (tpl[0] if tpl else 0))
    cfg = tpl[11] | (tpl[12] << 8)
    mode = (cfg >> 8) & 0x1F
    blocks = (cfg >> 4) & 0x0F
    info = {"mode": mode, "blocks": blocks}
    if mode == 0:
        raise SecurityError("the telegram is not encrypted (security mode 0) although a "
                            "key was given")
    if mode not in (S.MODE_5, S.MODE_7):
        raise SecurityError("security mode %d is not supported (5 and 7 are)" % mode)
    data_at = 13
    ident = tpl[1:5]
    if mode == S.MODE_7:
        if afl is None or "mcr" not in afl or "mac" not in afl:
            raise SecurityError("mode 7 without an AFL carrying message counter and MAC")
        data_at = 14        # the configuration field extension
        cfe = tpl[13] if len(tpl) > 13 else 0
        if (cfe >> 4) & 0x03 != 1:
            raise SecurityError("mode 7 key derivation %d is not supported (KDF-A is)"
                                % ((cfe >> 4) & 0x03))
        mcr = afl["mcr"]
        counter = mcr[0] | (mcr[1] << 8) | (mcr[2] << 16) | (mcr[3] << 24)
        info["counter"] = counter
        kmac = S.kdf_a(aes, key, S.DC_KMAC, mcr, ident)
        c = S.Cmac(aes(kmac))
        c.start()
        c.update(app, 4, 5)          # MCL
        if "ki" in afl:
            c.update(afl["ki"])
        c.update(mcr)
        c.update(tpl)
        mac = bytes(c.finish())[:len(afl["mac"])]
        if mac != afl["mac"]:
            raise SecurityError("bad MAC: wrong key, or the telegram was altered (MAC %s, "
                                "computed %s)" % (afl["mac"].hex().upper(), mac.hex().upper()))
        if last_counters is not None:
            last = last_counters.get(bytes(ident))
            if last is not None and counter <= last:
                raise SecurityError("message counter %d does not rise (last %d): a replayed "
                                    "or stale telegram" % (counter, last))
            last_counters[bytes(ident)] = counter
        dec = aes_decrypt(S.kdf_a(aes, key, S.DC_KENC, mcr, ident))
        iv = bytes(16)
    else:
        dec = aes_decrypt(key)
        iv = bytes(tpl[5:7]) + bytes(ident) + bytes(tpl[7:9]) + bytes([tpl[9]]) * 8
    data = tpl[data_at:]
    n = blocks * 16
    if blocks == 0 or n > len(data):
        raise SecurityError("the configuration field says %d encrypted blocks, the telegram "
                            "has %d bytes after the header" % (blocks, len(data)))
    if data[:2] == b"\x2F\x2F":
        raise SecurityError("the telegram claims security mode %d but its data is not "
                            "encrypted (2F 2F in clear)" % mode)
    plain = S.cbc_decrypt(dec, iv, data[:n])
    if plain[:2] != b"\x2F\x2F":
        what = "wrong key or corrupted ciphertext" if mode == S.MODE_5 else \
            "wrong encrypted-block count or corrupted ciphertext"
        raise SecurityError("%s: the decrypted data starts with %s, not 2F 2F"
                            % (what, plain[:2].hex().upper()))
    clear = bytes(tpl[:13]) + plain[2:] + data[n:]
    return clear, info
