"""What stage 2 chooses per scene, chosen on validation pixels carved from the training set.

Candidates: plain stage 2, and stage 2 with self-training (``model.pseudo``). Each is trained
on the fitting pixels with the validation OA measured after every epoch; the best epoch of each
is its score (ties go to the later epoch), plain wins a tie with self-training (it is cheaper).
The chosen candidate is then retrained on ALL training pixels (fit + validation) for its best
epoch count, so the validation pixels are not lost to the final model. The record returned
is what ``train_report.json`` shows: every candidate's validation curve and why one won.
"""

from __future__ import annotations

import copy
import logging
import math

import numpy as np
import torch

from feddiff.config import Config
from feddiff.data.sources import PatchSource, PixelSet
from feddiff.model.stage2 import train_classifier, train_stage2
from feddiff.model.ensemble import EnsembleNet, members
from feddiff.model.featcache import FeatureCache
from feddiff.model.net import FedDiffNet
from feddiff.model.pseudo import join, pseudo_labelled, unlabelled_pool

log = logging.getLogger("feddiff.train")


def best_epoch(history: list[dict]) -> tuple[int, float]:
    """(1-based epoch, val OA) of the best validation OA, the later epoch on ties."""
    curve = np.array([row["val_oa"] for row in history])
    e = int(np.flatnonzero(curve == curve.max())[-1])
    return e + 1, float(curve[e])


def _candidate(name: str, history: list[dict], **extra) -> dict:
    if history and "val_oa" in history[0]:
        e, oa = best_epoch(history)
        return {"name": name, "best_epoch": e, "best_val_oa": oa, "val_oa_by_epoch": [round(r["val_oa"], 4) for r in history], **extra}
    return {"name": name, "best_epoch": len(history), "best_val_oa": None, **extra}


def select_and_train(
    net: FedDiffNet | EnsembleNet,
    srcs: dict[str, PatchSource],
    train: PixelSet,
    fit: PixelSet,
    val: PixelSet,
    train_map: np.ndarray,
    cfg: Config,
    progress: bool = True,
) -> tuple[list[dict], dict]:
    """Train ``net``'s stage 2 as the validation pixels decide; returns (history rows of the
    final run, the selection record)."""
    t = cfg.train
    has_val = len(val) > 0
    if not has_val and t.self_train != "on":
        rows = train_stage2(net, srcs, train, cfg, progress)
        return rows, {"validation": None, "chosen": {"name": "plain", "epochs": t.epochs},
                      "why": "no validation pixels (train.val_fraction 0 or too few labels): all epochs, no self-training"}
    snapshot = copy.deepcopy(net.state_dict())
    cache = FeatureCache()
    first = members(net)[0]
    pool_pixels = fit if has_val else train

    def run(pixels: PixelSet) -> list[dict]:
        net.load_state_dict(snapshot)
        torch.manual_seed(t.seed)
        return train_classifier(first, srcs, pixels, cfg, progress, val=val if has_val else None, cache=cache)

    cands = [_candidate("plain", run(pool_pixels))]
    pseudo = None
    if t.self_train != "off":
        n_cls = max(1, len(np.unique(pool_pixels.labels)))
        per_class = max(1, math.ceil(t.pseudo_ratio * len(pool_pixels) / n_cls))
        pool = unlabelled_pool(train_map, t.pseudo_pool, t.seed)
        pseudo = pseudo_labelled(first, srcs, pool, per_class, t.pseudo_threshold, t.eval_batch)
        log.info("self-training: %d of %d pool pixels pseudo-labelled", len(pseudo), pool[0].shape[0])
        cands.append(_candidate("self_train", run(join(pool_pixels, pseudo)), pseudo_pixels=len(pseudo), pool_pixels=int(pool[0].shape[0])))
    chosen, why = _choose(cands, t.self_train, has_val)
    final = join(train, pseudo) if chosen["name"] == "self_train" and pseudo is not None else train
    net.load_state_dict(snapshot)
    torch.manual_seed(t.seed)
    rows = train_stage2(net, srcs, final, cfg, progress, stop_at=chosen["best_epoch"], cache=cache)
    record = {
        "validation": {"fraction": t.val_fraction, "fit_pixels": len(fit), "val_pixels": len(val)} if has_val else None,
        "candidates": cands,
        "chosen": {"name": chosen["name"], "epochs": chosen["best_epoch"], "final_pixels": len(final)},
        "why": why,
    }
    return rows, record


def _choose(cands: list[dict], mode: str, has_val: bool) -> tuple[dict, str]:
    by_name = {c["name"]: c for c in cands}
    if mode == "on" or not has_val:
        c = by_name.get("self_train", cands[0])
        return c, f"train.self_train is {mode}: {c['name']} without a validation contest"
    plain = by_name["plain"]
    selft = by_name.get("self_train")
    if selft is not None and selft["best_val_oa"] > plain["best_val_oa"]:
        return selft, f"self_train val OA {selft['best_val_oa']:.4f} > plain {plain['best_val_oa']:.4f} (epoch {selft['best_epoch']})"
    if selft is None:
        return plain, f"plain, best val OA {plain['best_val_oa']:.4f} at epoch {plain['best_epoch']} (self-training off)"
    return plain, f"plain val OA {plain['best_val_oa']:.4f} >= self_train {selft['best_val_oa']:.4f} (epoch {plain['best_epoch']})"
