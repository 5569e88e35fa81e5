"""Label DP on returned gradients: per-sample clipping and Gaussian noise, and the per-sample
ledger of releases the accountant reads.

Why here and how: the gradient a label holder returns is label-dependent per sample (softmax
minus one-hot shows the class as its lowest entry; ``grad_z`` clusters by class). Each sample's
own gradient row is clipped to L2 norm ``clip`` and gets N(0, (sigma * clip)^2) per entry, then
the rows are scaled back to the mean-loss gradient the receiver expects. Where the label holder
also trains a head on the labels (HE), the head's update must come from the same noisy release
or the head itself would carry the labels into later gradients: ``noisy_head_step`` clips each
sample's joint (head parameters, input row) gradient and noises both the parameter sum and the
rows, one Gaussian mechanism per step.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch.nn as nn
from torch.func import functional_call, grad, vmap

from feddiff.privacy.accountant import GaussianLabelDP
from feddiff.state.atomic import write_json_atomic

log = logging.getLogger("feddiff.privacy")


def clip_rows(rows: torch.Tensor, clip: float) -> torch.Tensor:
    """Each row scaled to L2 norm at most ``clip``."""
    norms = rows.norm(dim=1, keepdim=True).clamp_min(1e-12)
    return rows * (clip / norms).clamp(max=1.0)


def noisy_rows(per_sample: torch.Tensor, sigma: float, clip: float, gen: Optional[torch.Generator] = None) -> torch.Tensor:
    """Clipped rows plus N(0, (sigma*clip)^2) noise: the released per-sample gradients."""
    out = clip_rows(per_sample, clip)
    if sigma > 0:
        out = out + torch.randn(out.shape, generator=gen) * (sigma * clip)
    return out


def noisy_mean_grad(mean_grad: torch.Tensor, sigma: float, clip: float, gen: Optional[torch.Generator] = None) -> torch.Tensor:
    """A mean-loss gradient w.r.t. per-sample inputs (row i = grad of loss_i / B), privatised:
    back to per-sample rows, clipped and noised, then divided by B again."""
    b = mean_grad.shape[0]
    return noisy_rows(mean_grad * b, sigma, clip, gen) / max(b, 1)


def noisy_head_step(head: nn.Module, z: torch.Tensor, y: torch.Tensor, sigma: float, clip: float,
                    gen: Optional[torch.Generator] = None, smoothing: float = 0.0) -> tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]:
    """DP-SGD on a head and its input in one release: per sample the joint gradient of its own
    cross-entropy w.r.t. (head parameters, input row) is clipped to ``clip``; the parameter sum
    and every input row get N(0, (sigma*clip)^2). Returns (mean parameter gradients, mean-loss
    gradient of z, per-sample logits) so callers step an optimiser and release the rows.
    ``smoothing``: label smoothing of each cross-entropy (``train.label_smoothing``)."""
    params = {k: v.detach() for k, v in head.named_parameters()}

    def loss_one(p: dict, zi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        logits = functional_call(head, p, (zi.unsqueeze(0),))
        return nn.functional.cross_entropy(logits, yi.unsqueeze(0), label_smoothing=smoothing)

    gp, gz = vmap(grad(loss_one, argnums=(0, 1)), in_dims=(None, 0, 0))(params, z.detach(), y)
    b = z.shape[0]
    sq = gz.pow(2).sum(1) + sum(g.reshape(b, -1).pow(2).sum(1) for g in gp.values())
    scale = (clip / sq.sqrt().clamp_min(1e-12)).clamp(max=1.0)
    rows = gz * scale[:, None]
    param_grads = {}
    for k, g in gp.items():
        s = (g * scale.view(-1, *([1] * (g.dim() - 1)))).sum(0)
        param_grads[k] = (s + (torch.randn(s.shape, generator=gen) * sigma * clip if sigma > 0 else 0)) / b
    if sigma > 0:
        rows = rows + torch.randn(rows.shape, generator=gen) * sigma * clip
    with torch.no_grad():
        logits = head(z.detach())
    return param_grads, rows / b, logits


class ReleaseLedger:
    """How often each training sample's label has been in a released gradient, persisted so a
    restart never forgets a release (a rerun round releases again, and is counted again).
    Only the worst sample's count is stored: after a restart every sample starts from it."""

    def __init__(self, path: Path, n: int, spec: GaussianLabelDP) -> None:
        self.path, self.spec = Path(path), spec
        start = 0.0
        if self.path.exists():
            start = float(json.loads(self.path.read_text()).get("max_units", 0.0))
        self.units = np.full(n, start, dtype=np.float64)

    def record(self, idx: np.ndarray) -> None:
        """One release of the samples ``idx`` (a sample twice in one batch counts 2^2)."""
        counts = np.bincount(np.asarray(idx, dtype=np.int64), minlength=self.units.shape[0])
        self.units += counts.astype(np.float64) ** 2
        write_json_atomic(self.path, self.summary())

    def summary(self) -> dict:
        worst = float(self.units.max()) if self.units.size else 0.0
        s = self.spec
        return {"mechanism": "gaussian", "sigma": s.sigma, "clip": s.clip, "delta": s.delta, "max_units": worst,
                "epsilon": s.epsilon(worst), "accountant": "rdp"}


def make_ledger(state_dir: Path, n: int, sigma: float, clip: float, delta: float) -> ReleaseLedger:
    return ReleaseLedger(Path(state_dir) / "label_dp.json", n, GaussianLabelDP(sigma, clip, delta))


def noise_generator() -> torch.Generator:
    """The noise's own generator, seeded from the OS: every party knows ``train.seed``, so noise
    drawn from it could be subtracted again."""
    import secrets

    gen = torch.Generator()
    gen.manual_seed(secrets.randbits(63))
    return gen


class LabelPrivacy:
    """One label holder's label DP: its settings (``train.label_dp_*``), its own noise generator
    and the ledger of releases; ``on`` is False when sigma is 0 (gradients returned exactly)."""

    def __init__(self, sigma: float, clip: float, delta: float, state_dir: Path, n: int) -> None:
        self.sigma, self.clip, self.delta = float(sigma), float(clip), float(delta)
        self.on = self.sigma > 0
        self.gen = noise_generator() if self.on else None
        self.ledger = make_ledger(state_dir, n, self.sigma, self.clip, self.delta) if self.on else None

    def summary(self) -> dict:
        """What the holder publishes: epsilon at delta so far, or that label DP is off."""
        return {"enabled": True, **self.ledger.summary()} if self.ledger is not None else {"enabled": False}

    def log_line(self) -> str:
        if self.ledger is None:
            return "label DP off: returned gradients are exact"
        s = self.ledger.summary()
        return f"label DP: epsilon {s['epsilon']:.3g} at delta {s['delta']:g} (sigma {s['sigma']:g}, clip {s['clip']:g})"
