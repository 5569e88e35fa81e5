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
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from feddiff.config import Config
from feddiff.data.patches import labelled_pixels
from feddiff.data.scene import Scene
from feddiff.data.sources import PatchSource, PixelSet, pixel_sets, sources
from feddiff.data.splits import validation_split
from feddiff.metrics import classification_metrics
from feddiff.model.featcache import FeatureCache
from feddiff.model.ensemble import EnsembleNet, build_net, member_config, members
from feddiff.model.losses import feddiff_loss
from feddiff.model.net import FedDiffNet
from feddiff.model.optim import batches, cosine_lr, epoch_plan, epoch_rng, make_optimizer, set_lr
from feddiff.model.pretrain import pretrain_denoiser, set_seed

log = logging.getLogger("feddiff.train")


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    pretrain_loss: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    selection: dict = field(default_factory=dict)


def train_classifier(
    net: FedDiffNet,
    srcs: dict[str, PatchSource],
    train: PixelSet,
    cfg: Config,
    progress: bool = True,
    on_epoch: Callable[[int, dict], None] | None = None,
    val: PixelSet | None = None,
    stop_at: int | None = None,
    cache: FeatureCache | None = None,
) -> list[dict]:
    """Stage 2: branches' conv paths, comm module and head on the labelled training pixels,
    denoisers frozen. With ``val`` each epoch's row carries ``val_oa``; ``stop_at`` ends the run
    after that many epochs of the full ``train.epochs`` cosine schedule (the epoch a validation
    run chose). ``cache`` keeps the frozen denoiser's features across epochs and runs."""
    t = cfg.train
    opt = make_optimizer([net], t)
    labels = torch.from_numpy(train.labels).long()
    history: list[dict] = []
    bar = tqdm(range(min(stop_at or t.epochs, t.epochs)), desc="classifier", disable=not progress, leave=False)
    for epoch in bar:
        net.train()
        set_lr(opt, cosine_lr(t.lr, epoch, t.epochs))
        parts_sum: dict[str, float] = {}
        correct = 0
        for idx, dih in epoch_plan(len(train), t.batch_size, epoch_rng(t.seed, epoch), t.augment):
            patches = {m: s.patches(train.rows[idx], train.cols[idx], dih) for m, s in srcs.items()}
            feats = cache.features(net, patches, train.rows[idx], train.cols[idx], dih) if cache is not None else None
            logits, singles = net(patches, feats)
            loss, parts = feddiff_loss(logits, singles, labels[idx], net.named_parameters(), t.mse_weight, t.l2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct += int((logits.argmax(1) == labels[idx]).sum())
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v * idx.shape[0]
        row = {"epoch": epoch + 1, "train_acc": correct / len(train), **{k: v / len(train) for k, v in parts_sum.items()}}
        if val is not None and len(val):
            row["val_oa"] = float(np.mean(predict(net, srcs, val.rows, val.cols, t.eval_batch, cache=cache) == val.labels))
        history.append(row)
        bar.set_postfix(loss=f"{row['total']:.3f}", acc=f"{row['train_acc']:.3f}")
        log.info("epoch %d/%d loss %.4f train acc %.3f", epoch + 1, t.epochs, row["total"], row["train_acc"])
        if on_epoch:
            on_epoch(epoch, row)
    return history


def train_stage2(
    net: FedDiffNet | EnsembleNet, srcs: dict[str, PatchSource], train: PixelSet, cfg: Config,
    progress: bool = True, stop_at: int | None = None, cache: FeatureCache | None = None,
) -> list[dict]:
    """Stage 2 for each member in turn (one for a plain model); an ensemble's rows carry
    ``member``. Members share the frozen denoisers, so each run is ``train_classifier`` as is."""
    nets = members(net)
    if len(nets) == 1:
        return train_classifier(net, srcs, train, cfg, progress, stop_at=stop_at, cache=cache)
    for branch in net.branches.values():  # also with pretrain_steps 0: no member may move the others' denoiser
        branch.freeze_denoiser()
    rows: list[dict] = []
    for k, member in enumerate(nets):
        log.info("stage 2, ensemble member %d/%d", k + 1, len(nets))
        rows.extend({**row, "member": k} for row in train_classifier(member, srcs, train, member_config(cfg, k), progress, stop_at=stop_at, cache=cache))
    return rows


@torch.no_grad()
def predict(
    net: FedDiffNet | EnsembleNet, srcs: dict[str, PatchSource], rows: np.ndarray, cols: np.ndarray, batch: int,
    progress: bool = False, cache: FeatureCache | None = None,
) -> np.ndarray:
    """0-based class ids for the given pixels, in batches (bounded memory); ``cache`` only for
    a single ``FedDiffNet`` (validation during stage 2)."""
    was_training = net.training
    net.eval()
    out = np.empty(rows.shape[0], dtype=np.int64)
    for idx in tqdm(batches(rows.shape[0], batch, None), desc="predict", disable=not progress, leave=False):
        patches = {m: s.patches(rows[idx], cols[idx]) for m, s in srcs.items()}
        feats = cache.features(net, patches, rows[idx], cols[idx], None) if cache is not None else None
        out[idx] = net(patches, feats)[0].argmax(1).numpy() if feats is not None else net(patches)[0].argmax(1).numpy()
    net.train(was_training)
    return out


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
    from feddiff.model.selection import select_and_train

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
