"""Diffusion features: middle-block activations of a frozen denoiser at fixed timesteps.

The noise added at each timestep is a fixed tensor drawn once from a seed and stored as a
buffer, so extraction is a pure function of the patch: the ONNX export reproduces it exactly
and every base station computes the same features for the same pixel.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from feddiff.model.schedule import NoiseSchedule
from feddiff.model.unet import DenoisingUNet


class DiffusionFeatures(nn.Module):
    def __init__(self, unet: DenoisingUNet, schedule: NoiseSchedule, timesteps: list[int], seed: int = 0) -> None:
        super().__init__()
        self.unet = unet
        self.timesteps = list(timesteps)
        gen = torch.Generator().manual_seed(seed)
        p = unet.patch_size
        noise = torch.randn(len(timesteps), unet.in_channels, p, p, generator=gen)
        ab = schedule.alpha_bar[torch.tensor(self.timesteps)]
        self.register_buffer("noise", noise)
        self.register_buffer("sqrt_ab", ab.sqrt().view(-1, 1, 1, 1, 1))
        self.register_buffer("sqrt_1mab", (1 - ab).sqrt().view(-1, 1, 1, 1, 1))
        self.register_buffer("t", torch.tensor(self.timesteps, dtype=torch.long))

    @property
    def out_channels(self) -> int:
        return len(self.timesteps) * self.unet.mid_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C, P, P) -> (B, K * mid_channels, m, m), all K timesteps in one batched pass."""
        k, b = len(self.timesteps), x.shape[0]
        xt = self.sqrt_ab * x.unsqueeze(0) + self.sqrt_1mab * self.noise.unsqueeze(1)  # K, B, C, P, P
        t = self.t.repeat_interleave(b)
        mid = self.unet.encode(xt.reshape(k * b, *x.shape[1:]), t)  # K*B, Cm, m, m
        mid = mid.reshape(k, b, *mid.shape[1:]).transpose(0, 1)
        return mid.reshape(b, k * mid.shape[2], mid.shape[3], mid.shape[4])
