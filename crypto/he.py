"""CKKS (TenSEAL) for additive fusion and weight averaging the aggregator cannot read.

Why CKKS with only additions: fusing two parties' features and averaging weights are sums; the
aggregator runs them on ciphertexts with a context that holds no secret key, and only the secret
holder (the label holder, or the parties jointly) decrypts the result. Sums need neither
relinearisation nor Galois (rotation) keys, so none are exported: the public context stays small
and grants no extra capability.

Parameters: N = 8192, coefficient modulus 60+40+40+60 = 200 bits (under the 218-bit bound for
128-bit security at N = 8192 per the HE standard), scale 2^40, 4096 slots per ciphertext.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import tenseal as ts

from feddiff.errors import FedDiffError

log = logging.getLogger(__name__)

POLY_MODULUS_DEGREE = 8192
COEFF_MOD_BIT_SIZES = (60, 40, 40, 60)
GLOBAL_SCALE = 2.0**40
SLOTS = POLY_MODULUS_DEGREE // 2


class HEError(FedDiffError):
    """A context or ciphertext is malformed, has the wrong capability, or shapes do not match."""


def _chain(bits: tuple[int, ...]) -> tuple[int, ...]:
    """Total modulus bits at each level, key level first (what SEAL reports per level)."""
    return tuple(sum(bits[: len(bits) - i]) for i in range(len(bits)))


PINNED_CHAIN = _chain(COEFF_MOD_BIT_SIZES)


def check_params(ctx: ts.Context) -> None:
    """Raise HEError unless ``ctx`` has exactly the pinned CKKS parameters."""
    try:
        level = ctx.seal_context().data.key_context_data()
        n = level.parms().poly_modulus_degree()
        chain = []
        while level is not None:
            chain.append(level.total_coeff_modulus_bit_count())
            level = level.next_context_data()
        scale = ctx.global_scale
    except Exception as e:  # noqa: BLE001 - TenSEAL raises assorted types on odd contexts
        raise HEError(f"cannot read the CKKS parameters of the context: {type(e).__name__}") from None
    if n != POLY_MODULUS_DEGREE:
        raise HEError(f"CKKS context with N = {n} ({n // 2} slots); pinned: N = {POLY_MODULUS_DEGREE} ({SLOTS} slots)")
    if tuple(chain) != PINNED_CHAIN:
        raise HEError(f"CKKS modulus chain of {list(chain)} bits; pinned: {list(PINNED_CHAIN)} ({'/'.join(map(str, COEFF_MOD_BIT_SIZES))})")
    if scale != GLOBAL_SCALE:
        raise HEError(f"CKKS scale {scale:g}; pinned: 2^40")


def make_secret_context() -> ts.Context:
    """Fresh CKKS context holding the secret key (keep it with the decrypting party only)."""
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, POLY_MODULUS_DEGREE, coeff_mod_bit_sizes=list(COEFF_MOD_BIT_SIZES))
    ctx.global_scale = GLOBAL_SCALE
    return ctx


def public_bytes(ctx: ts.Context) -> bytes:
    """Serialise the public key only: no secret, relinearisation or Galois keys."""
    return ctx.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=False, save_relin_keys=False)


def load_public(b: bytes) -> ts.Context:
    """Load a context for encrypting and adding; refuses one that carries a secret key, so a
    mis-exported secret never silently reaches the aggregator, and one whose parameters are not
    the pinned ones (``check_params``). Whose context it is, is not checked here: stations use
    ``crypto.he_context.verify_public_context``."""
    try:
        ctx = ts.context_from(bytes(b))
    except Exception as e:  # noqa: BLE001 - TenSEAL raises assorted types on bad bytes
        raise HEError(f"not a TenSEAL context: {type(e).__name__}") from None
    if ctx.is_private() or ctx.has_secret_key():
        raise HEError("refusing a context that carries a secret key where a public one was expected")
    check_params(ctx)
    return ctx


def _require_secret(ctx: ts.Context) -> None:
    if not ctx.is_private():
        raise HEError("decryption needs the secret context")


def _load_ct(ctx: ts.Context, b: bytes) -> ts.CKKSVector:
    try:
        return ts.ckks_vector_from(ctx, bytes(b))
    except Exception as e:  # noqa: BLE001
        raise HEError(f"not a CKKS ciphertext for this context: {type(e).__name__}") from None


def _encrypt_flat(ctx: ts.Context, flat: np.ndarray, chunk: int) -> list[bytes]:
    if not np.all(np.isfinite(flat)):
        raise HEError("cannot encrypt NaN or infinite values")
    return [ts.ckks_vector(ctx, flat[i : i + chunk].tolist()).serialize() for i in range(0, flat.size, chunk)]


def _decrypt_flat(ctx: ts.Context, cts: list[bytes]) -> np.ndarray:
    _require_secret(ctx)
    parts = [np.asarray(_load_ct(ctx, b).decrypt(), dtype=np.float64) for b in cts]
    return np.concatenate(parts) if parts else np.zeros(0)


def batch_layout(d: int) -> int:
    """Values per ciphertext for samples of width ``d``: whole samples while they fit
    (4096 // d of them), otherwise full 4096-slot pieces."""
    return (SLOTS // d) * d if 0 < d <= SLOTS else SLOTS


def encrypt_batch(ctx: ts.Context, x: np.ndarray) -> list[bytes]:
    """Encrypt a (B, D) batch, packing ``4096 // D`` samples per ciphertext in row order."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[1] == 0:
        raise HEError(f"expected a (B, D) array, got shape {x.shape}")
    return _encrypt_flat(ctx, x.reshape(-1), batch_layout(x.shape[1]))


def check_batch(public_ctx: ts.Context, cts: list[bytes], shape: tuple[int, int]) -> None:
    """HEError unless ``cts`` are ciphertexts of this context holding exactly a ``shape`` batch
    as ``encrypt_batch`` lays it out: a reply is checked before it is added to anyone else's."""
    n, d = (int(v) for v in shape)
    per = batch_layout(d)
    want = -(-n * d // per) if n * d else 0
    if len(cts) != want:
        raise HEError(f"{len(cts)} ciphertexts for a {n}x{d} batch, expected {want}")
    for i, b in enumerate(cts):
        size = _load_ct(public_ctx, b).size()
        expect = min(per, n * d - i * per)
        if size != expect:
            raise HEError(f"ciphertext {i} holds {size} values, expected {expect}")


def add_ciphertexts(public_ctx: ts.Context, a: list[bytes], b: list[bytes]) -> list[bytes]:
    """Element-wise sum of two equally shaped encrypted batches; needs no secret."""
    if len(a) != len(b):
        raise HEError(f"ciphertext counts differ: {len(a)} vs {len(b)}")
    out = []
    for ba, bb in zip(a, b):
        va, vb = _load_ct(public_ctx, ba), _load_ct(public_ctx, bb)
        if va.size() != vb.size():
            raise HEError(f"ciphertext sizes differ: {va.size()} vs {vb.size()}")
        out.append((va + vb).serialize())
    return out


def decrypt_batch(secret_ctx: ts.Context, cts: list[bytes], shape: tuple[int, int]) -> np.ndarray:
    """Decrypt what ``encrypt_batch`` (or ``add_ciphertexts``) produced back to ``shape``."""
    flat = _decrypt_flat(secret_ctx, cts)
    n = int(math.prod(shape))
    if flat.size != n:
        raise HEError(f"ciphertexts hold {flat.size} values, shape {tuple(shape)} needs {n}")
    return flat.reshape(shape)


def encrypt_vector(ctx: ts.Context, v: np.ndarray) -> list[bytes]:
    """Encrypt a long flat vector (e.g. model weights) as consecutive 4096-slot ciphertexts."""
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    return _encrypt_flat(ctx, v, SLOTS)


def sum_vectors(public_ctx: ts.Context, vectors: list[list[bytes]]) -> list[bytes]:
    """Sum several encrypted vectors of the same length (horizontal weight averaging: divide
    by the count after decryption, so no plaintext multiplication key material is needed)."""
    if not vectors:
        raise HEError("nothing to sum")
    acc = list(vectors[0])
    for other in vectors[1:]:
        acc = add_ciphertexts(public_ctx, acc, other)
    return acc


def decrypt_vector(secret_ctx: ts.Context, cts: list[bytes], n: int | None = None) -> np.ndarray:
    """Decrypt a vector from ``encrypt_vector``/``sum_vectors``; ``n`` checks the length."""
    flat = _decrypt_flat(secret_ctx, cts)
    if n is not None and flat.size != n:
        raise HEError(f"ciphertexts hold {flat.size} values, expected {n}")
    return flat
