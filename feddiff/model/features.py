"""Diffusion features: middle-block activations of a frozen denoiser at fixed timesteps.

The noise added at each timestep is a fixed tensor drawn once from a seed and stored as a
buffer, so extraction is a pure function of the patch: the ONNX export reproduces it exactly
and every base station computes the same features for the same pixel. Either denoiser fits
(``unet.DenoisingUNet`` or ``spectral.SpectralDenoiser``): both expose a linear ``stem``,
``encode_stem`` and ``mid_channels``.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from feddiff.model.schedule import NoiseSchedule
from feddiff.model.spectral import SpectralDenoiser
from feddiff.model.unet import DenoisingUNet


class DiffusionFeatures(nn.Module):
    def __init__(self, unet: DenoisingUNet | SpectralDenoiser, schedule: NoiseSchedule, timesteps: list[int], seed: int = 0) -> None:
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
        """(B, C, P, P) -> (B, K * mid_channels, m, m), channels grouped by timestep.

        Two exact shortcuts, both checked against the direct computation by the tests:
        the U-Net's first convolution is linear, so ``stem(a x + s n) = a stem(x) + s stem(n)
        + (1 - a - s) bias`` runs it once per patch instead of once per timestep (it is the
        widest convolution for a hyperspectral cube); and each timestep gets its own pass with a
        shared (1,)-shaped ``t``, so its embedding is a constant the ONNX optimiser folds into
        the convolution biases instead of a per-sample tensor added at every block.
        """
        unet = self.unet
        stem_x = unet.stem(x)
        stem_noise = unet.stem(self.noise)  # K, C0, P, P: constants at inference
        bias = unet.conv_in.bias[:, None, None]
        feats = []
        for k in range(len(self.timesteps)):
            a, s = self.sqrt_ab[k], self.sqrt_1mab[k]  # (1, 1, 1, 1)
            stem = a * stem_x + (s * stem_noise[k] + (1 - a - s) * bias)
            feats.append(unet.encode_stem(stem, self.t[k : k + 1]))
        return torch.cat(feats, dim=1)
