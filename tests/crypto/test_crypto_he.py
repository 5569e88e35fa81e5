"""CKKS additive fusion: the aggregator adds without being able to read."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts

from crypto import he


@pytest.fixture(scope="module")
def secret() -> ts.Context:
    return he.make_secret_context()


@pytest.fixture(scope="module")
def public(secret) -> ts.Context:
    return he.load_public(he.public_bytes(secret))


def test_public_context_has_no_secret_and_no_rotation_keys(public) -> None:
    assert not public.is_private()
    assert not public.has_secret_key()
    assert not public.has_galois_keys()


def test_public_context_cannot_decrypt(public) -> None:
    x = np.random.default_rng(1).standard_normal((4, 512))
    cts = he.encrypt_batch(public, x)
    with pytest.raises(ValueError, match="secret"):
        ts.ckks_vector_from(public, cts[0]).decrypt()
    with pytest.raises(he.HEError):
        he.decrypt_batch(public, cts, x.shape)


def test_loading_a_secret_context_as_public_is_refused(secret) -> None:
    with pytest.raises(he.HEError, match="secret key"):
        he.load_public(secret.serialize(save_secret_key=True))


def test_sum_of_ciphertexts_decrypts_to_the_sum(secret, public) -> None:
    rng = np.random.default_rng(2)
    a, b = rng.standard_normal((20, 512)), rng.standard_normal((20, 512))
    ca, cb = he.encrypt_batch(public, a), he.encrypt_batch(public, b)
    assert len(ca) == 3  # 8 samples of 512 per 4096-slot ciphertext
    fused = he.add_ciphertexts(public, ca, cb)
    np.testing.assert_allclose(he.decrypt_batch(secret, fused, (20, 512)), a + b, atol=1e-3)


def test_ciphertexts_hide_the_plaintext(public) -> None:
    x = np.full((8, 512), 0.25)
    ct = he.encrypt_batch(public, x)[0]
    assert np.float64(0.25).tobytes() * 4 not in ct
    assert he.encrypt_batch(public, x)[0] != ct  # randomised encryption


def test_wide_samples_span_several_ciphertexts(secret, public) -> None:
    x = np.random.default_rng(3).standard_normal((2, 5000))
    cts = he.encrypt_batch(public, x)
    assert len(cts) == 3
    np.testing.assert_allclose(he.decrypt_batch(secret, cts, x.shape), x, atol=1e-3)


def test_weight_vectors_sum_across_parties(secret, public) -> None:
    rng = np.random.default_rng(4)
    ws = [rng.standard_normal(10_000) * 0.1 for _ in range(3)]
    total = he.sum_vectors(public, [he.encrypt_vector(public, w) for w in ws])
    assert len(total) == 3
    mean = he.decrypt_vector(secret, total, n=10_000) / len(ws)
    np.testing.assert_allclose(mean, np.mean(ws, axis=0), atol=1e-3)


def test_mismatched_ciphertext_lists_are_refused(public) -> None:
    a = he.encrypt_batch(public, np.zeros((16, 512)))
    b = he.encrypt_batch(public, np.zeros((8, 512)))
    with pytest.raises(he.HEError):
        he.add_ciphertexts(public, a, b)
    with pytest.raises(he.HEError):
        he.add_ciphertexts(public, a[:1], [b"not a ciphertext"])


def test_sizes_are_within_budget(secret, public, record_property) -> None:
    pub = len(he.public_bytes(secret))
    per_sample = sum(map(len, he.encrypt_batch(public, np.zeros((64, 512))))) / 64
    record_property("public_context_bytes", pub)
    record_property("ciphertext_bytes_per_sample_d512", per_sample)
    print(f"public context {pub} B, ciphertext {per_sample:.0f} B/sample at D=512")
    assert pub < 1_000_000  # no relinearisation or Galois keys exported
    assert per_sample < 64_000


@pytest.mark.parametrize("n, bits, scale", [(16384, [60, 40, 40, 60], 2.0**40), (8192, [60, 40, 40, 60], 2.0**30)])
def test_load_public_refuses_unpinned_parameters(n, bits, scale):
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, n, coeff_mod_bit_sizes=bits)
    ctx.global_scale = scale
    with pytest.raises(he.HEError):
        he.load_public(he.public_bytes(ctx))
