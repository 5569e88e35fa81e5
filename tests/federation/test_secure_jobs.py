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


def test_eavesdropper_with_broker_credentials_reads_no_features(tmp_path):
    """A broker account allowed to read '#' records every payload of a signed job: none of them
    decodes to arrays (sealed), although the same check finds arrays in plaintext traffic."""
    import os
    import zlib

    from crypto.provision import init_job, issue
    from feddiff.protocol.arrays import decode_arrays
    from feddiff.protocol.envelope import unpack
    from feddiff.protocol.message import EnvelopeError
    from feddiff.transport.broker import start_mosquitto_from_conf
    from feddiff.transport.mqtt import MqttTransport

    keys = tmp_path / "keys"
    init_job("securetest", keys)
    issue(keys, "aggregator", "aggregator")
    for s in ("hsi_station", "lidar_station", "operator"):
        issue(keys, "edge", s)
    acl = keys / "broker" / "acl"
    acl.write_text(acl.read_text() + "\nuser operator\ntopic read #\n")  # the broker operator's view
    broker = start_mosquitto_from_conf(keys / "broker" / "mosquitto.conf", tmp_path / "broker")
    job = json.loads(json.dumps(JOB))
    job["train"]["epochs"] = 2
    job["federation"].update(security="signed", keys_dir=str(keys), state_dir=str(tmp_path / "state"), write_map=False, broker={"port": broker.port})
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump(job))
    op = keys / "parties" / "operator"
    spy = MqttTransport("spy", "127.0.0.1", broker.port, username="operator", password=(op / "mqtt_password").read_text().strip(),
                        tls_ca=str(keys / "ca.crt"), tls_cert=str(op / "tls.crt"), tls_key=str(op / "tls.key"), max_queue=100000)
    spy.connect(10)
    spy.subscribe("#")
    try:
        procs = [subprocess.Popen([sys.executable, "-m", "feddiff.cli", "aggregator", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        procs += [subprocess.Popen([sys.executable, "-m", "feddiff.cli", "edge", "--config", str(cfg), "--id", s], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for s in ("hsi_station", "lidar_station")]
        for p in procs:
            assert p.wait(300) == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        broker.stop()
    captured = []
    while (item := spy.get(0.1)) is not None:
        captured.append(item)
    round_data = [(t, p) for t, p in captured if "/up/" in t or "/down/" in t]
    assert len(round_data) > 20
    readable = 0
    for topic, payload in round_data:
        msg = unpack(topic, payload, 10**8)
        assert "seal" in msg.header.ext
        try:
            decode_arrays(zlib.decompress(msg.payload))
            readable += 1
        except (zlib.error, EnvelopeError):
            pass
    assert readable == 0
