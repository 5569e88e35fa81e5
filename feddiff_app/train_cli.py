"""``feddiff train``: centralised training, evaluation, checkpoint and classification map."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path

import numpy as np

from feddiff.config import Config, load_config
from feddiff.errors import ConfigError
from feddiff.metrics import format_metrics

log = logging.getLogger("feddiff.train")


def pick_modalities(spec: str, available: list[str], source: str) -> list[str]:
    if spec == "both" or spec == "all":
        return list(available)
    names = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [n for n in names if n not in available]
    if unknown or not names:
        raise ConfigError(f"{source}: --modality {spec!r}: expected both or one of {', '.join(available)}")
    return names


def apply_overrides(cfg: Config, args: argparse.Namespace) -> Config:
    train = cfg.train
    if getattr(args, "seed", None) is not None:
        train = dataclasses.replace(train, seed=args.seed)
    if getattr(args, "epochs", None) is not None:
        train = dataclasses.replace(train, epochs=args.epochs)
    if getattr(args, "pretrain_steps", None) is not None:
        train = dataclasses.replace(train, pretrain_steps=args.pretrain_steps)
    if getattr(args, "no_svm", False):
        train = dataclasses.replace(train, svm_baseline=False)
    return dataclasses.replace(cfg, train=train)


def write_map(path_png: Path, net, srcs, scene, batch: int) -> np.ndarray:
    """Classify every pixel of the scene and write the PNG (and GeoTIFF when georeferenced)."""
    from feddiff.data.patches import sliding_batches
    from feddiff.maps import write_geotiff_map, write_png_map
    from feddiff.model.centralised import predict

    h, w = scene.shape
    class_map = np.zeros((h, w), dtype=np.uint8)
    for rows, cols in sliding_batches((h, w), batch * 8):
        class_map[rows, cols] = predict(net, srcs, rows, cols, batch) + 1
    write_png_map(class_map, scene.class_names, path_png)
    if scene.georef is not None:
        write_geotiff_map(class_map, path_png.with_suffix(".tif"), scene.georef)
    return class_map


def baseline_line(metrics: dict, svm: dict | None) -> str:
    """One line a user reads first: does FedDiff beat a kernel SVM on these very labels?"""
    if svm is None:
        return "baseline: RBF SVM off (train.svm_baseline: false or --no-svm)"
    gap = 100 * (metrics["oa"] - svm["oa"])
    return (f"baseline: RBF SVM (C {svm['C']:g}, gamma {svm['gamma']:.3g}, CV on the training pixels) "
            f"OA {100 * svm['oa']:.2f} %, FedDiff {100 * metrics['oa']:.2f} % ({gap:+.2f} points)")


def run_train(args: argparse.Namespace) -> int:
    from feddiff.data.loader import load_scene
    from feddiff.baselines import svm_baseline
    from feddiff.model.centralised import train_centralised
    from feddiff.model.checkpoint import save_checkpoint

    cfg = apply_overrides(load_config(args.config), args)
    scene = load_scene(cfg)
    modalities = pick_modalities(args.modality, list(scene.modalities), cfg.source)
    out = Path(args.out or cfg.resolve(cfg.output_dir))
    out.mkdir(parents=True, exist_ok=True)
    ensemble = f", {cfg.model.members} stage-2 members" if cfg.model.members > 1 else ""
    print(f"training {'+'.join(modalities)} on {scene.name} ({scene.shape[0]} x {scene.shape[1]}), seed {cfg.train.seed}{ensemble}")
    t0 = time.perf_counter()
    result = train_centralised(cfg, scene, modalities)
    cfg = result.cfg or cfg
    stats = {m: s.stats for m, s in result.sources.items()}
    save_checkpoint(out / "model.pt", result.net, cfg, stats, scene.class_names, result.metrics)
    write_map(out / "classification_map.png", result.net, result.sources, scene, cfg.train.eval_batch)
    report = {
        "scene": scene.name,
        "modalities": modalities,
        "seed": cfg.train.seed,
        **{k: result.metrics[k] for k in ("oa", "aa", "kappa", "per_class")},
        "confusion": result.metrics["confusion"],
        "seconds": {**result.history.seconds, "total": time.perf_counter() - t0},
        "selection": result.history.selection,
        "history": result.history.epochs,
        "baselines": {},
    }
    if cfg.train.svm_baseline:
        report["baselines"]["rbf_svm"] = svm_baseline(scene, modalities, cfg.train.seed)
    (out / "train_report.json").write_text(json.dumps(report, indent=2))
    print(format_metrics(result.metrics, scene.class_names))
    print(baseline_line(result.metrics, report["baselines"].get("rbf_svm")))
    print(f"checkpoint: {out / 'model.pt'}  map: {out / 'classification_map.png'}")
    return 0
