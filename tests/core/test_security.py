# OMS security (modes 5 and 7) on both runtimes: the AES block function of the port
# (cryptolib on MicroPython, pycryptodome on CPython), AES-CMAC, the KDF and encrypted
# telegrams, checked against published vectors:
# - FIPS-197 Appendix B and C.1 (AES-128);
# - RFC 4493 section 4 (= NIST SP 800-38B D.1, AES-128): subkeys and four CMACs;
# - OMS Specification Vol. 2 Annex N.5.4 "M-Bus example with partial encryption" (wired
#   M-Bus, mode 5), as quoted in tudborg/exmbus test/spec/oms_vol2_annex_n_test.exs;
# - CEN/TR 17167:2018 F.3 "Security mode 7 example" (AFL, KDF session keys, MAC), as quoted
#   in tudborg/exmbus test/parser/afl/afl_example_test.exs.
from mbus_core import security as S
from mbus_core.bus import Bus
from mbus_core.meter import Meter
from mbus_core.codec import secure
from mbus_ports.aes import aes128, aes128_decrypt
from mbus_testutil import h, hexs, raises, long, many_records_meter

K_FIPS = h("000102030405060708090A0B0C0D0E0F")
K_RFC = h("2B7E151628AED2A6ABF7158809CF4F3C")
M64 = h("6BC1BEE22E409F96E93D7E117393172A AE2D8A571E03AC9C9EB76FAC45AF8E51"
        "30C81C46A35CE411E5FBC1191A0A52EF F69F2445DF4F9B17AD2B417BE66C3710")
K_OMS = K_FIPS


def _enc(key, pt):
    out = bytearray(16)
    aes128(key)(bytearray(pt), out)
    return bytes(out)


def _dec(key, ct):
    out = bytearray(16)
    aes128_decrypt(key)(bytearray(ct), out)
    return bytes(out)


def test_fips197_aes128():
    # C.1: AES-128 example vector; Appendix B: the cipher example
    assert _enc(K_FIPS, h("00112233445566778899AABBCCDDEEFF")) == \
        h("69C4E0D86A7B0430D8CDB78070B4C55A")
    assert _dec(K_FIPS, h("69C4E0D86A7B0430D8CDB78070B4C55A")) == \
        h("00112233445566778899AABBCCDDEEFF")
    assert _enc(K_RFC, h("3243F6A8885A308D313198A2E0370734")) == \
        h("3925841D02DC09FBDC118597196A0B32")


def test_rfc4493_subkeys():
    c = S.Cmac(aes128(K_RFC))
    assert bytes(c.k1) == h("FBEED618357133667C85E08F7236A8DE")
    assert bytes(c.k2) == h("F7DDAC306AE266CCF90BC11EE46D513B")


def test_rfc4493_cmac():
    blk = aes128(K_RFC)
    assert S.cmac(blk, b"") == h("BB1D6929E95937287FA37D129B756746")
    assert S.cmac(blk, M64[:16]) == h("070A16B46B4D4144F79BDD9DD04A287C")
    assert S.cmac(blk, M64[:40]) == h("DFA66747DE9AE63030CA32611497C827")
    assert S.cmac(blk, M64) == h("51F0BEBF7E3B9D92FC49741779363CFE")


def test_cmac_in_pieces_and_bytes_equals_whole():
    c = S.Cmac(aes128(K_RFC))
    c.start()
    c.update(M64, 0, 7)
    c.update(M64, 7, 32)
    for b in M64[32:40]:
        c.update_byte(b)
    assert bytes(c.finish()) == h("DFA66747DE9AE63030CA32611497C827")


def test_parse_key():
    assert S.parse_key("00010203 04050607 08090A0B 0C0D0E0F") == K_FIPS
    assert "32 hex" in raises(ValueError, S.parse_key, "0011")
    assert "32 hex" in raises(ValueError, S.parse_key, "zz" * 16)


def test_config_word_wired_bits():
    # mode in bits 8..12, blocks in 4..7; B, A, S, CC, R, H zero on wired M-Bus
    assert S.config_word(5, 1) == 0x0510      # OMS Vol. 2 Annex N.5.4: "10 05"
    assert S.config_word(7, 2) == 0x0720      # CEN/TR 17167 F.3: "20 07"
    assert S.config_word(5, 15) == 0x05F0


# -- OMS Vol. 2 Annex N.5.4: wired M-Bus, mode 5 -----------------------------------------
N54_TPL = h("72 88776655 9344 55 08 00 04 1005")
N54_ENC = h("00DFE2A782146D1513581CD2F83F3904")
N54_TAIL = h("0CFD10785634120C7844332211")
N54_RECORDS = [h("0B6E341200"), h("426CFE04"), h("4B6E563402")]  # 1234 HCA; 2007-04-30; 23456


def _n54_meter():
    return Meter(id=55667788, manufacturer="QDS", version=0x55, medium=0x08, status=0x04,
                 address=1, records=N54_RECORDS, security=S.Security(5, K_OMS, aes128))


def test_oms_n54_mode5_telegram_is_the_published_one():
    m = _n54_meter()
    m.refresh()
    buf = bytearray(260)
    n = m.write_telegram(0, buf, 0, 0x00)
    assert hexs(buf[:n]) == hexs(N54_TPL + N54_ENC)
    assert m.last_sum == sum(buf[:n]) & 0xFF


def test_oms_n54_published_frame_decrypts():
    app = N54_TPL + N54_ENC + N54_TAIL
    clear, info = secure.decrypt_user_data(app, K_OMS, aes128, aes128_decrypt)
    assert info == {"mode": 5, "blocks": 1}
    assert clear == N54_TPL + b"".join(N54_RECORDS) + N54_TAIL
    wrong = bytearray(K_OMS)
    wrong[15] ^= 1
    msg = raises(secure.SecurityError, secure.decrypt_user_data, app, bytes(wrong), aes128,
                 aes128_decrypt)
    assert "wrong key" in msg and "not 2F 2F" in msg


# -- CEN/TR 17167:2018 F.3: mode 7 -------------------------------------------------------
F3_AFL = h("900F002C25 B30A0000 AF5D74DF73A600D9")
F3_TPL = h("72 78563412 9315 33 03 75 00 2007 10")
F3_ENC = h("9058475F4BC91DF878B80A1B0F98B629024AAC727942BFC549233C0140829B93")
F3_RECORDS = [h("0C1427048502"), h("046D32371F15"), h("02FD170000")]


def test_cen_f3_session_keys():
    mcr = F3_AFL[5:9]
    ident = F3_TPL[1:5]
    assert S.kdf_a(aes128, K_OMS, S.DC_KENC, mcr, ident) == h("ECCF39D475D730B8284FDFDC1995D52F")
    assert S.kdf_a(aes128, K_OMS, S.DC_KMAC, mcr, ident) == h("C9CD19FF5A9AAD5A6BBDA13BD2C4C7AD")


def _f3_meter(counter=0xAB2, reserve=None):
    return Meter(id=12345678, manufacturer="ELS", version=0x33, medium=0x03, address=1,
                 records=F3_RECORDS,
                 security=S.Security(7, K_OMS, aes128, counter=counter, reserve=reserve))


def test_cen_f3_mode7_telegram_is_the_published_one():
    m = _f3_meter()
    m.refresh()
    buf = bytearray(260)
    n = m.write_telegram(0, buf, 0, 0x75)
    assert hexs(buf[:n]) == hexs(F3_AFL + F3_TPL + F3_ENC)
    assert m.security.counter == 0xAB3
    assert m.last_sum == sum(buf[:n]) & 0xFF


def test_cen_f3_published_telegram_decrypts_and_checks_mac():
    app = F3_AFL + F3_TPL + F3_ENC
    clear, info = secure.decrypt_user_data(app, K_OMS, aes128, aes128_decrypt)
    assert info == {"mode": 7, "blocks": 2, "counter": 0xAB3}
    assert clear[:13] == F3_TPL[:13]
    assert clear[13:13 + 17] == b"".join(F3_RECORDS)
    assert clear[13 + 17:] == b"\x2F" * 13
    bad = bytearray(app)
    bad[-1] ^= 1
    assert "bad MAC" in raises(secure.SecurityError, secure.decrypt_user_data, bytes(bad),
                               K_OMS, aes128, aes128_decrypt)
    seen = {}
    secure.decrypt_user_data(app, K_OMS, aes128, aes128_decrypt, seen)
    assert "does not rise" in raises(secure.SecurityError, secure.decrypt_user_data, app,
                                     K_OMS, aes128, aes128_decrypt, seen)


# -- on the bus -----------------------------------------------------------------------------
REQ_A = h("10 5B 01 5C 16")
REQ_B = h("10 7B 01 7C 16")


def _ask(bus, req):
    pos = 0
    while pos < len(req):
        pos = bus.feed(req, pos, len(req))
    return bytes(bus.reply[:bus.reply_len])


def _app(frame):
    assert frame[0] == 0x68 and frame[-1] == 0x16
    assert (sum(frame[4:-2]) & 0xFF) == frame[-2]
    return frame[6:-2]


def test_mode5_bus_readout_multi_telegram_and_repeat():
    m = many_records_meter(60, address=1, security=S.Security(5, K_OMS, aes128))
    bus = Bus([m])
    got = []
    acc = []
    for req in (REQ_A, REQ_B, REQ_B):   # the second REQ_B repeats: same telegram again
        app = _app(_ask(bus, req))
        acc.append(app[9])
        clear, info = secure.decrypt_user_data(app, K_OMS, aes128, aes128_decrypt)
        assert info["mode"] == 5 and len(app) == 13 + 16 * info["blocks"]
        got.append(clear[13:])
    assert acc == [0, 1, 2]             # the access number counts on, the IV with it
    assert got[0].rstrip(b"\x2F").endswith(b"\x1F")   # more records follow
    assert got[2] == got[1]
    records = (got[0].rstrip(b"\x2F")[:-1] + got[1].rstrip(b"\x2F"))
    assert records == b"".join(m.records)


def test_mode7_counter_rises_and_is_reserved_ahead():
    saved = []
    m = _f3_meter(counter=10, reserve=saved.append)
    bus = Bus([m])
    seen = {}
    for i in range(3):
        app = _app(_ask(bus, REQ_A if i % 2 == 0 else REQ_B))
        clear, info = secure.decrypt_user_data(app, K_OMS, aes128, aes128_decrypt, seen)
        assert info["counter"] == 11 + i
    assert saved == [11 + S.COUNTER_RESERVE]   # persisted before the first use


def test_encrypted_meter_needs_long_header():
    assert "CI 72" in raises(ValueError, Meter, ci=0x7A, security=S.Security(5, K_OMS, aes128))


def test_security_faults_visible_to_decoder():
    expect = {"key": "wrong key", "cipher": "corrupted", "blocks": "encrypted blocks",
              "plain": "not encrypted"}
    for fault in ("key", "cipher", "blocks", "plain"):
        m = _n54_meter()
        bus = Bus([m])
        m.security.fault = fault
        app = _app(_ask(bus, REQ_A))
        msg = raises(secure.SecurityError, secure.decrypt_user_data, app, K_OMS, aes128,
                     aes128_decrypt)
        assert expect[fault] in msg, (fault, msg)
        app = _app(_ask(bus, REQ_B))   # one telegram only: the next is fine again
        secure.decrypt_user_data(app, K_OMS, aes128, aes128_decrypt)
    expect7 = {"key": "bad MAC", "cipher": "bad MAC", "mac": "bad MAC",
               "replay": "does not rise", "rewind": "does not rise",
               "blocks": "encrypted blocks", "plain": "not encrypted"}
    for fault in ("key", "cipher", "mac", "replay", "rewind", "blocks", "plain"):
        m = _f3_meter()
        bus = Bus([m])
        seen = {}
        secure.decrypt_user_data(_app(_ask(bus, REQ_A)), K_OMS, aes128, aes128_decrypt, seen)
        m.security.fault = fault
        app = _app(_ask(bus, REQ_B))
        msg = raises(secure.SecurityError, secure.decrypt_user_data, app, K_OMS, aes128,
                     aes128_decrypt, seen)
        assert expect7[fault] in msg, (fault, msg)
        if fault == "rewind":   # the counter went back by one, and then on from where it was
            assert m.security.counter == 0xAB3
            _, info = secure.decrypt_user_data(_app(_ask(bus, REQ_A)), K_OMS, aes128,
                                               aes128_decrypt)
            assert info["counter"] == 0xAB4
    # a meter that should encrypt and does not: the decoder with a key says so
    plain = Meter(address=1, records=F3_RECORDS)
    app = _app(_ask(Bus([plain]), REQ_A))
    assert "not encrypted" in raises(secure.SecurityError, secure.decrypt_user_data, app,
                                     K_OMS, aes128, aes128_decrypt)


def test_mode5_same_access_same_bytes():
    # deterministic: the same meter and access number give the same telegram (the host
    # test compares CPython and the MicroPython unix port byte for byte)
    a = bytearray(260)
    b = bytearray(260)
    m1 = _n54_meter()
    m2 = _n54_meter()
    m1.refresh()
    m2.refresh()
    n = m1.write_telegram(0, a, 0, 0x42)
    assert m2.write_telegram(0, b, 0, 0x42) == n and a[:n] == b[:n]


def _heap_lock():
    import sys
    try:
        import micropython
        if hasattr(micropython, "heap_lock") and sys.implementation.name == "micropython":
            return micropython
    except ImportError:
        pass
    return None


def _serve_locked(bus, reqs, between=None, lock=None):
    """Feed each request (under the heap lock when `lock`), then call between() outside
    it; the total length of the replies."""
    total = 0
    for req in reqs:
        if lock is not None:
            lock.heap_lock()
        try:
            pos = 0
            n = len(req)
            while pos < n:
                pos = bus.feed(req, pos, n)
                total += bus.reply_len
        finally:
            if lock is not None:
                lock.heap_unlock()
        if between is not None:
            between()
    return total


def test_mode5_readout_allocates_nothing():
    # On MicroPython: once warmed up, an encrypted (mode 5) readout runs under the heap
    # lock, as the unencrypted one does (tests/core/test_heap.py). CPython: replies only.
    m = many_records_meter(60, address=1, security=S.Security(5, K_OMS, aes128))
    bus = Bus([m])
    reqs = (REQ_A, REQ_B, REQ_A, REQ_B)
    first = _serve_locked(bus, reqs)
    assert _serve_locked(bus, reqs, lock=_heap_lock()) == first and first > 4 * 200


def test_mode7_readout_allocates_nothing_once_prepared():
    # Mode 7 derives new keys for every telegram, and a cipher for a new key is an
    # object (cryptolib): Security.prepare(), which a port calls after each reply, builds
    # the next telegram's ciphers then, so the request path itself allocates nothing.
    sec = S.Security(7, K_OMS, aes128, counter=0x1FFFFFFE)   # across 2^29 and 2^30..
    m = many_records_meter(60, address=1, security=sec)
    bus = Bus([m])
    reqs = (REQ_A, REQ_B, REQ_A, REQ_B)

    def prepare():
        sec.prepare(m)

    first = _serve_locked(bus, reqs, prepare)
    again = _serve_locked(bus, reqs, prepare, lock=_heap_lock())
    assert again == first and first > 4 * 200
    assert sec.counter == 0x1FFFFFFE + 8
    # the telegrams made with prepared keys are the ones made without: a meter with the
    # same counter and no prepare() gives the same bytes
    a = S.Security(7, K_OMS, aes128, counter=41)
    b = S.Security(7, K_OMS, aes128, counter=41)
    ma = Meter(address=1, records=F3_RECORDS, security=a)
    mb = Meter(address=1, records=F3_RECORDS, security=b)
    for _ in range(3):
        a.prepare(ma)
        ra = _ask(Bus([ma]), REQ_A)
        rb = _ask(Bus([mb]), REQ_A)
        assert ra == rb and len(ra) > 60
    # an ID changed after prepare(): the keys are derived again for the new ID
    a.prepare(ma)
    ma.id = 87654321
    mb.id = 87654321
    assert _ask(Bus([ma]), REQ_A) == _ask(Bus([mb]), REQ_A)


def test_alarm_telegram_is_encrypted_too():
    m = _n54_meter()
    m.alarm = h("02FD170100")
    bus = Bus([m])
    reply = _ask(bus, h("10 5A 01 5B 16"))   # REQ_UD1
    clear, info = secure.decrypt_user_data(_app(reply), K_OMS, aes128, aes128_decrypt)
    assert info["mode"] == 5 and clear[13:18] == h("02FD170100")


def test_mode7_reserves_again_when_the_bound_is_reached():
    saved = []
    m = _f3_meter(counter=10, reserve=saved.append)
    m.refresh()
    buf = bytearray(260)
    for i in range(S.COUNTER_RESERVE + 1):
        m.write_telegram(0, buf, 0, i)
    # counters 11..75: reserved 75 before 11 went out, 139 before 75 did
    assert m.security.counter == 11 + S.COUNTER_RESERVE
    assert saved == [11 + S.COUNTER_RESERVE, 11 + 2 * S.COUNTER_RESERVE]
    assert m.security.limit == saved[-1]


def test_mode7_bound_moves_on_early_off_the_request_path():
    # A port moves the bound on between frames (reserve_early) once few counters are
    # left, so that the save never happens between a request and its reply; only where
    # it never does is the bound reserved on the request path, as before.
    saved = []
    m = _f3_meter(counter=10, reserve=saved.append)
    m.refresh()
    sec = m.security
    buf = bytearray(260)
    m.write_telegram(0, buf, 0, 0)            # counter 11: the first bound, 75
    assert saved == [11 + S.COUNTER_RESERVE] and not sec.reserve_due
    n = 1
    while not sec.reserve_due:
        m.write_telegram(0, buf, 0, n)
        n += 1
    left = 11 + S.COUNTER_RESERVE - sec.counter
    assert left == S.COUNTER_EARLY and len(saved) == 1   # due, not done on the path
    sec.reserve_early()                       # between frames: counter + 64
    assert saved[-1] == sec.counter + S.COUNTER_RESERVE and not sec.reserve_due
    assert sec.limit == saved[-1]
    for i in range(S.COUNTER_RESERVE - S.COUNTER_EARLY):
        m.write_telegram(0, buf, 0, i)
    assert len(saved) == 2 and sec.reserve_due   # due again, and still nothing on the path
    sec.reserve_early()
    assert len(saved) == 3 and sec.counter < saved[-1]


def test_oms_n54_whole_frame_with_unencrypted_tail():
    # the published frame byte for byte, checksum included: the meter selected by its
    # secondary address, read at 253, its last two records in clear after the block
    recs = N54_RECORDS + [h("0CFD1078563412"), h("0C7844332211")]
    m = Meter(id=55667788, manufacturer="QDS", version=0x55, medium=0x08, status=0x04,
              address=1, records=recs, security=S.Security(5, K_OMS, aes128, clear=2))
    bus = Bus([m])
    assert _ask(bus, long(0x73, 0xFD, 0x52, h("88 77 66 55 FF FF FF FF"))) == b"\xe5"
    want = h("682C2C6808FD") + N54_TPL + N54_ENC + N54_TAIL + h("2616")
    got = _ask(bus, h("10 5B FD 58 16"))
    # a selected meter answers with its own primary address (1) where the example has
    # FD; the checksum moves with it: all else is the published frame
    assert got[5] == 1 and got[-2] == (want[-2] - 0xFD + 1) & 0xFF
    assert hexs(got[:5] + got[6:-2]) == hexs(want[:5] + want[6:-2])


def test_clear_tail_goes_after_the_last_telegrams_blocks():
    for mode in (5, 7):
        m = many_records_meter(60, address=1,
                               security=S.Security(mode, K_OMS, aes128, clear=2))
        bus = Bus([m])
        clear_parts = []
        for req in (REQ_A, REQ_B):
            clear, info = secure.decrypt_user_data(_app(_ask(bus, req)), K_OMS, aes128,
                                                   aes128_decrypt)
            clear_parts.append(clear[13:])
        first = clear_parts[0].rstrip(b"\x2F")
        assert first.endswith(b"\x1F")
        second = clear_parts[1]
        tail = b"".join(m.records[-2:])
        assert second.endswith(b"\x2F" + tail) or second.endswith(tail)
        body = second[:-len(tail)].rstrip(b"\x2F")
        assert first[:-1] + body + tail == b"".join(m.records)


def test_meter_description_security_key():
    from mbus_core.codec import model
    m = model.meter_from_config({"address": 1, "id": "55667788", "manufacturer": "QDS",
                                 "version": 0x55, "medium": 8, "status": 4,
                                 "records": ["0B6E341200", "426CFE04", "4B6E563402"],
                                 "security": {"mode": 5, "key": "00 01 02 03 04 05 06 07 "
                                              "08 09 0A 0B 0C 0D 0E 0F"}})
    m.refresh()
    buf = bytearray(260)
    n = m.write_telegram(0, buf, 0, 0)
    assert bytes(buf[:n]) == N54_TPL + N54_ENC
    for spec, words in (({"mode": 6, "key": "00" * 16}, "mode must be 5"),
                        ({"mode": 5}, "needs \"key\""),
                        ({"mode": 5, "key": "00" * 15}, "32 hex"),
                        ({"mode": 5, "key": "00" * 16, "counter": 3}, "mode 7 only"),
                        ({"mode": 7, "key": "00" * 16, "clear": -1}, "clear"),
                        ({"mode": 5, "key": "00" * 16, "kye": 1}, "unknown key 'kye'"),
                        ("5", "must be an object")):
        msg = raises(model.ConfigError, model.meter_from_config,
                     {"name": "x", "security": spec})
        assert "security: " in msg and words in msg, (spec, msg)
    msg = raises(model.ConfigError, model.meter_from_config,
                 {"ci": "short", "security": {"mode": 5, "key": "00" * 16}})
    assert "CI 72" in msg


def test_encrypted_alarm_must_fit_15_blocks():
    # a REQ_UD1 reply is one telegram, and its encrypted part at most 15 blocks: 238 bytes
    # of records after 2F 2F (mode 5), 15 blocks less the AFL's room in mode 7
    from mbus_core.codec import model
    raw = {"dif": "0F", "value": "00" * 237}     # 238 bytes: fits mode 5 exactly
    cfg = {"address": 1, "alarm": [raw], "security": {"mode": 5, "key": "00" * 16}}
    m = model.meter_from_config(cfg)
    reply = _ask(Bus([m]), h("10 7A 01 7B 16"))
    assert reply[0] == 0x68 and len(reply) == 6 + 13 + 240 + 2
    cfg["alarm"] = [{"dif": "0F", "value": "00" * 238}]
    msg = raises(model.ConfigError, model.meter_from_config, cfg)
    assert "alarm records take 239 bytes" in msg and "238" in msg and "\n" not in msg
