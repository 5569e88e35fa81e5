"""Stage 1: each modality's denoiser fitted on random pixels of its whole raster, no labels.

It runs unchanged at each station of a federated job and in centralised training: the
unlabelled scene is where diffusion features earn their keep.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from tqdm import tqdm

from feddiff.config import Config
from feddiff.data.sources import PatchSource
from feddiff.model.branch import ModalityBranch, make_schedule
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
    """Fit the branch's denoiser for ``train.pretrain_steps`` batches of random pixels, then
    freeze it; returns the per-step losses."""
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
