"""Shared by the federation and security benchmarks: centralised reference runs and real
federated jobs (Mosquitto + separate processes) on one scene config.

Stage 1 (each station pretraining its denoiser on its own raster) is local and sends nothing,
so the benchmarks pretrain once per seed and hand the result to every run (centralised, each
rank, each security mode): the runs then differ only in what is measured.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORK = ROOT / "benchmarks" / "work"  # scratch folder of the benchmarks (git-ignored): caches, job folders
sys.path.insert(0, str(ROOT))

from feddiff.config import Config, config_to_dict  # noqa: E402
from feddiff.data.scene import Scene  # noqa: E402
from feddiff.metrics import classification_metrics  # noqa: E402
from feddiff.state.atomic import atomic_torch_save  # noqa: E402
from feddiff.state.layout import PRETRAINED, station_store  # noqa: E402
from feddiff.model.net import FedDiffNet  # noqa: E402
from feddiff.data.sources import pixel_sets, sources  # noqa: E402
from feddiff.model.ensemble import build_net  # noqa: E402
from feddiff.model.pretrain import pretrain_denoiser, set_seed  # noqa: E402
from feddiff.model.stage2 import predict, train_stage2  # noqa: E402


def cached(path: Path, resume: bool, compute: Callable[[], dict]) -> dict:
    """Long runs are saved as they finish, so a sweep can be extended without redoing them."""
    if resume and path.exists():
        return json.loads(path.read_text())
    doc = compute()
    path.write_text(json.dumps(doc, default=str))
    return doc


def pretrain_key(cfg: Config) -> str:
    """Short hash of everything stage 1 depends on: a cache written for another U-Net size,
    step count or scene is never handed to a run it does not fit."""
    t, m = cfg.train, cfg.model
    what = {"unet": dataclasses.asdict(m.unet), "schedule": dataclasses.asdict(m.schedule), "patch": m.patch_size,
            "steps": t.pretrain_steps, "batch": t.pretrain_batch, "lr": t.pretrain_lr, "augment": t.augment,
            "scene": {k: str(cfg.resolve(v.path)) for k, v in cfg.scene.modalities.items()}}
    return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()[:10]


def pretrain(cfg: Config, scene: Scene, cache: Path) -> dict:
    """{'stats': {m: dict}, 'unet': {m: state_dict}} for the config's seed, cached on disk."""
    path = cache / f"pretrained_seed{cfg.train.seed}_{pretrain_key(cfg)}.pt"
    if path.exists():
        return torch.load(path, weights_only=True)
    set_seed(cfg.train.seed, cfg.train.threads)
    mods = list(scene.modalities)
    srcs = sources(scene, mods, cfg.model.patch_size)
    net = FedDiffNet({m: scene.modalities[m].shape[2] for m in mods}, scene.num_classes, cfg.model, cfg.train.seed)
    t = time.perf_counter()
    for m in mods:
        pretrain_denoiser(net.branches[m], srcs[m], cfg, cfg.train.seed, progress=False)
    doc = {"stats": {m: srcs[m].stats.to_dict() for m in mods}, "unet": {m: net.branches[m].unet.state_dict() for m in mods}, "seconds": time.perf_counter() - t}
    cache.mkdir(parents=True, exist_ok=True)
    atomic_torch_save(doc, path)
    return doc


def centralised_stage2(cfg: Config, scene: Scene, pre: dict) -> dict:
    """Stage 2 on the pretrained denoisers; OA, seconds per epoch."""
    set_seed(cfg.train.seed, cfg.train.threads)
    mods = list(scene.modalities)
    srcs = sources(scene, mods, cfg.model.patch_size)
    net = build_net({m: scene.modalities[m].shape[2] for m in mods}, scene.num_classes, cfg.model, cfg.train.seed)
    for m in mods:  # an ensemble's members share these denoisers
        net.branches[m].unet.load_state_dict(pre["unet"][m])
        net.branches[m].freeze_denoiser()
    train, test = pixel_sets(scene)
    t = time.perf_counter()
    train_stage2(net, srcs, train, cfg, progress=False)
    secs = time.perf_counter() - t
    pred = predict(net, srcs, test.rows, test.cols, cfg.train.eval_batch)
    return {**classification_metrics(test.labels, pred, scene.num_classes), "epoch_s": secs / cfg.train.epochs}


def with_train(cfg: Config, **changes) -> Config:
    """``cfg`` with some ``train`` fields replaced (seed, threads): every benchmark varies these."""
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, **changes))


def with_model(cfg: Config, **changes) -> Config:
    """``cfg`` with some ``model`` fields replaced (comm, dropout, U-Net size): the sweeps' knob."""
    return dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, **changes))


def with_comm(cfg: Config, rank: int | None) -> Config:
    return with_model(cfg, comm=dataclasses.replace(cfg.model.comm, enabled=rank is not None, rank=rank or cfg.model.comm.rank))


def sample_sd(values: list[float]) -> float:
    """Sample standard deviation of a sweep's runs; 0 for a single run (the tables print it)."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def federated_job(cfg: Config, pre: dict, work: Path, security: str = "none", label_holder: str = "aggregator", threads: int = 1) -> dict:
    """A real job: Mosquitto (TLS + ACL when sealed), the aggregator and one process per party.

    ``threads`` per process: the parties stand in for separate machines but share this one's
    cores; with the centralised run's 2 threads each, 3 processes oversubscribe 2 cores and
    OpenMP spin-waiting makes every step several times slower. The numbers do not change: the model is identical either way."""
    from feddiff_app.broker import start_mosquitto, start_mosquitto_from_conf

    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    data = config_to_dict(cfg)
    for m, src in data["scene"]["modalities"].items():
        src["path"] = str(cfg.resolve(src["path"]))
    for k in ("train_labels", "test_labels", "labels"):
        if data["scene"].get(k):
            data["scene"][k]["path"] = str(cfg.resolve(data["scene"][k]["path"]))
    fed = data["federation"]
    fed.update(security=security, label_holder=label_holder, state_dir=str(work / "state"), write_map=False, round_timeout_s=600)
    data["train"]["threads"] = threads
    stations = list(fed["clients"])
    if security != "none":
        from crypto.provision import init_job, issue

        keys = work / "keys"
        init_job(fed["job"], keys)
        issue(keys, "aggregator", "aggregator")
        for s in stations:
            issue(keys, "edge", s)
        if label_holder not in ("aggregator", *stations):
            issue(keys, "labels", label_holder)
        fed["keys_dir"] = str(keys)
        broker = start_mosquitto_from_conf(keys / "broker" / "mosquitto.conf", work / "broker")
    else:
        broker = start_mosquitto(workdir=work / "broker")
    fed["broker"]["port"] = broker.port
    fed["broker"]["host"] = "127.0.0.1"
    job = work / "job.yaml"
    job.write_text(yaml.safe_dump(data, sort_keys=False))
    for s in stations:  # stage 1 already done (local, no traffic): hand each station its own part
        spec = fed["clients"][s]["modalities"]
        station_store(work / "state" / s).save_doc(PRETRAINED, {"stats": {m: pre["stats"][m] for m in spec}, "unet": {m: pre["unet"][m] for m in spec}})
    parties = stations + ([label_holder] if label_holder not in ("aggregator", *stations) else [])
    t = time.perf_counter()
    procs = [subprocess.Popen([sys.executable, "-m", "feddiff_app.cli", "aggregator", "--config", str(job)], stdout=open(work / "aggregator.log", "wb"), stderr=subprocess.STDOUT)]
    procs += [subprocess.Popen([sys.executable, "-m", "feddiff_app.cli", "edge", "--config", str(job), "--id", p], stdout=open(work / f"{p}.log", "wb"), stderr=subprocess.STDOUT) for p in parties]
    try:
        rc = procs[0].wait()
        for p in procs[1:]:
            p.wait(60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        broker.stop()
    if rc != 0:
        raise RuntimeError(f"aggregator failed ({rc}); see {work / 'aggregator.log'}")
    report = json.loads((work / "state" / "aggregator" / "report.json").read_text())
    per_station = {}
    for s in stations:
        st = station_store(work / "state" / s).meta
        hist = st.get("bytes_by_round", {})
        rs = sorted(int(k) for k in hist)
        deltas = [[hist[str(b)][i] - hist[str(a)][i] for i in (0, 1)] for a, b in zip(rs, rs[1:])]
        per_station[s] = {"sent_total": st.get("bytes_sent"), "received_total": st.get("bytes_received"),
                          "sent_per_epoch": float(np.median([d[0] for d in deltas])) if deltas else None,
                          "received_per_epoch": float(np.median([d[1] for d in deltas])) if deltas else None}
    rounds = [h["seconds"] for h in report["history"]]
    return {"oa": report["oa"], "aa": report["aa"], "kappa": report["kappa"], "epoch_s": float(np.median(rounds)), "wall_s": time.perf_counter() - t,
            "bytes": per_station, "epochs": len(rounds)}
