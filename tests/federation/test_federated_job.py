"""Federated jobs with a real Mosquitto and real `feddiff` processes.

A full run; an aggregator SIGKILLed mid-job resumes at its committed round with no round applied
twice; a station killed mid-job is restarted and the job completes; a duplicated message over
the real broker is delivered once.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import yaml

JOB = {
    "name": "fedtest",
    "scene": {"synthetic": {"seed": 3, "rows": 40, "cols": 48, "bands": 12, "train_per_class": 25}},
    "model": {"unet": {"base_channels": 8, "num_res_blocks": 1}, "head_channels": 16, "feature_timesteps": [5, 100], "comm": {"rank": 8}},
    "train": {"min_steps": 0, "pretrain_steps": 20, "pretrain_batch": 32, "epochs": 10, "batch_size": 8, "threads": 1},
    "federation": {"job": "fedtest", "clients": {"hsi_station": {"modalities": ["hsi"]}, "lidar_station": {"modalities": ["lidar"]}},
                   "round_timeout_s": 8, "max_retries": 50},
}


def write_job(tmp_path, broker, train: dict | None = None, **fed):
    job = json.loads(json.dumps(JOB))
    job["train"].update(train or {})
    job["federation"].update(fed)
    job["federation"]["broker"] = {"port": broker.port}
    job["federation"]["state_dir"] = str(tmp_path / "state")
    p = tmp_path / "job.yaml"
    p.write_text(yaml.safe_dump(job))
    return p


SPAWNED: list = []


@pytest.fixture(autouse=True)
def _reap_processes():
    """A failing test must not leave stations running (they would wait for their aggregator)."""
    yield
    while SPAWNED:
        p = SPAWNED.pop()
        if p.poll() is None:
            p.kill()
            p.wait()


def spawn(tmp_path, *args):
    log = open(tmp_path / f"{args[0]}-{os.path.basename(args[-1])}-{time.time_ns()}.log", "wb")
    proc = subprocess.Popen([sys.executable, "-m", "feddiff_app.cli", *args], stdout=log, stderr=subprocess.STDOUT)
    SPAWNED.append(proc)
    return proc


def status(tmp_path):
    try:
        return json.loads((tmp_path / "state" / "aggregator" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def wait_round(tmp_path, rnd, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if status(tmp_path).get("round", 0) >= rnd:
            return
        time.sleep(0.2)
    raise AssertionError(f"round {rnd} not reached: {status(tmp_path)}")


def run_edges(tmp_path, job):
    return {c: spawn(tmp_path, "edge", "--config", str(job), "--id", c) for c in ("hsi_station", "lidar_station")}


def finish(procs, timeout=180):
    for p in procs:
        assert p.wait(timeout) == 0


def report(tmp_path):
    return json.loads((tmp_path / "state" / "aggregator" / "report.json").read_text())


def test_full_federated_run(tmp_path, mosquitto):
    # a step floor above one pass per round: each round repeats whole passes, as the defaults do
    # for scenes with few labels, and the job still follows centralised training exactly
    job = write_job(tmp_path, mosquitto, train={"min_steps": 300})
    agg = spawn(tmp_path, "aggregator", "--config", str(job))
    edges = run_edges(tmp_path, job)
    finish([agg, *edges.values()])
    r = report(tmp_path)
    assert r["rounds"] == 10 and r["oa"] > 0.7, r["oa"]
    assert [row["round"] for row in r["ledger"]] == list(range(10))
    assert (tmp_path / "state" / "aggregator" / "classification_map.png").exists()
    # raw data never left the stations: what a station sent is codes, far below its raster size
    sent = json.loads((tmp_path / "state" / "hsi_station" / "station.json").read_text())["bytes_sent"]
    assert 0 < sent < 40 * 48 * 12 * 4 * JOB["train"]["epochs"]
    assert_centralised_trajectory(job, tmp_path / "state", r["history"])


def test_head_dropouts_keep_the_federated_job_on_the_centralised_trajectory(tmp_path, mosquitto):
    """Dropout in the fusion head (``model.dropout``, ``model.diff_dropout``) draws random masks
    at the aggregator; the job must draw the ones centralised training draws, or the two would
    learn different models."""
    job = write_job(tmp_path, mosquitto, train={"epochs": 3})
    data = yaml.safe_load(job.read_text())
    data["model"].update(dropout=0.3, diff_dropout=0.3)
    job.write_text(yaml.safe_dump(data))
    agg = spawn(tmp_path, "aggregator", "--config", str(job))
    edges = run_edges(tmp_path, job)
    finish([agg, *edges.values()])
    assert_centralised_trajectory(job, tmp_path / "state", report(tmp_path)["history"])


def assert_centralised_trajectory(job, state, history):
    """Cut at the wire, pipelined (stations compute the next batch's frozen features before the
    current gradient arrives), the job must still be plain stage-2 training: the same losses,
    round by round, as centralised training on the stations' own pretrained denoisers. A
    station that answered the next step with stale weights would drift away at once."""
    import torch

    from feddiff.config import load_config
    from feddiff.data.loader import load_scene
    from feddiff.data.normalise import BandStats
    from feddiff.model.net import FedDiffNet
    from feddiff.data.sources import pixel_sets, sources
    from feddiff.model.pretrain import set_seed
    from feddiff.model.stage2 import train_classifier

    cfg = load_config(job)
    scene = load_scene(cfg)
    set_seed(cfg.train.seed, 1)
    net = FedDiffNet({m: scene.modalities[m].shape[2] for m in scene.modalities}, scene.num_classes, cfg.model, cfg.train.seed)
    stats = {}
    for station in ("hsi_station", "lidar_station"):
        pre = torch.load(state / station / "pretrained.pt", weights_only=True)
        for m, sd in pre["unet"].items():
            net.branches[m].unet.load_state_dict(sd)
            net.branches[m].freeze_denoiser()
            stats[m] = BandStats.from_dict(pre["stats"][m])
    srcs = sources(scene, net.modalities, cfg.model.patch_size, stats)
    want = train_classifier(net, srcs, pixel_sets(scene)[0], cfg, progress=False)
    for got, ref in zip(history, want, strict=True):
        for k in ("ce", "mse"):  # "total" differs by design: each station adds its own L2 term
            assert got[k] == pytest.approx(ref[k], rel=1e-4), (k, got, ref)
        assert got["train_acc"] == pytest.approx(ref["train_acc"], abs=1e-9), (got, ref)


def test_station_as_label_holder_matches_aggregator_as_label_holder(tmp_path, mosquitto):
    """The labels may stay with a station: the aggregator then gets only the cross-entropy
    gradient of its logits, and the job learns the same model as with local labels."""
    job = write_job(tmp_path, mosquitto, label_holder="lidar_station")
    agg = spawn(tmp_path, "aggregator", "--config", str(job))
    edges = run_edges(tmp_path, job)
    finish([agg, *edges.values()])
    r = report(tmp_path)
    assert r["rounds"] == 10 and r["oa"] > 0.7, r["oa"]


def test_aggregator_killed_mid_job_resumes_at_committed_round(tmp_path, mosquitto):
    job = write_job(tmp_path, mosquitto)
    agg = spawn(tmp_path, "aggregator", "--config", str(job))
    edges = run_edges(tmp_path, job)
    wait_round(tmp_path, 2)
    agg.send_signal(signal.SIGKILL)
    agg.wait()
    committed = status(tmp_path)["round"]
    agg2 = spawn(tmp_path, "aggregator", "--config", str(job))
    finish([agg2, *edges.values()])
    r = report(tmp_path)
    rounds = [row["round"] for row in r["ledger"]]
    assert rounds == list(range(10)), rounds  # every round committed exactly once
    assert committed >= 2
    logs = (tmp_path / "state" / "aggregator" / "aggregator.log.jsonl").read_text()
    assert "resuming job fedtest at round" in logs


def test_station_killed_mid_job_is_waited_for_and_job_completes(tmp_path, mosquitto):
    job = write_job(tmp_path, mosquitto)
    agg = spawn(tmp_path, "aggregator", "--config", str(job))
    edges = run_edges(tmp_path, job)
    wait_round(tmp_path, 2)
    edges["lidar_station"].send_signal(signal.SIGKILL)
    edges["lidar_station"].wait()
    time.sleep(1)
    restarted = spawn(tmp_path, "edge", "--config", str(job), "--id", "lidar_station")
    finish([agg, edges["hsi_station"], restarted])
    r = report(tmp_path)
    assert [row["round"] for row in r["ledger"]] == list(range(10))
    assert r["oa"] > 0.7


def test_duplicate_delivery_over_real_broker_is_handled_once(mosquitto):
    from feddiff.protocol.arrays import encode_arrays
    from feddiff.protocol.channel import Channel
    from feddiff.protocol.envelope import pack
    from feddiff.protocol.message import Header, Message
    from feddiff.protocol.endpoint import build_chain
    from feddiff.config import config_from_dict
    from feddiff.transport.mqtt import MqttTransport

    cfg = config_from_dict({"scene": {"synthetic": {}}})
    rx_t = MqttTransport("rx", "127.0.0.1", mosquitto.port)
    rx_t.connect(10)
    rx_t.subscribe("feddiff/demo/up/+")
    tx_t = MqttTransport("tx", "127.0.0.1", mosquitto.port)
    tx_t.connect(10)
    rx = Channel(rx_t, "demo", "aggregator", build_chain(cfg), 10**7)
    tx = Channel(tx_t, "demo", "a", build_chain(cfg), 10**7)
    tx.send("feddiff/demo/up/a", "features", {"x": np.arange(5)}, round=0, step=0)
    (wire,) = [pack(m) for m in build_chain(cfg).outbound(Message("feddiff/demo/up/a", Header(job="demo", round=0, step=1, sender="a", seq=99, content_type="features"), encode_arrays({"y": np.ones(2)})))]
    tx_t.publish("feddiff/demo/up/a", wire)
    tx_t.publish("feddiff/demo/up/a", wire)  # a QoS-1 style redelivery of the same bytes
    got = [rx.recv(2.0) for _ in range(3)]
    assert [g.header.seq if g else None for g in got] == [tx.seq, 99, None]
    assert next(f for f in rx.chain.filters if f.name == "dedup").duplicates == 1
    tx_t.close()
    rx_t.close()
