"""Centralised FedDiff training: stage 1 denoisers on all pixels, stage 2 the fusion classifier.

This is the upper bound the federated run is compared with, and the federated roles reuse its
pieces (``pretrain_denoiser`` runs unchanged at each station; ``classifier_step`` is what the
wire splits in two).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import torch
import torch.nn as nn
from tqdm import tqdm

from feddiff.config import Config, TrainSpec
from feddiff.data.scene import Scene
from feddiff.metrics import classification_metrics
from feddiff.model.branch import ModalityBranch, make_schedule
from feddiff.model.comm import LowRankDecoder, LowRankEncoder
from feddiff.model.ensemble import EnsembleNet, build_net, member_config, members
from feddiff.model.losses import feddiff_loss
from feddiff.model.net import FedDiffNet
from feddiff.data.sources import PatchSource, PixelSet, pixel_sets, sources
from feddiff.model.schedule import denoising_loss

log = logging.getLogger("feddiff.train")


def set_seed(seed: int, threads: int) -> None:
    torch.manual_seed(seed)
    np.random.seed(seed)
    torch.set_num_threads(threads)


def pretrain_denoiser(
    branch: ModalityBranch,
    source: PatchSource,
    cfg: Config,
    seed: int,
    progress: bool = True,
    desc: str = "pretrain",
) -> list[float]:
    """Stage 1: fit the branch's denoiser on random pixels of the WHOLE raster (no labels):
    the unlabelled scene is where diffusion features earn their keep."""
    t = cfg.train
    if not branch.use_diffusion or t.pretrain_steps == 0:
        return []
    schedule = make_schedule(cfg.model)
    rng = np.random.default_rng(seed)
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.AdamW(branch.unet.parameters(), lr=t.pretrain_lr, weight_decay=0.0)
    h, w = source.shape
    losses: list[float] = []
    branch.unet.train()
    bar = tqdm(range(t.pretrain_steps), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        rows = rng.integers(0, h, t.pretrain_batch)
        cols = rng.integers(0, w, t.pretrain_batch)
        x0 = source.patches(rows, cols, rng.integers(0, 8, t.pretrain_batch) if t.augment else None)
        ts = schedule.sample_timesteps(x0.shape[0], gen)
        noise = torch.randn(x0.shape, generator=gen)
        loss = denoising_loss(branch.unet(schedule.add_noise(x0, ts, noise), ts), noise, cfg.model.schedule.loss)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        losses.append(loss.item())
        bar.set_postfix(loss=f"{np.mean(losses[-20:]):.4f}")
    branch.freeze_denoiser()
    log.info("%s done: %d steps, final loss %.4f", desc, len(losses), float(np.mean(losses[-20:])))
    return losses


@dataclass
class History:
    epochs: list[dict] = field(default_factory=list)
    pretrain_loss: dict[str, float] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)


def batches(n: int, batch: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    idx = rng.permutation(n) if rng is not None else np.arange(n)
    return [idx[i : i + batch] for i in range(0, n, batch)]


def epoch_plan(n: int, batch: int, rng: np.random.Generator, augment: bool) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The epoch's batches (sample indices) and their dihedral codes. Centralised training and the
    federated aggregator both draw from this one function, so with one seed they see the very
    same batches and augmentations."""
    plan = []
    for idx in batches(n, batch, rng):
        plan.append((idx, rng.integers(0, 8, idx.shape[0]) if augment else None))
    return plan


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """One generator per epoch: a job resumed at epoch e draws what an uninterrupted one would."""
    return np.random.default_rng([seed, epoch])


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """Learning rate of an epoch; a pure function of the epoch so a resumed job needs no
    scheduler state."""
    return float(base * 0.5 * (1 + np.cos(np.pi * epoch / max(epochs, 1))))


def make_optimizer(modules: Iterable[nn.Module], t: TrainSpec) -> torch.optim.Adam:
    """Adam over the modules' trainable parameters, the communication module's bases at
    ``t.comm_lr_scale`` times the rate.

    Why: Adam moves every entry of a matrix by about the learning rate per step whatever its
    gradient, so the dense D x r bases of the encoder and decoder drift far from their start
    within a few hundred steps and the classifier fits the training fields through them. On
    Trento (6 stage-2 seeds) rank-16 codes went from -1.11 to +0.16 points against raw features
    at 1/100 of the rate (README, "Communication module"); the default stays 1 because a short
    job (the synthetic tests: 15 epochs, rank 8) needs bases that move. Every role builds its
    optimiser here, so the federated job follows the centralised one step for step."""
    comm_ids: set[int] = set()
    params: list[nn.Parameter] = []
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, (LowRankEncoder, LowRankDecoder)):
                comm_ids.update(id(p) for p in sub.parameters())
        params.extend(p for p in module.parameters() if p.requires_grad)
    rest = [p for p in params if id(p) not in comm_ids]
    comm = [p for p in params if id(p) in comm_ids]
    groups = [{"params": rest or [nn.Parameter(torch.zeros(1))], "scale": 1.0}]
    if comm:
        groups.append({"params": comm, "scale": t.comm_lr_scale})
    opt = torch.optim.Adam(groups, lr=t.lr)
    set_lr(opt, t.lr)
    return opt


def load_optimizer_state(opt: torch.optim.Optimizer, state: dict, where: str) -> bool:
    """Resume ``opt`` from stored state; False when it no longer fits.

    Why not fail: state written before ``make_optimizer`` split the comm bases into their own
    group has one group where this build has two, and torch refuses it. The weights are stored
    apart and still load, so a job resumed across that upgrade keeps its model and round and
    only restarts Adam's moments (a warning says so) instead of refusing to start."""
    try:
        opt.load_state_dict(state)
        return True
    except ValueError as e:
        log.warning("%s: stored optimiser state does not fit this build (%s); Adam's moments restart from zero, the weights are kept", where, e)
        return False


def set_lr(opt: torch.optim.Optimizer, lr: float) -> None:
    """Every group at ``lr`` times its ``scale`` (see ``make_optimizer``)."""
    for g in opt.param_groups:
        g["lr"] = lr * g.get("scale", 1.0)


def train_classifier(
    net: FedDiffNet,
    srcs: dict[str, PatchSource],
    train: PixelSet,
    cfg: Config,
    progress: bool = True,
    on_epoch: Callable[[int, dict], None] | None = None,
) -> list[dict]:
    """Stage 2: branches' conv paths, comm module and head on the labelled training pixels,
    denoisers frozen."""
    t = cfg.train
    opt = make_optimizer([net], t)
    labels = torch.from_numpy(train.labels).long()
    history: list[dict] = []
    bar = tqdm(range(t.epochs), desc="classifier", disable=not progress, leave=False)
    for epoch in bar:
        net.train()
        set_lr(opt, cosine_lr(t.lr, epoch, t.epochs))
        parts_sum: dict[str, float] = {}
        correct = 0
        for idx, dih in epoch_plan(len(train), t.batch_size, epoch_rng(t.seed, epoch), t.augment):
            patches = {m: s.patches(train.rows[idx], train.cols[idx], dih) for m, s in srcs.items()}
            logits, singles = net(patches)
            loss, parts = feddiff_loss(logits, singles, labels[idx], net.named_parameters(), t.mse_weight, t.l2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            correct += int((logits.argmax(1) == labels[idx]).sum())
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v * idx.shape[0]
        row = {"epoch": epoch + 1, "train_acc": correct / len(train), **{k: v / len(train) for k, v in parts_sum.items()}}
        history.append(row)
        bar.set_postfix(loss=f"{row['total']:.3f}", acc=f"{row['train_acc']:.3f}")
        log.info("epoch %d/%d loss %.4f train acc %.3f", epoch + 1, t.epochs, row["total"], row["train_acc"])
        if on_epoch:
            on_epoch(epoch, row)
    return history


def train_stage2(net: FedDiffNet | EnsembleNet, srcs: dict[str, PatchSource], train: PixelSet, cfg: Config, progress: bool = True) -> list[dict]:
    """Stage 2 for each member in turn (one for a plain model); an ensemble's rows carry
    ``member``. Members share the frozen denoisers, so each run is ``train_classifier`` as is."""
    nets = members(net)
    if len(nets) == 1:
        return train_classifier(net, srcs, train, cfg, progress)
    for branch in net.branches.values():  # also with pretrain_steps 0: no member may move the others' denoiser
        branch.freeze_denoiser()
    rows: list[dict] = []
    for k, member in enumerate(nets):
        log.info("stage 2, ensemble member %d/%d", k + 1, len(nets))
        rows.extend({**row, "member": k} for row in train_classifier(member, srcs, train, member_config(cfg, k), progress))
    return rows


@torch.no_grad()
def predict(net: FedDiffNet | EnsembleNet, srcs: dict[str, PatchSource], rows: np.ndarray, cols: np.ndarray, batch: int, progress: bool = False) -> np.ndarray:
    """0-based class ids for the given pixels, in batches (bounded memory)."""
    net.eval()
    out = np.empty(rows.shape[0], dtype=np.int64)
    for idx in tqdm(batches(rows.shape[0], batch, None), desc="predict", disable=not progress, leave=False):
        patches = {m: s.patches(rows[idx], cols[idx]) for m, s in srcs.items()}
        out[idx] = net(patches)[0].argmax(1).numpy()
    return out


@dataclass
class TrainResult:
    net: FedDiffNet | EnsembleNet
    sources: dict[str, PatchSource]
    metrics: dict
    history: History


def train_centralised(cfg: Config, scene: Scene, modalities: list[str], progress: bool = True) -> TrainResult:
    """Both stages plus evaluation on the test pixels."""
    t0 = time.perf_counter()
    set_seed(cfg.train.seed, cfg.train.threads)
    srcs = sources(scene, modalities, cfg.model.patch_size)
    train, test = pixel_sets(scene)
    net = build_net({m: scene.modalities[m].shape[2] for m in modalities}, scene.num_classes, cfg.model, cfg.train.seed)
    hist = History()
    for m in modalities:
        losses = pretrain_denoiser(net.branches[m], srcs[m], cfg, cfg.train.seed, progress, desc=f"pretrain {m}")
        if losses:
            hist.pretrain_loss[m] = float(np.mean(losses[-20:]))
    t1 = time.perf_counter()
    hist.epochs = train_stage2(net, srcs, train, cfg, progress)
    t2 = time.perf_counter()
    pred = predict(net, srcs, test.rows, test.cols, cfg.train.eval_batch, progress)
    metrics = classification_metrics(test.labels, pred, scene.num_classes)
    hist.seconds = {"pretrain": t1 - t0, "classifier": t2 - t1, "evaluate": time.perf_counter() - t2}
    return TrainResult(net, srcs, metrics, hist)
