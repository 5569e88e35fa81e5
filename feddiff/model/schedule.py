"""DDPM noise schedule, kept apart from any network (diffusers' scheduler/model split).

The schedule only knows how to corrupt data and how to score a denoiser's guess; the U-Net only
knows how to guess. That keeps feature extraction and training free to share one schedule.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


class NoiseSchedule:
    """Betas, alphas and cumulative alpha-bar for T steps (linear as in DDPM, or cosine)."""

    def __init__(
        self, timesteps: int = 500, kind: str = "linear", beta_start: float = 1e-4, beta_end: float = 0.02
    ) -> None:
        if timesteps < 2:
            raise ValueError(f"timesteps must be >= 2, got {timesteps}")
        self.timesteps = timesteps
        self.kind = kind
        if kind == "linear":
            betas = torch.linspace(beta_start, beta_end, timesteps, dtype=torch.float64)
        elif kind == "cosine":
            s = 0.008
            steps = torch.arange(timesteps + 1, dtype=torch.float64) / timesteps
            f = torch.cos((steps + s) / (1 + s) * math.pi / 2) ** 2
            betas = (1 - f[1:] / f[:-1]).clamp(max=0.999)
        else:
            raise ValueError(f"unknown beta schedule {kind!r} (expected linear or cosine)")
        self.betas = betas.float()
        self.alphas = (1 - betas).float()
        self.alpha_bar = torch.cumprod(1 - betas, dim=0).float()

    def add_noise(self, x0: torch.Tensor, t: torch.Tensor, noise: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) noise, with t broadcast per sample."""
        ab = self.alpha_bar.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * noise

    def sample_timesteps(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.randint(0, self.timesteps, (n,), generator=generator)


def denoising_loss(predicted_noise: torch.Tensor, noise: torch.Tensor, kind: str = "l1") -> torch.Tensor:
    """L1 on the noise by default (as the published FedDiff code), MSE as the classic DDPM option."""
    if kind == "l1":
        return F.l1_loss(predicted_noise, noise)
    if kind == "mse":
        return F.mse_loss(predicted_noise, noise)
    raise ValueError(f"unknown denoising loss {kind!r} (expected l1 or mse)")
