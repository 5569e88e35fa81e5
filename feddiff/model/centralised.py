"""Centralised FedDiff training: stage 1 denoisers on all pixels, stage 2 the fusion classifier,
with what is chosen per scene chosen on a validation split of the training pixels.

This is the upper bound the federated run is compared with, and the federated roles reuse its
pieces (``pretrain_denoiser`` runs unchanged at each station; ``train_classifier`` is what the
wire splits in two). Test pixels are read once, for the final metrics.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from dataclasses import dataclass

import numpy as np

from feddiff.config import Config
from feddiff.data.patches import labelled_pixels
from feddiff.data.scene import Scene
from feddiff.data.sources import PatchSource, PixelSet, pixel_sets, sources
from feddiff.data.splits import validation_split
from feddiff.metrics import classification_metrics
from feddiff.model.ensemble import EnsembleNet, build_net
from feddiff.model.net import FedDiffNet
from feddiff.model.pretrain import pretrain_denoiser, set_seed
from feddiff.model.selection import select_and_train
from feddiff.model.stage2 import History, predict

log = logging.getLogger("feddiff.train")


@dataclass
class TrainResult:
    net: FedDiffNet | EnsembleNet
    sources: dict[str, PatchSource]
    metrics: dict
    history: History
    cfg: Config | None = None  # the config as trained (patch size resolved for sample tables)


def effective_config(cfg: Config, scene: Scene) -> Config:
    """A sample table's rows are unrelated pixels, so a patch around one would mix strangers:
    such scenes train at patch size 1 whatever ``model.patch_size`` says for rasters."""
    if scene.meta.get("sample_table") and cfg.model.patch_size != 1:
        return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, patch_size=1))
    return cfg


def train_centralised(cfg: Config, scene: Scene, modalities: list[str], progress: bool = True) -> TrainResult:
    """Both stages, the per-scene choices on validation pixels, then evaluation on the test pixels."""
    cfg = effective_config(cfg, scene)
    t0 = time.perf_counter()
    set_seed(cfg.train.seed, cfg.train.threads)
    srcs = sources(scene, modalities, cfg.model.patch_size)
    train, test = pixel_sets(scene)
    fit_map, val_map = validation_split(scene.train_labels, cfg.train.val_fraction, cfg.train.seed)
    fit, val = PixelSet(*labelled_pixels(fit_map)), PixelSet(*labelled_pixels(val_map))
    net = build_net({m: scene.modalities[m].shape[2] for m in modalities}, scene.num_classes, cfg.model, cfg.train.seed)
    hist = History()
    for m in modalities:
        losses = pretrain_denoiser(net.branches[m], srcs[m], cfg, cfg.train.seed, progress, desc=f"pretrain {m}")
        if losses:
            hist.pretrain_loss[m] = float(np.mean(losses[-20:]))
    t1 = time.perf_counter()
    hist.epochs, hist.selection = select_and_train(net, srcs, train, fit, val, scene.train_labels, cfg, progress)
    t2 = time.perf_counter()
    pred = predict(net, srcs, test.rows, test.cols, cfg.train.eval_batch, progress)
    metrics = classification_metrics(test.labels, pred, scene.num_classes)
    hist.seconds = {"pretrain": t1 - t0, "classifier": t2 - t1, "evaluate": time.perf_counter() - t2}
    return TrainResult(net, srcs, metrics, hist, cfg)
