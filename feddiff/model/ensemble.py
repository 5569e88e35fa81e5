"""Stage-2 ensemble: several classifiers over one set of frozen denoisers and one feature pass.

Why: with 819 labelled Trento pixels the fusion head fits the training set within ten epochs,
and which of its many exact fits a stage-2 run lands in moves test OA by points (README,
"Measured results"). Averaging the probabilities of K independently initialised and shuffled
stage-2 runs removes most of that lottery. The denoisers and their fixed feature noise are
shared, so the diffusion features (almost all of the compute per pixel) run once for all
members; each member adds only its conv paths, comm module and fusion head.

Member 0 is exactly the single model (``FedDiffNet`` with the config's seed), so ``members: 1``
is FedDiff as before and the ensemble is a centralised-training and whole-graph-export feature:
federation trains one member (``check_federable``).
"""

from __future__ import annotations

import dataclasses

import torch
import torch.nn as nn

from feddiff.config import Config, ModelSpec
from feddiff.errors import FedDiffError
from feddiff.model.net import FedDiffNet

MEMBER_SEED_STRIDE = 7919  # member k initialises and shuffles from seed + k * stride


class EnsembleNet(nn.Module):
    """Looks like a ``FedDiffNet`` to training, checkpoints and export: ``branches`` and
    ``head`` are member 0's (stage 1 trains ``branches[m].unet``, shared by every member)."""

    def __init__(self, bands: dict[str, int], num_classes: int, spec: ModelSpec, seed: int = 0) -> None:
        super().__init__()
        nets = [FedDiffNet(bands, num_classes, spec, member_seed(seed, k)) for k in range(spec.members)]
        first = nets[0]
        for net in nets[1:]:
            for m, branch in net.branches.items():
                branch.unet = first.branches[m].unet
                if branch.features is not None:
                    branch.features = first.branches[m].features  # same denoiser, same noise
        self.members = nn.ModuleList(nets)
        self.modalities = first.modalities

    @property
    def branches(self) -> nn.ModuleDict:
        return self.members[0].branches

    @property
    def head(self) -> nn.Module:
        return self.members[0].head

    def forward(self, patches: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(log of the members' mean class probabilities, {}): argmax and softmax of it are the
        ensemble's prediction and probabilities."""
        feats = {m: self.branches[m].diffusion_features(patches[m]) for m in self.modalities}
        probs = [torch.softmax(net(patches, feats, with_singles=False)[0], dim=1) for net in self.members]
        return torch.log(torch.stack(probs).mean(dim=0)), {}


def member_seed(seed: int, k: int) -> int:
    return seed + k * MEMBER_SEED_STRIDE


def build_net(bands: dict[str, int], num_classes: int, spec: ModelSpec, seed: int = 0) -> FedDiffNet | EnsembleNet:
    """The centralised model the config describes: one ``FedDiffNet``, or an ensemble of them."""
    if spec.members > 1:
        return EnsembleNet(bands, num_classes, spec, seed)
    return FedDiffNet(bands, num_classes, spec, seed)


def members(net: nn.Module) -> list[FedDiffNet]:
    """The stage-2 models to train, in order (member k's config: ``member_config(cfg, k)``)."""
    return list(net.members) if isinstance(net, EnsembleNet) else [net]


def member_config(cfg: Config, k: int) -> Config:
    """Member k's stage-2 run: its own batch order, augmentation and dropout masks."""
    if k == 0:
        return cfg
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=member_seed(cfg.train.seed, k)))


def check_federable(spec: ModelSpec, where: str) -> None:
    """Federation cuts one ``FedDiffNet`` at the wire; an ensemble would multiply every
    station's traffic by K, so it is refused rather than silently trained as one member."""
    if spec.members > 1:
        raise FedDiffError(
            f"{where}: model.members is {spec.members}, but federated training trains one member; "
            "set model.members: 1 (the ensemble is for feddiff train and its export)"
        )
