"""One modality's branch: what runs at the base station that owns the modality.

Raw-patch conv path + diffusion-feature path, each reduced to (hc, 2, 2) maps, then the client
half of the communication module. The federated split cuts exactly at ``forward``'s output, so
the same module serves centralised training, the edge agent and the ONNX station graph.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from feddiff.config import ModelSpec
from feddiff.model.comm import LowRankEncoder
from feddiff.model.features import DiffusionFeatures
from feddiff.model.schedule import NoiseSchedule
from feddiff.model.spectral import SpectralDenoiser
from feddiff.model.unet import DenoisingUNet, _groups


def conv_path(cin: int, hc: int, groups: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, hc, 3, padding=1),
        nn.GroupNorm(_groups(hc, groups), hc),
        nn.SiLU(),
        nn.Conv2d(hc, hc, 3, padding=1),
        nn.GroupNorm(_groups(hc, groups), hc),
        nn.SiLU(),
    )


def denoiser_kind(spec: ModelSpec) -> str:
    """``unet`` or ``spectral``: what ``model.denoiser`` resolves to. A 1 x 1 patch has no
    spatial structure for a 2-D U-Net to model, so ``auto`` picks the per-pixel denoiser there."""
    if spec.denoiser == "auto":
        return "spectral" if spec.patch_size == 1 else "unet"
    return spec.denoiser


def make_denoiser(in_channels: int, spec: ModelSpec) -> DenoisingUNet | SpectralDenoiser:
    kind = SpectralDenoiser if denoiser_kind(spec) == "spectral" else DenoisingUNet
    return kind(in_channels, spec.patch_size, spec.unet)


def make_schedule(spec: ModelSpec) -> NoiseSchedule:
    s = spec.schedule
    return NoiseSchedule(s.timesteps, s.beta_schedule, s.beta_start, s.beta_end)


class ModalityBranch(nn.Module):
    def __init__(self, in_channels: int, spec: ModelSpec, seed: int = 0) -> None:
        super().__init__()
        hc, g = spec.head_channels, spec.unet.groups
        self.in_channels = in_channels
        self.patch_size = spec.patch_size
        self.head_channels = hc
        self.unet = make_denoiser(in_channels, spec)  # "unet" names the denoiser in checkpoints, whichever kind
        self.use_diffusion = spec.use_diffusion
        self.features = DiffusionFeatures(self.unet, make_schedule(spec), spec.feature_timesteps, seed) if spec.use_diffusion else None
        self.raw_path = conv_path(in_channels, hc, g)
        diff_in = self.features.out_channels if self.features is not None else in_channels
        self.diff_path = conv_path(diff_in, hc, g)
        self.feature_dim = 2 * hc * 4
        self.encoder = LowRankEncoder(self.feature_dim, spec.comm.rank, spec.comm.bits) if spec.comm.enabled else None

    @property
    def wire_dim(self) -> int:
        return self.encoder.rank if self.encoder is not None else self.feature_dim

    def freeze_denoiser(self) -> None:
        """Stage 2 trains the classifier with the denoiser frozen (it was fitted on all pixels)."""
        for p in self.unet.parameters():
            p.requires_grad_(False)

    def diffusion_features(self, x: torch.Tensor) -> torch.Tensor:
        """The diffusion-path input: frozen-denoiser features (the patch itself in the ablation).
        Apart from ``maps`` because, with the denoiser frozen, it does not depend on the weights
        being trained: a station computes it for the next step while the last step's gradient
        is still on its way."""
        if self.features is None:
            return x
        with torch.set_grad_enabled(torch.is_grad_enabled() and any(p.requires_grad for p in self.unet.parameters())):
            return self.features(x)

    def maps(self, x: torch.Tensor, feats: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """(raw, diff) maps of shape (B, hc, 2, 2); ``feats``: ``diffusion_features(x)`` if known."""
        raw = F.adaptive_avg_pool2d(self.raw_path(x), 2)
        feats = self.diffusion_features(x) if feats is None else feats
        diff = F.adaptive_avg_pool2d(self.diff_path(feats), 2)
        return raw, diff

    def flat_features(self, x: torch.Tensor, feats: torch.Tensor | None = None) -> torch.Tensor:
        raw, diff = self.maps(x, feats)
        return torch.cat([raw.flatten(1), diff.flatten(1)], dim=1)

    def forward(self, x: torch.Tensor, feats: torch.Tensor | None = None) -> torch.Tensor:
        """What this station contributes: rank-r quantised codes (straight-through), or raw features."""
        flat = self.flat_features(x, feats)
        return self.encoder(flat) if self.encoder is not None else flat
