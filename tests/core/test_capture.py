# Replays from what people actually have: libmbus's -d output, mbus-slave --trace lines,
# hex with comments. The meter's telegrams are the long frames a slave sent.
from mbus_core.codec import model
from mbus_testutil import h, raises

RSP = "68 18 18 68 08 03 72 78 56 34 12 74 52 01 00 00 00 00 00 02 FD 49 D2 04 02 16 C8 01 57 16"
RSP2 = "68 13 13 68 08 03 72 78 56 34 12 74 52 01 00 01 00 00 00 02 16 C8 01 3A 16"

LIBMBUS_D = """[2026-11-27 10:00:00] SEND (005): 10 40 FD 3D 16
[2026-11-27 10:00:00] SEND (005): 10 5B 03 5E 16
[2026-11-27 10:00:00] RECV (030): %s
<?xml version="1.0" encoding="ISO-8859-1"?>
<MBusData>
    <SlaveInformation>
""" % RSP

TRACE = """RECV (005): 10 5B 03 5E 16   [127.0.0.1:51234]
SEND (030): %s   [127.0.0.1:51234]
RECV (005): 10 7B 03 7E 16
SEND (025): %s
RECV (005): 10 40 03 43 16
SEND (001): E5
""" % (RSP, RSP2)

COMMENTED = """# a Kamstrup, read on 2026-11-27
%s   // first telegram
; the end
""" % RSP


def app_datas(text):
    return model.replay_from_hex(text, 3).replay


def test_libmbus_debug_output_gives_the_received_telegram():
    assert app_datas(LIBMBUS_D) == [h(RSP)[6:-2]]


def test_own_trace_gives_the_sent_telegrams():
    assert app_datas(TRACE) == [h(RSP)[6:-2], h(RSP2)[6:-2]]


def test_hex_with_comments_and_line_breaks():
    assert app_datas(COMMENTED) == [h(RSP)[6:-2]]
    assert app_datas(RSP.replace(" ", "\n")) == [h(RSP)[6:-2]]


def test_a_capture_without_a_meter_telegram_is_an_error():
    msg = raises(model.ConfigError, model.replay_from_hex, "SEND (005): 10 5B 03 5E 16")
    assert "no telegram from a meter" in msg
    assert "bad character" in raises(model.ConfigError, model.replay_from_hex, "68 zz")
