"""Renyi-DP accountant of the Gaussian mechanism: how much a job's noisy gradients reveal.

Why RDP: the label holder releases one noisy gradient row per sample and step, thousands of
releases per job; Renyi DP composes them by simple addition and converts once to the
(epsilon, delta) that the report states. The Gaussian mechanism with L2 sensitivity ``D`` and
noise standard deviation ``s`` has RDP ``alpha * D^2 / (2 s^2)`` at every order alpha (Mironov
2017); composing ``k`` releases multiplies it by ``k``. The conversion to (epsilon, delta) is
the one of Balle et al. 2020 (also Opacus'), with the classic one (Mironov 2017, Prop. 3)
kept for comparison: both are upper bounds, the first the tighter.

No subsampling amplification is claimed: each epoch visits every sample (shuffled, without
Poisson sampling), so every visit is a full release.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

ORDERS: tuple[float, ...] = tuple([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)) + [128, 256, 512, 1024])


def gaussian_rdp(order: float, sensitivity: float, std: float) -> float:
    """RDP of one Gaussian mechanism at ``order`` (> 1)."""
    if order <= 1 or std <= 0:
        raise ValueError(f"RDP needs order > 1 and std > 0, got order {order} std {std}")
    return order * sensitivity ** 2 / (2.0 * std ** 2)


def rdp_to_epsilon(order: float, rdp: float, delta: float, classic: bool = False) -> float:
    """(epsilon at ``delta``) implied by RDP ``rdp`` at ``order``."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must be in (0, 1), got {delta}")
    if classic:
        return rdp + math.log(1 / delta) / (order - 1)
    eps = rdp + math.log1p(-1 / order) - (math.log(delta) + math.log(order)) / (order - 1)
    return max(eps, 0.0)


def epsilon(rdp_per_order: dict[float, float], delta: float, classic: bool = False) -> tuple[float, float]:
    """The smallest epsilon over the orders, and the order that gives it."""
    best = min((rdp_to_epsilon(a, r, delta, classic), a) for a, r in rdp_per_order.items())
    return best


@dataclass(frozen=True)
class GaussianLabelDP:
    """Accounting of ``releases`` Gaussian releases per sample: noise multiplier ``sigma``
    (std = sigma * clip) on rows clipped to ``clip``; a changed label moves a clipped row by at
    most ``2 * clip`` (replace-one neighbours), so the sensitivity is ``2 * clip``."""

    sigma: float
    clip: float
    delta: float

    def rdp(self, releases: float) -> dict[float, float]:
        if self.sigma <= 0:
            return {a: math.inf for a in ORDERS}
        return {a: releases * gaussian_rdp(a, 2.0 * self.clip, self.sigma * self.clip) for a in ORDERS}

    def epsilon(self, releases: float) -> float:
        """epsilon at ``delta`` after ``releases`` (a sample released twice in one step counts 4:
        its contributions add up inside one sum, doubling the sensitivity)."""
        if releases <= 0:
            return 0.0
        if self.sigma <= 0:
            return math.inf
        return epsilon(self.rdp(releases), self.delta)[0]
