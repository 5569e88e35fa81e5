"""Whole jobs in signed and HE mode over a TLS Mosquitto running the generated ACL.

What the curious aggregator cannot do in HE mode is checked on the running job: the context it
received holds no secret key. Message-level attacks (forgery, replay, wrong topic, tampering,
eavesdropping) are pinned in tests/crypto.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from feddiff.transport.broker import mosquitto_binary

JOB = {
    "name": "securetest",
    "scene": {"synthetic": {"seed": 4, "rows": 40, "cols": 48, "bands": 12, "train_per_class": 25}},
    "model": {"unet": {"base_channels": 8, "num_res_blocks": 1}, "head_channels": 16, "feature_timesteps": [5, 100], "comm": {"rank": 8}, "he_dim": 16},
    "train": {"pretrain_steps": 20, "pretrain_batch": 32, "epochs": 8, "batch_size": 8, "threads": 1},
    "federation": {"job": "securetest", "clients": {"hsi_station": {"modalities": ["hsi"]}, "lidar_station": {"modalities": ["lidar"]}}, "round_timeout_s": 30},
}

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")


def run_demo(tmp_path, security):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump(JOB))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "feddiff.cli", "demo", "--config", str(cfg), "--out", str(out), "--security", security],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    return out, json.loads((out / "report.json").read_text())


def test_signed_job_over_tls_with_acl(tmp_path):
    out, report = run_demo(tmp_path, "signed")
    assert report["security"] == "signed" and report["rounds"] == 8 and report["oa"] > 0.6
    agg = json.loads((out / "state" / "aggregator" / "report.json").read_text())
    assert agg["rejected"] == {}  # every envelope verified, none replayed
    assert "require_certificate true" in (out / "broker" / "mosquitto.conf").read_text()


def test_he_job_aggregator_never_holds_the_secret_key(tmp_path):
    out, report = run_demo(tmp_path, "he")
    assert report["security"] == "he" and report["rounds"] == 8 and report["oa"] > 0.6
    status = json.loads((out / "state" / "aggregator" / "status.json").read_text())
    assert status["he_context_private"] is False
    # the label holder, not the aggregator, scored the model
    assert (out / "state" / "label_holder" / "label_holder.pt").exists()
