"""The label holder's CKKS context: bound to the holder, pinned, kept across restarts.

Why each check exists (an aggregator relays the context from the label holder to the stations
and could otherwise swap it):
  * **Bound to the holder.** Stations encrypt their features under the public context; one the
    aggregator made itself (it would hold the secret) would let it decrypt every station. The
    holder signs the context's SHA-256 with its Ed25519 key from the root-signed directory, and
    ``verify_public_context`` accepts only a signature of the party the station's own config
    names as label holder, whose directory role is ``labels``.
  * **Pinned parameters.** N = 8192, moduli 60/40/40/60, scale 2^40 (``crypto.he``): anything
    else (a 32,768-slot context, a weaker modulus chain) is refused, even signed by the holder.
  * **Persisted secret.** A holder that made a new key at each start would decrypt the other
    parties' ciphertexts (made under the first context) into values around 1e30 and train on
    them. The secret is written once, 0600, and reloaded; ``check_decrypted`` still refuses
    non-finite or out-of-range values, so a key mismatch fails loudly instead of silently.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import tenseal as ts

import crypto.he as he
from crypto.he import HEError, check_params
from crypto.directory import Directory
from crypto.keys import KeyMaterialError, PartyKeys, b64d, b64e, canonical_json, check_secret_file, write_public, write_secret

HOLDER_SECRET = "he_secret.ctx"
HOLDER_PUBLIC = "he_public.ctx"
HOLDER_SIG = "he_public.ctx.sig"
HOLDER_ROLES = ("labels",)
DEFAULT_BOUND = 1e6
_DOMAIN = b"feddiff-he-context-v1\0"
_BUNDLE = b"feddiff-signed-ctx-v1\0"


def _statement(job: str, holder: str, public: bytes) -> bytes:
    return _DOMAIN + canonical_json({"job": job, "holder": holder, "sha256": hashlib.sha256(bytes(public)).hexdigest()})


def sign_public_context(me: PartyKeys, public: bytes) -> str:
    """The holder's signature (base64) binding ``public`` to itself and its job."""
    return b64e(me.sign_key.sign(_statement(me.job, me.name, public)))


def verify_public_context(directory: Directory, holder: str, public: bytes, signature: str) -> ts.Context:
    """The public context to encrypt under, once it is shown to be ``holder``'s and pinned.

    ``holder`` must come from the caller's own configuration (``federation.label_holder``),
    never from the message that carried the context. Raises HEError naming what failed."""
    info = directory.get(holder)
    if info is None or info.role not in HOLDER_ROLES:
        raise HEError(f"{holder!r} is not a label holder (role labels) in the directory of job {directory.job!r}")
    try:
        info.verify_key().verify(b64d(str(signature).strip()), _statement(directory.job, holder, public))
    except Exception:  # noqa: BLE001 - InvalidSignature, bad base64: all mean the same here
        raise HEError(f"the CKKS public context is not signed by label holder {holder!r}: refusing to encrypt under it") from None
    try:
        ctx = ts.context_from(bytes(public))
    except Exception as e:  # noqa: BLE001
        raise HEError(f"not a TenSEAL context: {type(e).__name__}") from None
    if ctx.is_private() or ctx.has_secret_key():
        raise HEError("refusing a context that carries a secret key where a public one was expected")
    check_params(ctx)
    return ctx


def bundle_context(public: bytes, signature: str) -> bytes:
    """The public context and the holder's signature over it as one blob: what HELLO carries
    from the holder and JOB relays to the stations, so the relay cannot drop the signature."""
    sig = str(signature).strip().encode("ascii")
    return _BUNDLE + len(sig).to_bytes(2, "big") + sig + bytes(public)


def unbundle_context(blob: bytes) -> tuple[bytes, str]:
    """(public context, signature) from ``bundle_context``'s blob; HEError when it is not one
    (an unsigned context is refused, never encrypted under)."""
    b = bytes(blob)
    if not b.startswith(_BUNDLE) or len(b) < len(_BUNDLE) + 2:
        raise HEError("the CKKS context arrived without the label holder's signature: refusing to encrypt under it")
    n = int.from_bytes(b[len(_BUNDLE):len(_BUNDLE) + 2], "big")
    start = len(_BUNDLE) + 2
    if len(b) < start + n:
        raise HEError("the signed CKKS context is truncated")
    try:
        sig = b[start:start + n].decode("ascii")
    except UnicodeDecodeError:
        raise HEError("the CKKS context signature is not ASCII base64") from None
    return b[start + n:], sig


def _load_secret(path: Path) -> ts.Context:
    check_secret_file(path)
    try:
        ctx = ts.context_from(path.read_bytes())
    except Exception as e:  # noqa: BLE001
        raise KeyMaterialError(f"{path} is not a TenSEAL context: {type(e).__name__}") from None
    if not ctx.is_private():
        raise KeyMaterialError(f"{path} holds no secret key")
    try:
        check_params(ctx)
    except HEError as e:
        raise KeyMaterialError(f"{path}: {e}") from None
    return ctx


def holder_secret_context(party_dir: Path) -> ts.Context:
    """The label holder's secret context from its bundle (refused unless 0600 and pinned)."""
    path = Path(party_dir) / HOLDER_SECRET
    if not path.exists():
        raise KeyMaterialError(f"{path} missing: run 'feddiff keys he-holder --dir DIR --id <label holder>'")
    return _load_secret(path)


def ensure_holder_context(party_dir: Path, me: PartyKeys) -> tuple[ts.Context, bytes, str]:
    """(secret context, public bytes, signature) of holder ``me``: reloaded when present,
    otherwise made once and persisted (secret 0600). Every start returns the same key."""
    pdir = Path(party_dir)
    if not (pdir / HOLDER_SECRET).exists():
        ctx = he.make_secret_context()
        write_secret(pdir / HOLDER_SECRET, ctx.serialize(save_secret_key=True, save_galois_keys=False, save_relin_keys=False))
    secret = holder_secret_context(pdir)
    public = he.public_bytes(secret)
    sig = sign_public_context(me, public)
    if not (pdir / HOLDER_PUBLIC).exists() or (pdir / HOLDER_PUBLIC).read_bytes() != public:
        write_public(pdir / HOLDER_PUBLIC, public)
        write_public(pdir / HOLDER_SIG, (sig + "\n").encode())
    return secret, public, sig


def check_decrypted(values: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """``values`` if all are finite and within ±``bound``; HEError otherwise.

    Why: CKKS decryption never fails, it returns noise (about 1e30 under the wrong key, or
    after an overflow); training on it silently ruins the model."""
    x = np.asarray(values)
    if x.size and not np.all(np.isfinite(x)):
        raise HEError(f"decrypted values contain {int(np.sum(~np.isfinite(x)))} non-finite entries: wrong key or corrupt ciphertext")
    worst = float(np.max(np.abs(x))) if x.size else 0.0
    if worst > bound:
        raise HEError(f"decrypted values reach {worst:.3g}, beyond ±{bound:g}: wrong key (was the label holder re-keyed?) or overflow")
    return x


def check_contributors(contributors: np.ndarray, allow_single: bool = False) -> None:
    """Refuse an HE fusion in which some sample has fewer than two contributing stations.

    ``contributors[i]`` is how many stations put non-zero features into sample ``i``'s sum.
    Why: the label holder decrypts the sum; with one contributor the sum *is* that station's
    features, so HE then hides nothing from the holder. ``allow_single`` (a config switch the
    operator sets knowingly) accepts it; the docs state what the holder then learns."""
    counts = np.asarray(contributors).reshape(-1)
    single = int(np.sum(counts < 2))
    if single and not allow_single:
        raise HEError(f"{single} of {counts.size} samples would be decrypted from a single station's features: "
                      f"the label holder would read them; add stations or allow single contributors explicitly")
