# What a host says about its meters, in the words of the load errors: how a message names
# a meter (meter_where) and the one line for each counter that wrapped (wrap_notes). The
# core does not log: the host logs these. Not on a board's heap while it serves: the
# compiled-form loader uses meter_where at start (dropped with it), and the firmware loads
# this module again only once a counter wrapped (live_record.NEWLY_WRAPPED), then drops it.
from mbus_core.fields import DATA_LEN, INT_CODES
from mbus_core.live_record import NEWLY_WRAPPED


def meter_where(index, name):
    """How messages name a meter: 'meter 1' or 'meter 1 ("heat-1")' (index from 0)."""
    if name:
        return 'meter %d ("%s")' % (index + 1, name)
    return "meter %d" % (index + 1)


def wrap_notes(meters):
    """One line for each counter that wrapped since the last call, naming meter and record
    like the load errors; each counter once. The core does not log: a host logs these
    after a readout. Allocates nothing while there is nothing to report (returns ())."""
    out = ()
    if not NEWLY_WRAPPED[0]:
        return out
    NEWLY_WRAPPED[0] = 0
    i = 0
    while i < len(meters):
        recs = meters[i].records
        j = 0
        while j < len(recs):
            rec = recs[j]
            if getattr(rec, "wrapped", 0) == 1:
                rec.wrapped = 2
                n = DATA_LEN[rec.code]
                out += ("%s: record %d: the %s%d counter left its range %d..%d and went on "
                        "from 0 (wrapped, as a register does)"
                        % (meter_where(i, meters[i].name), j + 1,
                           "int" if rec.code in INT_CODES else "bcd",
                           8 * n if rec.code in INT_CODES else 2 * n,
                           rec.range[0], rec.range[1]),)
            j += 1
        i += 1
    return out
