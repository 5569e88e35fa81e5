"""Relay box: a gradient sealed by the label holder to ONE station, carried by an aggregator
that cannot open it.

Why: in HE mode the gradient of the fused features (``grad_z``) goes from the label holder to
every station through the aggregator; in plaintext, clustering it recovers most training labels.
The box reuses the construction of ``crypto.seal``: an ephemeral X25519 key agreed with the
station's agreement key from the signed directory, HKDF-SHA256, AES-256-GCM, and the holder's
Ed25519 signature. What differs is the binding: the signed header (also the AEAD's associated
data) names job, round, step, attempt, sender and recipient, so a box replayed into another
step or attempt, or re-addressed to another station, is refused before anything is decrypted.

Format: ``MAGIC | u32 header length | header (canonical JSON) | 64-byte signature | ciphertext``.
"""

from __future__ import annotations

import json
import os
import struct
from dataclasses import asdict, dataclass

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.directory import Directory
from crypto.keys import PartyKeys, b64d, b64e, canonical_json, raw_public
from crypto.primitives import derive_key, length_prefixed
from feddiff.errors import FedDiffError

MAGIC = b"FDRB1\0"
VERSION = 1
_SIG_DOMAIN = b"feddiff-relay-sig-v1\0"
_AD_DOMAIN = b"feddiff-relay-ad-v1\0"
_KDF_SUFFIX = " relay-box"  # names cannot hold a space: never a real job's seal key
_MAX_HEADER = 4096


class RelayBoxError(FedDiffError):
    """A relayed box that must not be used: wrong recipient, step, sender, signature or bytes."""


@dataclass(frozen=True)
class Binding:
    """What one box is for; the opener builds the one it expects from its own state, never from
    the box, and compares."""

    job: str
    round: int
    step: int
    attempt: int
    sender: str
    recipient: str

    def describe(self) -> str:
        return f"round {self.round} step {self.step} attempt {self.attempt}"


def seal_gradient(me: PartyKeys, directory: Directory, binding: Binding, grad: np.ndarray) -> bytes:
    """Encrypt ``grad`` (2-d float32) to ``binding.recipient`` and sign it as ``me``."""
    if binding.sender != me.name or binding.job != me.job:
        raise RelayBoxError(f"party {me.name!r} of job {me.job!r} cannot seal as {binding.sender!r} of job {binding.job!r}")
    to = directory.get(binding.recipient)
    if to is None or to.role != "edge":
        raise RelayBoxError(f"no station {binding.recipient!r} in the directory of job {binding.job!r}")
    plain = np.ascontiguousarray(grad, dtype="<f4")
    if plain.ndim != 2:
        raise RelayBoxError(f"gradient must be 2-d, got shape {plain.shape}")
    eph = X25519PrivateKey.generate()
    epk, nonce = raw_public(eph.public_key()), os.urandom(12)
    header = canonical_json({**asdict(binding), "v": VERSION, "kid": me.kid, "epk": b64e(epk), "nonce": b64e(nonce),
                             "dtype": "<f4", "shape": list(plain.shape)})
    key = derive_key(eph.exchange(to.agree_key()), epk, to.agree_public, binding.job + _KDF_SUFFIX)
    body = AESGCM(key).encrypt(nonce, plain.tobytes(), _AD_DOMAIN + length_prefixed(header))
    sig = me.sign_key.sign(_SIG_DOMAIN + length_prefixed(header) + length_prefixed(body))
    return MAGIC + struct.pack(">I", len(header)) + header + sig + body


def _split(box: bytes) -> tuple[bytes, dict, bytes, bytes]:
    if not isinstance(box, (bytes, bytearray)) or not bytes(box).startswith(MAGIC) or len(box) < len(MAGIC) + 4:
        raise RelayBoxError("relayed gradient is not a relay box")
    box = bytes(box)
    (n,) = struct.unpack(">I", box[len(MAGIC):len(MAGIC) + 4])
    start = len(MAGIC) + 4
    if n > _MAX_HEADER or len(box) < start + n + 64:
        raise RelayBoxError("relay box truncated or with an oversized header")
    raw = box[start:start + n]
    try:
        header = json.loads(raw)
    except ValueError:
        raise RelayBoxError("relay box header is not JSON") from None
    if not isinstance(header, dict) or header.get("v") != VERSION:
        raise RelayBoxError("relay box header of an unknown version")
    return raw, header, box[start + n:start + n + 64], box[start + n + 64:]


def _check_binding(header: dict, want: Binding) -> None:
    got = {k: header.get(k) for k in asdict(want)}
    if got["recipient"] != want.recipient:
        raise RelayBoxError(f"relay box addressed to {got['recipient']!r}, not {want.recipient!r} (re-addressed)")
    if got["sender"] != want.sender:
        raise RelayBoxError(f"relay box from {got['sender']!r}, not the label holder {want.sender!r}")
    if got != asdict(want):
        raise RelayBoxError(f"relay box of job {got['job']!r} round {got['round']} step {got['step']} attempt {got['attempt']}, "
                            f"expected {want.describe()} (replayed)")


def open_gradient(me: PartyKeys, directory: Directory, want: Binding, box: bytes) -> np.ndarray:
    """The gradient in ``box``, once it is shown to be for ``want`` exactly, signed by the
    sender's directory key, and intact; RelayBoxError (one line) otherwise."""
    if want.recipient != me.name:
        raise RelayBoxError(f"party {me.name!r} cannot open boxes for {want.recipient!r}")
    raw, header, sig, body = _split(box)
    _check_binding(header, want)
    sender = directory.get(want.sender)
    if sender is None or sender.kid != header.get("kid") or sender.role != "labels":
        raise RelayBoxError(f"relay box signer {want.sender!r} is not a label holder in the directory with that key")
    try:
        sender.verify_key().verify(sig, _SIG_DOMAIN + length_prefixed(raw) + length_prefixed(body))
    except InvalidSignature:
        raise RelayBoxError(f"relay box: bad signature of {want.sender!r} (tampered)") from None
    try:
        epk, nonce = b64d(header["epk"]), b64d(header["nonce"])
        shared = me.agree_key.exchange(X25519PublicKey.from_public_bytes(epk))
        key = derive_key(shared, epk, raw_public(me.agree_key.public_key()), want.job + _KDF_SUFFIX)
        plain = AESGCM(key).decrypt(nonce, body, _AD_DOMAIN + length_prefixed(raw))
    except (InvalidTag, ValueError, TypeError, KeyError):
        raise RelayBoxError("relay box does not open with this station's key") from None
    return _as_array(header, plain)


def _as_array(header: dict, plain: bytes) -> np.ndarray:
    shape = header.get("shape")
    if header.get("dtype") != "<f4" or not isinstance(shape, list) or len(shape) != 2 or not all(isinstance(s, int) and s >= 0 for s in shape):
        raise RelayBoxError("relay box: bad dtype or shape")
    if shape[0] * shape[1] * 4 != len(plain):
        raise RelayBoxError(f"relay box: {len(plain)} bytes do not hold a float32 {shape[0]}x{shape[1]} array")
    out = np.frombuffer(plain, dtype="<f4").reshape(shape).astype(np.float32)
    if not np.isfinite(out).all():
        raise RelayBoxError("relay box: gradient holds NaN or inf")
    return out


class GradientSealer:
    """The label holder's side: seals each step's gradient to each station it was asked for."""

    def __init__(self, me: PartyKeys, directory: Directory) -> None:
        self.me, self.directory = me, directory

    def seal(self, grad: np.ndarray, station: str, rnd: int, step: int, attempt: int) -> bytes:
        return seal_gradient(self.me, self.directory, Binding(self.me.job, rnd, step, attempt, self.me.name, station), grad)


class GradientOpener:
    """A station's side: opens only boxes for itself, this step and attempt, from ``holder``
    (the label holder its own config names)."""

    def __init__(self, me: PartyKeys, directory: Directory, holder: str) -> None:
        self.me, self.directory, self.holder = me, directory, holder

    def open(self, box: bytes, rnd: int, step: int, attempt: int) -> np.ndarray:
        return open_gradient(self.me, self.directory, Binding(self.me.job, rnd, step, attempt, self.holder, self.me.name), box)
