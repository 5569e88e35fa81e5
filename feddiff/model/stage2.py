"""Stage 2 of FedDiff: the fusion classifier trained over frozen denoiser features, and
prediction. Centralised training, model selection and the federated aggregator all run these
same loops, which is what keeps federated = centralised exact at equal threads.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from tqdm import tqdm

from feddiff.config import Config
from feddiff.data.sources import PatchSource, PixelSet
from feddiff.model.featcache import FeatureCache
from feddiff.model.ensemble import EnsembleNet, member_config, members
from feddiff.model.losses import feddiff_loss
from feddiff.model.net import FedDiffNet
from feddiff.model.optim import batches, cosine_lr, make_optimizer, plan_samples, set_lr, stage2_plan, step_generator

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
        plan = stage2_plan(t, len(train), epoch)
        for step, (idx, dih) in enumerate(plan):
            patches = {m: s.patches(train.rows[idx], train.cols[idx], dih) for m, s in srcs.items()}
            feats = cache.features(net, patches, train.rows[idx], train.cols[idx], dih) if cache is not None else None
            logits, singles = net(patches, feats, t.mse_weight > 0, step_generator(t.seed, epoch, step))
            loss, parts = feddiff_loss(logits, singles, labels[idx], net.named_parameters(), t.mse_weight, t.l2, t.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct += int((logits.argmax(1) == labels[idx]).sum())
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v * idx.shape[0]
        seen = plan_samples(plan)
        row = {"epoch": epoch + 1, "train_acc": correct / seen, **{k: v / seen for k, v in parts_sum.items()}}
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
