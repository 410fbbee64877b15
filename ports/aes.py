# AES-128 block functions for mbus_core.security, from what the runtime has:
# MicroPython's cryptolib (rp2, esp32, unix builds) or, on CPython, pycryptodome (the
# optional extra "security": pip install 'mbus-slave[security]'). pycryptodome because
# it ships self-contained wheels for every platform CPython runs on (no Rust, no system
# OpenSSL), is actively maintained, and its ECB cipher encrypts into a caller's buffer
# (encrypt(src, output=dst)), as cryptolib does, so the core's per-block call allocates
# nothing on either runtime.
#
# aes128(key) -> f, f(src, dst): encrypt the 16 bytes of src into dst.
# aes128_decrypt(key) -> f, the same for decryption (the decoder's side).

try:
    import cryptolib as _cryptolib
except ImportError:
    _cryptolib = None

_MODE_ECB = 1


def available():
    """None when AES works here; else what to install."""
    if _cryptolib is not None:
        return None
    try:
        from Crypto.Cipher import AES  # noqa: F401
    except ImportError:
        return ("AES needs pycryptodome on CPython: pip install 'mbus-slave[security]' "
                "(or pip install pycryptodome)")
    return None


def _check(key):
    key = bytes(key)
    if len(key) != 16:
        raise ValueError("an AES-128 key is 16 bytes")
    return key


def _block(key, decrypt):
    key = _check(key)
    if _cryptolib is not None:
        c = _cryptolib.aes(key, _MODE_ECB)
        return c.decrypt if decrypt else c.encrypt
    from Crypto.Cipher import AES
    c = AES.new(key, AES.MODE_ECB)
    fn = c.decrypt if decrypt else c.encrypt

    def block(src, dst):
        fn(src, output=dst)
    return block


def aes128(key):
    return _block(key, False)


def aes128_decrypt(key):
    return _block(key, True)


def _register():
    from mbus_core import security
    missing = available()
    security.set_default_aes(None if missing else aes128, missing)


_register()
