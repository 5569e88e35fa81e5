"""The whole FedDiff classifier as one module, for centralised training and export.

It is only a composition: ``branches[m]`` is exactly what station m runs and ``head`` exactly
what the aggregator runs, so federation cuts it at the wire without rewriting it.
"""

from __future__ import annotations

import zlib

import torch
import torch.nn as nn

from feddiff.config import ModelSpec
from feddiff.model.branch import ModalityBranch
from feddiff.model.fusion import FusionHead


class FedDiffNet(nn.Module):
    def __init__(self, bands: dict[str, int], num_classes: int, spec: ModelSpec, seed: int = 0) -> None:
        super().__init__()
        self.modalities = list(bands)
        self.branches = nn.ModuleDict({m: build_branch(c, spec, seed, m) for m, c in bands.items()})
        self.head = build_head(self.modalities, num_classes, spec, seed)

    def forward(
        self,
        patches: dict[str, torch.Tensor],
        feats: dict[str, torch.Tensor] | None = None,
        with_singles: bool = True,
        masks: torch.Generator | None = None,
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """``feats``: each branch's ``diffusion_features``, when an ensemble computed them once;
        ``with_singles`` and ``masks``: see ``FusionHead.forward``."""
        wire = {m: self.branches[m](patches[m], None if feats is None else feats[m]) for m in self.modalities}
        return self.head(wire, with_singles, masks)


def branch_seed(seed: int, modality: str) -> int:
    """Seed of a branch's fixed feature noise: a function of the modality name, so a station
    that builds only its own branch gets the same noise as the centralised model."""
    return seed + zlib.crc32(modality.encode()) % 100_000


def build_branch(bands: int, spec: ModelSpec, seed: int, modality: str) -> ModalityBranch:
    """A station's half alone. Initialised from its own seeded generator, so a station that
    builds only its branch starts from the very weights the centralised model starts from."""
    s = branch_seed(seed, modality)
    with torch.random.fork_rng():
        torch.manual_seed(s)
        return ModalityBranch(bands, spec, s)


def build_head(modalities: list[str], num_classes: int, spec: ModelSpec, seed: int = 0) -> FusionHead:
    """The aggregator's half alone (it never builds a branch); seeded like ``build_branch``."""
    with torch.random.fork_rng():
        torch.manual_seed(seed + 7)
        return _head(modalities, num_classes, spec)


def _head(modalities: list[str], num_classes: int, spec: ModelSpec) -> FusionHead:
    rank = spec.comm.rank if spec.comm.enabled else None
    return FusionHead(modalities, spec.head_channels, num_classes, rank, spec.unet.groups, spec.dropout, spec.diff_dropout)
