"""Stage-2 optimisation shared by every role: the optimiser, its learning-rate schedule and the
epoch plan (batch order and dihedral codes).

Centralised training, the federated aggregator and the stations all build their optimiser and
draw their batches here, so with one seed they take the very same steps.
"""

from __future__ import annotations

import logging
from typing import Iterable

import numpy as np
import torch
import torch.nn as nn

from feddiff.config import TrainSpec
from feddiff.model.branch import ModalityBranch
from feddiff.model.comm import LowRankDecoder, LowRankEncoder

log = logging.getLogger("feddiff.train")


def batches(n: int, batch: int, rng: np.random.Generator | None) -> list[np.ndarray]:
    idx = rng.permutation(n) if rng is not None else np.arange(n)
    return [idx[i : i + batch] for i in range(0, n, batch)]


def epoch_plan(n: int, batch: int, rng: np.random.Generator, augment: bool, min_batches: int = 0) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """The epoch's batches (sample indices) and their dihedral codes: whole shuffled passes over
    the ``n`` samples until there are at least ``min_batches``. Centralised training and the
    federated aggregator both draw from this one function, so with one seed they see the very
    same batches and augmentations."""
    plan: list[tuple[np.ndarray, np.ndarray | None]] = []
    while not plan or len(plan) < min_batches:
        for idx in batches(n, batch, rng):
            plan.append((idx, rng.integers(0, 8, idx.shape[0]) if augment else None))
    return plan


def stage2_plan(t: TrainSpec, n: int, epoch: int) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """Epoch ``epoch`` of stage 2 on ``n`` labelled samples: at least ``t.min_steps`` optimiser
    steps over the ``t.epochs`` epochs.

    Why a floor on steps: an epoch of 10 labels per class is two batches, so 30 epochs are 60
    steps, too few for the head behind the low-rank, quantised wire to converge (OA 69 % where
    the same model reaches 95 % with 300 steps, docs/results.md); a scene with a few hundred
    labelled pixels already takes more steps than the floor and trains as before."""
    return epoch_plan(n, t.batch_size, epoch_rng(t.seed, epoch), t.augment, -(-t.min_steps // max(t.epochs, 1)))


def plan_samples(plan: list[tuple[np.ndarray, np.ndarray | None]]) -> int:
    """Samples an epoch's plan visits (repeated passes counted each time): the divisor of its
    mean loss and accuracy."""
    return sum(idx.shape[0] for idx, _ in plan)


def epoch_rng(seed: int, epoch: int) -> np.random.Generator:
    """One generator per epoch: a job resumed at epoch e draws what an uninterrupted one would."""
    return np.random.default_rng([seed, epoch])


def step_generator(seed: int, epoch: int, step: int) -> torch.Generator:
    """The generator of one stage-2 step's dropout masks: a pure function of (seed, epoch, step),
    so the aggregator, which holds the head but not the branches, draws the masks centralised
    training draws (its global generator is at another state), and a resumed job those an
    uninterrupted one would."""
    key = np.random.SeedSequence([seed, epoch, step]).generate_state(2, np.uint64)[0]
    return torch.Generator().manual_seed(int(key) >> 1)


def cosine_lr(base: float, epoch: int, epochs: int) -> float:
    """Learning rate of an epoch; a pure function of the epoch so a resumed job needs no
    scheduler state."""
    return float(base * 0.5 * (1 + np.cos(np.pi * epoch / max(epochs, 1))))


def make_optimizer(modules: Iterable[nn.Module], t: TrainSpec) -> torch.optim.Adam:
    """Adam over the modules' trainable parameters, two kinds of dense maps at a fraction of the
    rate: the communication module's bases (``t.comm_lr_scale``) and each branch's conv path over
    its frozen denoiser's features (``t.diff_lr_scale``).

    Why: Adam moves every entry of a matrix by about the learning rate per step whatever its
    gradient, so the dense D x r bases of the encoder and decoder drift far from their start
    within a few hundred steps and the classifier fits the training fields through them (README,
    "Communication module"). The diffusion path is the same story: over the denoiser's many
    feature channels, a path at the full rate fits a few labels per class exactly, and the
    ablation without diffusion features generalised better on four of six scenes; at 1/100 of
    the rate it stays close to a random projection of those features, which the head reads
    (docs/results.md, "The diffusion path at 1/100 of the rate"). The ablation's second path
    reads the raw patch and keeps the full rate. Every role builds its optimiser here, so the
    federated job follows the centralised one step for step."""
    scale: dict[int, str] = {}
    params: list[nn.Parameter] = []
    for module in modules:
        for sub in module.modules():
            if isinstance(sub, (LowRankEncoder, LowRankDecoder)):
                scale.update((id(p), "comm") for p in sub.parameters())
            elif isinstance(sub, ModalityBranch) and sub.features is not None and t.diff_lr_scale != 1.0:
                scale.update((id(p), "diff") for p in sub.diff_path.parameters())
        params.extend(p for p in module.parameters() if p.requires_grad)
    rest = [p for p in params if id(p) not in scale]
    groups = [{"params": rest or [nn.Parameter(torch.zeros(1))], "scale": 1.0}]
    for kind, rate in (("comm", t.comm_lr_scale), ("diff", t.diff_lr_scale)):
        own = [p for p in params if scale.get(id(p)) == kind]
        if own:
            groups.append({"params": own, "scale": rate})
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
