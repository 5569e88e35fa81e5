"""Accuracy benchmark on Trento (simulated HSI over real LiDAR + labels, standard split).

Rows: FedDiff fusion, FedDiff without diffusion features, HSI only, LiDAR only, an RBF SVM on
pixel spectra + LiDAR, and a two-branch CNN with the same patch size, epoch budget and loss (label smoothing, L2).
Writes benchmarks/results/accuracy.json and prints a table (mean +- sd over seeds).

    python benchmarks/accuracy.py [--config configs/trento_sim.yaml] [--seeds 0 1 2] [--only feddiff svm] [--merge]
        [--set model.members=1 train.label_smoothing=0.1]

``--set`` changes dotted keys of the config for this run (YAML-like values); the JSON records them.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from feddiff.config import config_from_dict, config_to_dict, load_config  # noqa: E402
from feddiff.data.loader import load_scene  # noqa: E402
from feddiff.metrics import classification_metrics  # noqa: E402
from feddiff.model.branch import conv_path  # noqa: E402
from feddiff.data.sources import pixel_sets, sources  # noqa: E402
from feddiff.model.centralised import train_centralised  # noqa: E402
from feddiff.model.optim import cosine_lr, set_lr, stage2_plan  # noqa: E402
from feddiff.model.pretrain import set_seed  # noqa: E402
from overrides import apply_sets  # noqa: E402

METHODS = ["feddiff", "feddiff_no_diffusion", "hsi_only", "lidar_only", "svm", "cnn_two_branch"]


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_feddiff(cfg, scene, method: str) -> dict:
    mods = {"hsi_only": ["hsi"], "lidar_only": ["lidar"]}.get(method, ["hsi", "lidar"])
    if method == "feddiff_no_diffusion":
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, use_diffusion=False))
    t = time.perf_counter()
    res = train_centralised(cfg, scene, mods, progress=False)
    return {**res.metrics, "train_s": res.history.seconds["pretrain"] + res.history.seconds["classifier"], "total_s": time.perf_counter() - t}


def run_svm(cfg, scene) -> dict:
    from sklearn.svm import SVC

    train, test = pixel_sets(scene)
    srcs = sources(scene, ["hsi", "lidar"], 1)

    def feats(ps):
        return np.concatenate([srcs[m].patches(ps.rows, ps.cols).reshape(len(ps), -1).numpy() for m in srcs], axis=1)

    t = time.perf_counter()
    clf = SVC(kernel="rbf", C=100, gamma="scale").fit(feats(train), train.labels)
    train_s = time.perf_counter() - t
    pred = clf.predict(feats(test))
    return {**classification_metrics(test.labels, pred, scene.num_classes), "train_s": train_s}


class TwoBranchCNN(nn.Module):
    def __init__(self, bands: dict[str, int], hc: int, k: int) -> None:
        super().__init__()
        self.paths = nn.ModuleDict({m: conv_path(c, hc, 8) for m, c in bands.items()})
        self.fc = nn.Linear(hc * len(bands), k)

    def forward(self, x: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.fc(torch.cat([self.paths[m](x[m]).mean(dim=(2, 3)) for m in self.paths], dim=1))


def run_cnn(cfg, scene) -> dict:
    set_seed(cfg.train.seed, cfg.train.threads)
    srcs = sources(scene, list(scene.modalities), cfg.model.patch_size)  # one branch per modality the scene has
    train, test = pixel_sets(scene)
    net = TwoBranchCNN({m: s.bands for m, s in srcs.items()}, cfg.model.head_channels, scene.num_classes)
    opt = torch.optim.Adam(net.parameters(), lr=cfg.train.lr, weight_decay=cfg.train.l2)
    y = torch.from_numpy(train.labels)
    t = time.perf_counter()
    for epoch in range(cfg.train.epochs):
        set_lr(opt, cosine_lr(cfg.train.lr, epoch, cfg.train.epochs))
        for idx, dih in stage2_plan(cfg.train, len(train), epoch):  # FedDiff's own step budget
            x = {m: s.patches(train.rows[idx], train.cols[idx], dih) for m, s in srcs.items()}
            loss = F.cross_entropy(net(x), y[idx], label_smoothing=cfg.train.label_smoothing)  # FedDiff's own loss recipe
            opt.zero_grad()
            loss.backward()
            opt.step()
    train_s = time.perf_counter() - t
    net.eval()
    pred = np.empty(len(test), np.int64)
    with torch.no_grad():
        for i in range(0, len(test), 2048):
            sl = slice(i, i + 2048)
            pred[sl] = net({m: s.patches(test.rows[sl], test.cols[sl]) for m, s in srcs.items()}).argmax(1).numpy()
    return {**classification_metrics(test.labels, pred, scene.num_classes), "train_s": train_s}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "trento_sim.yaml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", nargs="+", choices=METHODS, default=METHODS)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "accuracy.json"))
    ap.add_argument("--merge", action="store_true", help="keep the other rows of an existing --out (same config) and replace only the rows run now")
    ap.add_argument("--set", nargs="*", default=[], dest="sets", help="dotted.key=value over the config")
    args = ap.parse_args()
    cfg0 = load_config(args.config)
    if args.sets:
        cfg0 = config_from_dict(apply_sets(config_to_dict(cfg0), args.sets), cfg0.source)
    scene = load_scene(cfg0)
    runs: dict[str, list[dict]] = {m: [] for m in args.only}
    for seed in args.seeds:
        cfg = dataclasses.replace(cfg0, train=dataclasses.replace(cfg0.train, seed=seed))
        for m in args.only:
            if m == "svm":
                r = run_svm(cfg, scene)
            elif m == "cnn_two_branch":
                r = run_cnn(cfg, scene)
            else:
                r = run_feddiff(cfg, scene, m)
            r["peak_rss_mb"] = peak_rss_mb()
            runs[m].append(r)
            print(f"seed {seed} {m:<22} OA {100 * r['oa']:.2f}  AA {100 * r['aa']:.2f}  kappa {r['kappa']:.4f}  train {r['train_s']:.0f}s", flush=True)
    rows = {}
    out = Path(args.out)
    if args.merge and out.exists():
        old = json.loads(out.read_text())
        if old.get("config") == args.config and old.get("set", []) == args.sets:
            rows.update(old["rows"])
    for m, rs in runs.items():
        oa = np.array([r["oa"] for r in rs]) * 100
        rows[m] = {
            "oa_mean": float(oa.mean()), "oa_sd": float(oa.std(ddof=1)) if len(oa) > 1 else 0.0,
            "aa_mean": float(np.mean([r["aa"] for r in rs]) * 100), "kappa_mean": float(np.mean([r["kappa"] for r in rs])),
            "train_s": float(np.mean([r["train_s"] for r in rs])), "peak_rss_mb": float(max(r["peak_rss_mb"] for r in rs)),
            "seeds": args.seeds, "oa_per_seed": [round(float(v), 2) for v in oa],
        }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": args.config, "set": args.sets, "rows": rows}, indent=2))
    print(f"\n| method | OA % (mean +- sd) | AA % | kappa | train s | peak RSS MB |\n|---|---|---|---|---|---|")
    for m, r in rows.items():
        print(f"| {m} | {r['oa_mean']:.2f} +- {r['oa_sd']:.2f} | {r['aa_mean']:.2f} | {r['kappa_mean']:.4f} | {r['train_s']:.0f} | {r['peak_rss_mb']:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
