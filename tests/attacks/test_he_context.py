"""Issue #18 item 1 (crypto side): the CKKS public context stations encrypt under is the label
holder's, with pinned parameters, and the holder's secret survives its restarts.

The attacker is the aggregator: it relays the context to the stations, and it would decrypt
every station's features if it could substitute a context it made itself."""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts

from crypto import he
from crypto.he_context import (
    HOLDER_PUBLIC,
    HOLDER_SECRET,
    HOLDER_SIG,
    check_decrypted,
    check_params,
    holder_secret_context,
    sign_public_context,
    verify_public_context,
)
from crypto.directory import load_directory
from crypto.keys import KeyMaterialError, load_party
from crypto.provision import provision_he_holder

pytestmark = pytest.mark.security


@pytest.fixture
def holder(job):
    provision_he_holder(job, "lab")
    pdir = job / "parties" / "lab"
    return pdir, (pdir / HOLDER_PUBLIC).read_bytes(), (pdir / HOLDER_SIG).read_text().strip()


def test_the_genuine_context_verifies_and_encrypts(job, holder):
    pdir, public, sig = holder
    ctx = verify_public_context(load_directory(job), "lab", public, sig)
    x = np.linspace(-1, 1, 64).reshape(8, 8)
    got = he.decrypt_batch(holder_secret_context(pdir), he.encrypt_batch(ctx, x), (8, 8))
    assert np.abs(got - x).max() < 1e-3


def test_a_context_substituted_by_the_aggregator_is_refused(job, holder):
    _, genuine, genuine_sig = holder
    mine = he.make_secret_context()
    forged = he.public_bytes(mine)
    agg = load_party(job, "agg")
    directory = load_directory(job)
    for sig in (genuine_sig, sign_public_context(agg, forged)):
        with pytest.raises(he.HEError):
            verify_public_context(directory, "lab", forged, sig)
    # the aggregator cannot make its own signature pass by naming itself the holder either
    with pytest.raises(he.HEError):
        verify_public_context(directory, "agg", forged, sign_public_context(agg, forged))


def test_a_32768_degree_840_bit_context_is_refused_even_signed_by_the_holder(job):
    big = ts.context(ts.SCHEME_TYPE.CKKS, 32768, coeff_mod_bit_sizes=[60] + [40] * 18 + [60])
    big.global_scale = 2.0**40
    public = he.public_bytes(big)
    lab = load_party(job, "lab")
    with pytest.raises(he.HEError) as err:
        verify_public_context(load_directory(job), "lab", public, sign_public_context(lab, public))
    assert "65536" in str(err.value) or "32768" in str(err.value)


@pytest.mark.parametrize("n, bits, scale", [(8192, [60, 40, 60], 2.0**40), (8192, [60, 40, 40, 60], 2.0**20), (4096, [40, 20, 40], 2.0**20)])
def test_unpinned_parameters_are_refused(n, bits, scale):
    ctx = ts.context(ts.SCHEME_TYPE.CKKS, n, coeff_mod_bit_sizes=bits)
    ctx.global_scale = scale
    with pytest.raises(he.HEError):
        check_params(ts.context_from(he.public_bytes(ctx)))


def test_a_restarted_holder_reloads_the_same_secret(job, holder):
    pdir, public, sig = holder
    station_ctx = verify_public_context(load_directory(job), "lab", public, sig)
    x = np.arange(12, dtype=float).reshape(3, 4) / 10
    cts = he.encrypt_batch(station_ctx, x)
    first, second = holder_secret_context(pdir), holder_secret_context(pdir)  # two starts
    for ctx in (first, second):
        assert np.abs(he.decrypt_batch(ctx, cts, (3, 4)) - x).max() < 1e-3
    assert (pdir / HOLDER_SECRET).stat().st_mode & 0o777 == 0o600


def test_a_readable_holder_secret_is_refused(job, holder):
    pdir, _, _ = holder
    (pdir / HOLDER_SECRET).chmod(0o644)
    with pytest.raises(KeyMaterialError) as err:
        holder_secret_context(pdir)
    assert str(pdir / HOLDER_SECRET) in str(err.value)


def test_decrypting_with_a_fresh_key_is_caught_not_trained_on(job, holder):
    """What a holder that made a new key at restart would read: garbage around 1e30."""
    _, public, sig = holder
    cts = he.encrypt_batch(verify_public_context(load_directory(job), "lab", public, sig), np.ones((4, 8)) * 0.5)
    garbage = he.decrypt_batch(he.make_secret_context(), cts, (4, 8))
    with pytest.raises(he.HEError):
        check_decrypted(garbage, bound=1e3)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf, 1e30])
def test_non_finite_or_out_of_range_values_are_refused(bad):
    x = np.zeros((2, 3))
    x[1, 2] = bad
    with pytest.raises(he.HEError):
        check_decrypted(x, bound=1e3)
    assert check_decrypted(np.full((2, 3), 999.0), bound=1e3).shape == (2, 3)


def test_a_context_holding_the_secret_is_refused_as_public(job, holder):
    pdir, _, _ = holder
    lab = load_party(job, "lab")
    secret_bytes = (pdir / HOLDER_SECRET).read_bytes()
    with pytest.raises(he.HEError):
        verify_public_context(load_directory(job), "lab", secret_bytes, sign_public_context(lab, secret_bytes))


def test_single_contributor_sums_are_refused_unless_allowed():
    from crypto.he_context import check_contributors

    with pytest.raises(he.HEError) as err:
        check_contributors(np.array([2, 2, 1, 2]))
    assert "1 of 4" in str(err.value)
    check_contributors(np.array([2, 3, 2]))
    check_contributors(np.array([1, 1]), allow_single=True)
