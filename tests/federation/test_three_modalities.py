"""Three stations, one modality each (HSI, LiDAR, SAR), over a real Mosquitto: the federated job
trains the N-modality head exactly as centralised training does, and beats every two-modality
subset of the same scene.

At patch size 1 with the stage-2 step floor, where only the per-pixel design of the scene
counts (each pair of modalities confuses one pair of classes). At patch size 5 and the floor,
HSI + SAR alone classify this scene perfectly: a patch shows the neighbouring objects, and the
generator deals objects to tiles round-robin, so context gives the class away."""

from __future__ import annotations

import json

import pytest
import torch
import yaml

from tests.federation.test_federated_job import _reap_processes, finish, report, spawn  # noqa: F401 - the fixture reaps stations

STATIONS = {"hsi_station": "hsi", "lidar_station": "lidar", "sar_station": "sar"}
JOB = {
    "name": "fed3",
    "scene": {"synthetic": {"seed": 3, "rows": 40, "cols": 48, "bands": 12, "train_per_class": 25, "sar": True}},
    "model": {"patch_size": 1, "unet": {"base_channels": 8, "num_res_blocks": 1}, "head_channels": 16, "feature_timesteps": [5, 100], "comm": {"rank": 8}},
    "train": {"pretrain_steps": 20, "pretrain_batch": 32, "epochs": 12, "batch_size": 16, "threads": 1,
              # a job of a few dozen steps: at the recipe's 1/100 its diffusion paths would barely move
              "diff_lr_scale": 1.0},
    "federation": {"job": "fed3", "clients": {c: {"modalities": [m]} for c, m in STATIONS.items()}, "round_timeout_s": 8, "max_retries": 50},
}


def write_job(tmp_path, broker):
    job = json.loads(json.dumps(JOB))
    job["federation"]["broker"] = {"port": broker.port}
    job["federation"]["state_dir"] = str(tmp_path / "state")
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(job))
    return p


def centralised(job, state, modalities: list[str]):
    """Stage 2 centralised on the stations' own pretrained denoisers and statistics, over
    ``modalities``; returns (history, OA on the test pixels)."""
    from feddiff.config import load_config
    from feddiff.data.loader import load_scene
    from feddiff.data.normalise import BandStats
    from feddiff.data.sources import pixel_sets, sources
    from feddiff.metrics import classification_metrics
    from feddiff.model.net import FedDiffNet
    from feddiff.model.pretrain import set_seed
    from feddiff.model.stage2 import predict, train_classifier

    cfg = load_config(job)
    scene = load_scene(cfg)
    set_seed(cfg.train.seed, 1)
    net = FedDiffNet({m: scene.modalities[m].shape[2] for m in modalities}, scene.num_classes, cfg.model, cfg.train.seed)
    stats = {}
    for station, m in STATIONS.items():
        if m not in modalities:
            continue
        pre = torch.load(state / station / "pretrained.pt", weights_only=True)
        net.branches[m].unet.load_state_dict(pre["unet"][m])
        net.branches[m].freeze_denoiser()
        stats[m] = BandStats.from_dict(pre["stats"][m])
    srcs = sources(scene, modalities, cfg.model.patch_size, stats)
    train, test = pixel_sets(scene)
    history = train_classifier(net, srcs, train, cfg, progress=False)
    pred = predict(net, srcs, test.rows, test.cols, cfg.train.eval_batch)
    return history, classification_metrics(test.labels, pred, scene.num_classes)["oa"]


def test_three_stations_train_the_centralised_model_and_beat_every_pair(tmp_path, mosquitto):
    job = write_job(tmp_path, mosquitto)
    agg = spawn(tmp_path, "aggregator", "--config", str(job))
    edges = [spawn(tmp_path, "edge", "--config", str(job), "--id", c) for c in STATIONS]
    finish([agg, *edges], timeout=600)
    r = report(tmp_path)
    assert r["rounds"] == JOB["train"]["epochs"] and [row["round"] for row in r["ledger"]] == list(range(JOB["train"]["epochs"]))
    state = tmp_path / "state"
    want, oa_central = centralised(job, state, ["hsi", "lidar", "sar"])
    for got, ref in zip(r["history"], want, strict=True):
        for k in ("ce", "mse"):
            assert got[k] == pytest.approx(ref[k], rel=1e-4), (k, got, ref)
    assert r["oa"] == pytest.approx(oa_central, abs=0.01)
    pairs = {f"{a}+{b}": centralised(job, state, [a, b])[1] for a, b in (("hsi", "lidar"), ("hsi", "sar"), ("lidar", "sar"))}
    assert r["oa"] > max(pairs.values()) + 0.02, (r["oa"], pairs)
