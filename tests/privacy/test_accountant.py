"""The RDP accountant against closed forms: the exact (epsilon, delta) curve of the Gaussian
mechanism (Balle & Wang 2018) bounds it from below, and the classic conversion meets the
zCDP closed form rho + 2 sqrt(rho log(1/delta))."""

from __future__ import annotations

import math

import pytest

from feddiff.privacy.accountant import GaussianLabelDP, epsilon, gaussian_rdp, rdp_to_epsilon


def phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def exact_delta(eps: float, mu: float) -> float:
    """delta(eps) of a Gaussian mechanism whose sensitivity / std is ``mu``."""
    return phi(mu / 2 - eps / mu) - math.exp(eps) * phi(-mu / 2 - eps / mu)


def exact_epsilon(mu: float, delta: float) -> float:
    lo, hi = 0.0, 500.0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if exact_delta(mid, mu) > delta else (lo, mid)
    return hi


@pytest.mark.parametrize("sigma,releases", [(1.0, 1), (2.0, 10), (8.0, 30), (20.0, 200)])
def test_rdp_epsilon_is_an_upper_bound_close_to_the_exact_one(sigma, releases):
    spec = GaussianLabelDP(sigma=sigma, clip=0.7, delta=1e-5)
    got = spec.epsilon(releases)
    # k Gaussian releases of sensitivity 2C and std sigma*C are one of std sigma*C/sqrt(k)
    exact = exact_epsilon(2.0 * math.sqrt(releases) / sigma, 1e-5)
    assert got >= exact * 0.999
    assert got <= exact * 1.6 + 0.05


def test_classic_conversion_meets_the_zcdp_closed_form():
    rho = 0.05  # RDP(alpha) = rho * alpha: sensitivity 1, std sqrt(10)
    rdp = {1 + a / 1000: gaussian_rdp(1 + a / 1000, 1.0, math.sqrt(10)) for a in range(1, 100000)}
    eps, order = epsilon(rdp, 1e-5, classic=True)
    closed = rho + 2 * math.sqrt(rho * math.log(1e5))
    assert eps == pytest.approx(closed, rel=1e-4)
    assert order == pytest.approx(1 + math.sqrt(math.log(1e5) / rho), rel=1e-2)


def test_improved_conversion_is_never_worse_than_the_classic():
    for a in (1.5, 2.0, 8.0, 32.0):
        r = gaussian_rdp(a, 2.0, 3.0)
        assert rdp_to_epsilon(a, r, 1e-5) <= rdp_to_epsilon(a, r, 1e-5, classic=True)


def test_more_noise_or_fewer_releases_means_smaller_epsilon():
    low, high = GaussianLabelDP(2.0, 1.0, 1e-5), GaussianLabelDP(4.0, 1.0, 1e-5)
    assert high.epsilon(30) < low.epsilon(30)
    assert low.epsilon(10) < low.epsilon(30)
    assert GaussianLabelDP(0.0, 1.0, 1e-5).epsilon(1) == math.inf
    assert low.epsilon(0) == 0.0


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError):
        gaussian_rdp(1.0, 1.0, 1.0)
    with pytest.raises(ValueError):
        rdp_to_epsilon(2.0, 1.0, 0.0)
