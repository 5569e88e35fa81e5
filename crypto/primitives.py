"""The two byte-level primitives every sealed form shares: length-prefixed framing of what is
signed or authenticated, and the HKDF that turns an X25519 agreement into an AES key.

Why one place: the envelope seal and the relay box must frame and derive exactly alike, or
one of them would accept a byte string the other reads differently.
"""

from __future__ import annotations

import struct

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF


def length_prefixed(b: bytes) -> bytes:
    """``b`` behind its 8-byte big-endian length, so concatenations cannot be re-split."""
    return struct.pack(">Q", len(b)) + b


def derive_key(shared: bytes, epk: bytes, rpk: bytes, job: str) -> bytes:
    """The 32-byte AES key of one agreement, bound to both public keys and the job; an all-zero
    secret (a low-order peer key) is refused."""
    if shared == bytes(32):
        raise ValueError("low-order point")
    return HKDF(hashes.SHA256(), 32, salt=epk + rpk, info=b"feddiff-seal-v1 " + job.encode()).derive(shared)
