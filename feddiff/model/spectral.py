"""Spectral denoiser: a residual MLP over each pixel's bands, for pixel tables (patch size 1).

Why not the U-Net there: on a 1 x 1 patch every 3 x 3 convolution sees one pixel through its
centre tap, the frequency block transforms a length-1 axis and attention attends to one token;
what is left is an MLP with eight times the weights it can use. This is that MLP, built to be a
drop-in for ``DenoisingUNet``: the same ``unet.Denoiser`` interface (``stem`` / ``encode_stem`` /
``encode`` / ``forward``), the same sinusoidal timestep embedding, and its feature tap is again
the middle block, so ``DiffusionFeatures``, stage-1 pretraining, the federated station and the
ONNX export take it unchanged.

Every layer is a 1 x 1 convolution, so it runs on (B, C, P, P) for any P: each pixel of a patch is
denoised from its own spectrum alone (which is what "spectral" means here). The U shape is kept
(skips from the down blocks into the up blocks) because the denoising objective needs the input's
detail back at the output; the classifier only ever reads the middle.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from feddiff.config_specs import UNetSpec
from feddiff.model.unet import Denoiser, ResBlock, _groups, timestep_embedding


class PixelGroupNorm(nn.GroupNorm):
    """GroupNorm whose statistics are taken over each pixel's channel group alone.

    ``nn.GroupNorm`` also averages over the spatial positions, which would let one pixel of a
    patch shift every other pixel's features; here a pixel is normalised from its own spectrum.
    On a 1 x 1 patch the two are the same computation, so the library op runs there."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if h * w == 1:
            return super().forward(x)
        g = x.reshape(-1, self.num_groups, c // self.num_groups, h, w)
        g = (g - g.mean(dim=2, keepdim=True)) * torch.rsqrt(g.var(dim=2, unbiased=False, keepdim=True) + self.eps)
        return g.reshape(-1, c, h, w) * self.weight[:, None, None] + self.bias[:, None, None]


def _pixel_groups(channels: int, wanted: int) -> int:
    """At least four channels per group: a per-pixel group of one channel normalises to a
    constant (mean removed, unit variance of a single value), erasing the spectrum."""
    return _groups(channels, max(1, min(wanted, channels // 4)))


def PixelResBlock(cin: int, cout: int, tdim: int, groups: int) -> ResBlock:
    """``unet.ResBlock`` per pixel: 1 x 1 convolutions and the per-pixel group norm."""
    return ResBlock(cin, cout, tdim, groups, kernel=1, norm=lambda c: PixelGroupNorm(_pixel_groups(c, groups), c))


class SpectralDenoiser(Denoiser):
    """Predicts the noise in a noisy pixel spectrum. ``encode`` stops at the middle block.

    Widths follow the U-Net's spec: ``base_channels * mult`` per level, ``num_res_blocks`` blocks
    per level, so one ``model.unet`` section sizes either denoiser and the feature width
    (``mid_channels``) is the same as the U-Net's for the same spec.
    """

    def __init__(self, in_channels: int, patch_size: int, spec: UNetSpec = UNetSpec()) -> None:
        super().__init__()
        base_channels, channel_mult, num_res_blocks, groups = spec.base_channels, spec.channel_mult, spec.num_res_blocks, spec.groups
        self.in_channels = in_channels
        self.patch_size = patch_size
        self.base_channels = base_channels
        tdim = base_channels * 4
        self.time_mlp = nn.Sequential(nn.Linear(base_channels, tdim), nn.SiLU(), nn.Linear(tdim, tdim))
        self.conv_in = nn.Conv2d(in_channels, base_channels, 1)
        self.down = nn.ModuleList()
        widths = [base_channels]
        ch = base_channels
        for mult in channel_mult:
            for _ in range(num_res_blocks):
                self.down.append(PixelResBlock(ch, base_channels * mult, tdim, groups))
                ch = base_channels * mult
                widths.append(ch)
        self.mid_channels = ch
        self.mid_size = patch_size
        self.mid1 = PixelResBlock(ch, ch, tdim, groups)
        self.mid2 = PixelResBlock(ch, ch, tdim, groups)
        self.up = nn.ModuleList()
        for mult in reversed(list(channel_mult)):
            for _ in range(num_res_blocks):
                self.up.append(PixelResBlock(ch + widths.pop(), base_channels * mult, tdim, groups))
                ch = base_channels * mult
        self.up.append(PixelResBlock(ch + widths.pop(), base_channels, tdim, groups))
        self.out = nn.Sequential(PixelGroupNorm(_pixel_groups(base_channels, groups), base_channels), nn.SiLU(), nn.Conv2d(base_channels, in_channels, 1))

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        """The first (linear) layer; ``DiffusionFeatures`` runs it once per patch."""
        return self.conv_in(x)

    def _encode(self, h: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, list[torch.Tensor]]:
        temb = self.time_mlp(timestep_embedding(t, self.base_channels))
        hs = [h]
        for block in self.down:
            h = block(h, temb)
            hs.append(h)
        return self.mid2(self.mid1(h, temb), temb), temb, hs

    def _decode(self, h: torch.Tensor, temb: torch.Tensor, hs: list[torch.Tensor]) -> torch.Tensor:
        for block in self.up:
            h = block(torch.cat([h, hs.pop()], dim=1), temb)
        return self.out(h)
