"""Checkpoints that load with ``torch.load(weights_only=True)``: tensors and plain data only.

The normalisation statistics and the config travel with the weights, because a model is useless
at a base station without the exact band statistics it was trained with.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from feddiff import __version__
from feddiff.config import Config, config_from_dict, config_hash
from feddiff.data.normalise import BandStats
from feddiff.errors import FedDiffError
from feddiff.model.ensemble import EnsembleNet, build_net
from feddiff.model.net import FedDiffNet
from feddiff.state.atomic import atomic_torch_save  # noqa: F401 - re-exported for callers of this module


def save_checkpoint(
    path: Path, net: FedDiffNet | EnsembleNet, cfg: Config, stats: dict[str, BandStats], class_names: list[str], metrics: dict | None = None
) -> None:
    cfg_dict = dataclasses.asdict(cfg)
    atomic_torch_save(
        {
            "format": "feddiff-checkpoint-1",
            "version": __version__,
            "state_dict": net.state_dict(),
            "modalities": list(net.modalities),
            "bands": {m: int(net.branches[m].in_channels) for m in net.modalities},
            "stats": {m: s.to_dict() for m, s in stats.items()},
            "class_names": list(class_names),
            "config": cfg_dict,
            "config_hash": config_hash(cfg),
            "metrics": metrics or {},
        },
        path,
    )


def load_checkpoint(path: Path) -> tuple[FedDiffNet | EnsembleNet, dict]:
    """Rebuild the network from the stored config and load the weights (no pickle of code)."""
    path = Path(path)
    if not path.is_file():
        raise FedDiffError(f"{path}: checkpoint not found")
    try:
        ck = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for a bad file
        raise FedDiffError(f"{path}: not a readable FedDiff checkpoint ({type(exc).__name__})") from None
    if not isinstance(ck, dict) or ck.get("format") != "feddiff-checkpoint-1":
        raise FedDiffError(f"{path}: not a FedDiff checkpoint")
    cfg = config_from_dict(_strip_source(ck["config"]), str(path), check_files=False)
    net = build_net(ck["bands"], len(ck["class_names"]), cfg.model, cfg.train.seed)
    net.load_state_dict(ck["state_dict"])
    net.eval()
    ck["cfg"] = cfg
    ck["stats"] = {m: BandStats.from_dict(d) for m, d in ck["stats"].items()}
    return net, ck


def _strip_source(d: dict) -> dict:
    """The stored config as ``config_from_dict`` takes it. A checkpoint written before
    ``model.denoiser`` existed was trained with the U-Net whatever its patch size: say so, or
    ``auto`` would rebuild a patch-size-1 model with the spectral denoiser and refuse its weights."""
    d = dict(d)
    d.pop("source", None)
    if isinstance(d.get("model"), dict) and "denoiser" not in d["model"]:
        d["model"] = {**d["model"], "denoiser": "unet"}
    return d
