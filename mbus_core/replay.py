# A replayed meter: captured application data (each telegram from its CI byte on) served
# verbatim, its identity for secondary selection taken from the captured header. Loaded
# only for such a meter (on a board: by the compiled-form loader at start, then dropped).
from mbus_core.meter import CI_FIXED, CI_LONG, CI_LONG_MSB, Meter


def _captured_identity(app):
    """(ID bytes as an int, manufacturer, version, medium) from the header of captured
    application data, or None when it has no identity."""
    ci = app[0]
    if ci == CI_LONG and len(app) >= 13:
        return (app[1] | (app[2] << 8) | (app[3] << 16) | (app[4] << 24),
                app[5] | (app[6] << 8), app[7], app[8])
    if ci == CI_LONG_MSB and len(app) >= 13:
        return ((app[1] << 24) | (app[2] << 16) | (app[3] << 8) | app[4],
                (app[5] << 8) | app[6], app[7], app[8])
    if ci == CI_FIXED and len(app) >= 5:
        return app[1] | (app[2] << 8) | (app[3] << 16) | (app[4] << 24), 0, 0, 0
    return None


def replay_meter(app_datas, address=None):
    """A meter that answers with captured application data (each item starts at the CI
    byte), verbatim. Its identity for secondary selection comes from the captured header
    (CI 72, 76 or 73)."""
    if not app_datas:
        raise ValueError("no telegram to replay")
    found = _captured_identity(app_datas[0])
    raw, man, version, medium = found if found is not None else (None, 0, 0, 0)
    m = Meter(id=0, manufacturer=man & 0x7FFF, version=version, medium=medium,
              address=0 if address is None else address)
    m.manufacturer = man  # keep the captured bytes exactly, even the top bit
    if raw is not None:   # the captured ID bytes, valid BCD or not
        m.set_raw_id(bytes((raw & 0xFF, (raw >> 8) & 0xFF, (raw >> 16) & 0xFF, raw >> 24)))
    m.replay = [bytes(a) for a in app_datas]
    return m
