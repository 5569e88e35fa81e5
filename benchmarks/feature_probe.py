"""Do diffusion features carry class information here? A linear probe per U-Net size.

The accuracy benchmark judges diffusion features through FedDiff's fusion head, which mixes
what the features carry with how well the head uses them. This one takes the head out of the
question: the stage-1 denoiser (pretrained on the whole raster, no labels, cached like the
federated benchmark's) is frozen, and a small probe (one conv path per input, global average
pooling, one linear layer) is trained on the 819 labelled pixels from raw patches only, from
diffusion features only, and from both. Same split, epochs, batches and augmentation as stage 2.

    python benchmarks/feature_probe.py [--bases 16 32] [--timesteps 5] [--seeds 0 1 2]

Writes benchmarks/results/feature_probe.json and prints a table (OA mean +- sd over probe seeds;
the denoiser is the seed-0 one).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from accuracy import TwoBranchCNN  # one conv path per input, pooled, one linear layer
from jobrunner import ROOT, WORK, pretrain, sample_sd, with_model, with_train  # also puts the project on sys.path

from feddiff.config import Config, load_config  # noqa: E402
from feddiff.data.loader import load_scene  # noqa: E402
from feddiff.data.scene import Scene  # noqa: E402
from feddiff.metrics import classification_metrics  # noqa: E402
from feddiff.model.branch import ModalityBranch  # noqa: E402
from feddiff.data.sources import PatchSource, PixelSet, pixel_sets, sources  # noqa: E402
from feddiff.model.optim import cosine_lr, epoch_plan, epoch_rng, set_lr  # noqa: E402

INPUTS = ("raw", "diffusion", "both")


def sized(cfg: Config, base: int, timesteps: list[int]) -> Config:
    return with_model(cfg, unet=dataclasses.replace(cfg.model.unet, base_channels=base), feature_timesteps=timesteps)


@torch.no_grad()
def frozen_features(cfg: Config, pre: dict, srcs: dict[str, PatchSource], train: PixelSet, test: PixelSet) -> dict:
    """Diffusion features of every training pixel under each of the 8 dihedral transforms (the
    probe's augmentation) and of every test pixel, computed once: the denoiser is frozen."""
    out: dict[str, dict[str, torch.Tensor]] = {}
    for m, src in srcs.items():
        branch = ModalityBranch(src.bands, cfg.model, 0)
        branch.unet.load_state_dict(pre["unet"][m])
        branch.eval()
        n = len(train)
        aug = torch.stack([branch.diffusion_features(src.patches(train.rows, train.cols, np.full(n, d))) for d in range(8)])
        tst = torch.cat([branch.diffusion_features(src.patches(test.rows[i : i + 2048], test.cols[i : i + 2048])) for i in range(0, len(test), 2048)])
        out[m] = {"train": aug, "test": tst}
    return out


def probe_inputs(what: str, srcs: dict[str, PatchSource], rows: np.ndarray, cols: np.ndarray, diff: dict[str, torch.Tensor], dih: np.ndarray | None) -> dict[str, torch.Tensor]:
    x = {}
    for m, src in srcs.items():
        if what in ("raw", "both"):
            x[f"{m}_raw"] = src.patches(rows, cols, dih)
        if what in ("diffusion", "both"):
            x[f"{m}_diffusion"] = diff[m]
    return x


def run_probe(what: str, cfg: Config, scene: Scene, srcs: dict, feats: dict, train: PixelSet, test: PixelSet, seed: int) -> dict:
    torch.manual_seed(seed)
    t = cfg.train
    first = probe_inputs(what, srcs, train.rows[:1], train.cols[:1], {m: feats[m]["test"][:1] for m in srcs}, None)
    net = TwoBranchCNN({k: v.shape[1] for k, v in first.items()}, cfg.model.head_channels, scene.num_classes)
    opt = torch.optim.AdamW(net.parameters(), lr=t.lr, weight_decay=1e-2)
    y = torch.from_numpy(train.labels)
    for epoch in range(t.epochs):
        net.train()
        set_lr(opt, cosine_lr(t.lr, epoch, t.epochs))
        for idx, dih in epoch_plan(len(train), t.batch_size, epoch_rng(seed, epoch), True):
            diff = {m: feats[m]["train"][torch.from_numpy(dih), torch.from_numpy(idx)] for m in srcs}
            loss = F.cross_entropy(net(probe_inputs(what, srcs, train.rows[idx], train.cols[idx], diff, dih)), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    net.eval()
    pred = np.empty(len(test), np.int64)
    with torch.no_grad():
        for i in range(0, len(test), 2048):
            sl = slice(i, i + 2048)
            diff = {m: feats[m]["test"][sl] for m in srcs}
            pred[sl] = net(probe_inputs(what, srcs, test.rows[sl], test.cols[sl], diff, None)).argmax(1).numpy()
    return classification_metrics(test.labels, pred, scene.num_classes)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "trento_sim.yaml"))
    ap.add_argument("--bases", type=int, nargs="+", default=[16, 32], help="U-Net base channels to compare")
    ap.add_argument("--timesteps", type=int, nargs="+", default=[5])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="probe seeds (the denoiser is seed 0's)")
    ap.add_argument("--cache", default=str(WORK / "bench" / "cache"), help="stage-1 cache shared with benchmarks/federated.py")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "feature_probe.json"))
    args = ap.parse_args()
    cfg0 = with_train(load_config(args.config), seed=0)
    scene = load_scene(cfg0)
    train, test = pixel_sets(scene)
    rows = {}
    for base in args.bases:
        cfg = sized(cfg0, base, args.timesteps)
        t0 = time.perf_counter()
        pre = pretrain(cfg, scene, Path(args.cache))
        srcs = sources(scene, list(scene.modalities), cfg.model.patch_size)
        feats = frozen_features(cfg, pre, srcs, train, test)
        print(f"base {base}: stage 1 took {pre['seconds']:.0f} s when it ran; stage 1 (or cache) + features now {time.perf_counter() - t0:.0f} s", flush=True)
        for what in INPUTS:
            oas = []
            for seed in args.seeds:
                oas.append(100 * run_probe(what, cfg, scene, srcs, feats, train, test, seed)["oa"])
                print(f"base {base} {what:<10} seed {seed} OA {oas[-1]:.2f}", flush=True)
            rows[f"base{base}_{what}"] = {"base": base, "input": what, "oa_mean": float(np.mean(oas)), "oa_sd": sample_sd(oas), "oas": oas}
        rows[f"base{base}_raw"]["pretrain_s"] = float(pre["seconds"])
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": args.config, "timesteps": args.timesteps, "pretrain_steps": cfg0.train.pretrain_steps, "seeds": args.seeds, "rows": rows}, indent=2))
    print("\n| U-Net base | probe input | OA % (mean +- sd) |\n|---|---|---|")
    for r in rows.values():
        print(f"| {r['base']} | {r['input']} | {r['oa_mean']:.2f} +- {r['oa_sd']:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
