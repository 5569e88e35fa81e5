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

from feddiff_app.broker import mosquitto_binary
from tests.party_processes import run_parties

JOB = {
    "name": "securetest",
    "scene": {"synthetic": {"seed": 4, "rows": 40, "cols": 48, "bands": 12, "train_per_class": 25}},
    "model": {"unet": {"base_channels": 8, "num_res_blocks": 1}, "head_channels": 16, "feature_timesteps": [5, 100], "comm": {"rank": 8}, "he_dim": 16},
    "train": {"min_steps": 0, "pretrain_steps": 20, "pretrain_batch": 32, "epochs": 8, "batch_size": 8, "threads": 1,
              # a job of a few dozen steps: at the recipe's 1/100 its diffusion paths would barely move
              "diff_lr_scale": 1.0},
    "federation": {"job": "securetest", "clients": {"hsi_station": {"modalities": ["hsi"]}, "lidar_station": {"modalities": ["lidar"]}}, "round_timeout_s": 30},
}

pytestmark = pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")


def provision_job(keys, edges, labels: str | None = None):
    """Root, aggregator, the label holder (if named) and an edge identity per name, in ``keys``."""
    from crypto.provision import init_job, issue

    init_job("securetest", keys)
    issue(keys, "aggregator", "aggregator")
    if labels:
        issue(keys, "labels", labels)
    for s in edges:
        issue(keys, "edge", s)


def start_operator_broker(keys, tmp_path):
    """Mosquitto with the job's generated TLS config and ACL, plus one line granting the
    provisioned party ``operator`` read access to every topic: the broker operator's view."""
    from feddiff_app.broker import start_mosquitto_from_conf

    acl = keys / "broker" / "acl"
    acl.write_text(acl.read_text() + "\nuser operator\ntopic read #\n")
    return start_mosquitto_from_conf(keys / "broker" / "mosquitto.conf", tmp_path / "broker")


def operator_spy(keys, port):
    """A connected MQTT client with the operator's broker credentials (subscribe it yourself)."""
    from feddiff.transport.mqtt import MqttTransport

    op = keys / "parties" / "operator"
    spy = MqttTransport("spy", "127.0.0.1", port, username="operator", password=(op / "mqtt_password").read_text().strip(),
                        tls_ca=str(keys / "ca.crt"), tls_cert=str(op / "tls.crt"), tls_key=str(op / "tls.key"), max_queue=100000)
    spy.connect(10)
    return spy


def run_demo(tmp_path, security):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump(JOB))
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, "-m", "feddiff_app.cli", "demo", "--config", str(cfg), "--out", str(out), "--security", security],
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
    import zlib

    from feddiff.protocol.arrays import decode_arrays
    from feddiff.protocol.envelope import unpack
    from feddiff.protocol.message import EnvelopeError

    keys = tmp_path / "keys"
    provision_job(keys, ("hsi_station", "lidar_station", "operator"))
    broker = start_operator_broker(keys, tmp_path)
    job = json.loads(json.dumps(JOB))
    job["train"]["epochs"] = 2
    job["federation"].update(security="signed", keys_dir=str(keys), state_dir=str(tmp_path / "state"), write_map=False, broker={"port": broker.port})
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump(job))
    spy = operator_spy(keys, broker.port)
    spy.subscribe("#")
    try:
        procs = [subprocess.Popen([sys.executable, "-m", "feddiff_app.cli", "aggregator", "--config", str(cfg)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
        procs += [subprocess.Popen([sys.executable, "-m", "feddiff_app.cli", "edge", "--config", str(cfg), "--id", s], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for s in ("hsi_station", "lidar_station")]
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


def test_he_horizontal_job_averages_branch_weights_under_ckks(tmp_path):
    """Two hsi stations (one region each) and one lidar station in HE mode, over TLS with the
    generated ACL. A spy with the aggregator's keys opens every uplink: the WEIGHTS messages
    hold only ciphertexts, which the aggregator's public group context cannot decrypt; with the
    group secret they give each station's share, and both stations committed exactly the
    plaintext FedAvg of what they sent."""
    import numpy as np
    import tenseal as ts
    import torch

    from crypto import he, security_filters
    from crypto.he_groups import load_group_public, load_group_secret, provision_group, unflatten
    from crypto.directory import load_directory
    from crypto.keys import load_party
    from feddiff.config import load_config
    from feddiff.protocol import jobs
    from feddiff.protocol.arrays import arrays_to_blobs
    from feddiff.protocol.channel import Channel
    from feddiff.protocol.endpoint import build_chain

    stations = {"hsi_a": {"modalities": ["hsi"], "region": [0, 20, 0, 48]}, "hsi_b": {"modalities": ["hsi"], "region": [20, 40, 0, 48]},
                "lidar_station": {"modalities": ["lidar"]}}
    keys = tmp_path / "keys"
    provision_job(keys, (*stations, "operator"), labels="lab")
    provision_group(keys, "hsi", ["hsi_a", "hsi_b"])
    broker = start_operator_broker(keys, tmp_path)
    job = json.loads(json.dumps(JOB))
    job["train"]["epochs"] = 2
    job["federation"].update(security="he", label_holder="lab", clients=stations, keys_dir=str(keys), state_dir=str(tmp_path / "state"),
                             write_map=False, broker={"port": broker.port})
    cfg_path = tmp_path / "job.yaml"
    cfg_path.write_text(yaml.safe_dump(job))
    spy = operator_spy(keys, broker.port)
    spy.subscribe("feddiff/securetest/up/#")
    try:
        run_parties(cfg_path, ["aggregator", *stations, "lab"], tmp_path)
    finally:
        broker.stop()

    agg_dir = tmp_path / "state" / "aggregator"
    assert json.loads((agg_dir / "report.json").read_text())["rounds"] == 2
    status = json.loads((agg_dir / "status.json").read_text())
    assert status["he_context_private"] is False and status["he_group_context_private"] is False
    assert not list((keys / "parties" / "aggregator").glob("*.ctx")) and not list((keys / "parties" / "lab").glob("he_group_*"))

    # open the captured uplinks as the aggregator would (its keys; a long window: read after the job)
    cfg = load_config(cfg_path)
    chain = build_chain(cfg, security_filters("securetest", load_party(keys, "aggregator"), load_directory(keys), tmp_path / "spy_replay.json", max_age_s=3600))
    reader = Channel(spy, "securetest", "aggregator", chain, cfg.federation.max_message_bytes)
    weights = {}
    while (msg := reader.recv(0.5)) is not None:
        if msg.header.content_type == jobs.WEIGHTS:
            weights[msg.header.sender] = msg  # the last one per station: the final round's
    assert set(weights) == {"hsi_a", "hsi_b"}  # lidar is alone in its modality: nothing to average
    rnd = {m.header.round for m in weights.values()}.pop()
    public = load_group_public(keys, "aggregator", "hsi")
    secret = load_group_secret(keys, "hsi_a", "hsi")
    shares, n = {}, {}
    for s, m in weights.items():
        assert not any(k.startswith("w_") for k in m.arrays), "plaintext weights on the wire in HE mode"
        cts = arrays_to_blobs(m.arrays, "wct_hsi")
        with pytest.raises(ValueError, match="secret"):
            ts.ckks_vector_from(public, cts[0]).decrypt()
        with pytest.raises(he.HEError):
            he.decrypt_vector(public, cts)
        shares[s] = he.decrypt_vector(secret, cts)
        n[s] = int(m.meta["samples"])
        layout = [(k, tuple(shape), dt) for k, shape, dt in m.meta["he_layout"]["hsi"]]
    total = sum(n.values())
    assert min(n.values()) > 0
    sent = {s: shares[s] * total / n[s] for s in shares}  # each station's own weights
    assert not np.allclose(sent["hsi_a"], sent["hsi_b"], atol=1e-3)  # they trained on different pixels
    fedavg = unflatten(sum(sent[s] * n[s] / total for s in sent), layout)
    def committed_state(s: str) -> dict:
        doc = torch.load(tmp_path / "state" / s / f"round_{rnd}.pt", weights_only=True)
        return {**doc["branches"]["hsi"], **{k: v for k, v in doc["uplink"]["hsi"].items()}}

    committed = {s: committed_state(s) for s in shares}
    for k, want in fedavg.items():
        a, b = committed["hsi_a"][k].numpy(), committed["hsi_b"][k].numpy()
        np.testing.assert_array_equal(a, b)
        np.testing.assert_allclose(a, want, atol=1e-5, rtol=0)


def test_he_fused_sum_with_regions_holds_one_contribution_per_sample(tmp_path):
    """Two hsi stations with regions and one lidar station, HE mode: with the aggregator's
    ``own_<m>`` masks the ciphertext sum is, for every sample, the owning hsi station's part
    plus the lidar part (each computed on its own), never both hsi stations' parts."""

    import numpy as np

    from aggregator.fusion.he import own_masks
    from aggregator.fusion.plain import ownership
    from crypto import he
    from crypto.he_groups import provision_group
    from edge_client.station import Station
    from feddiff.config import load_config
    from feddiff.data.loader import load_scene
    stations = {"hsi_a": {"modalities": ["hsi"], "region": [0, 20, 0, 48]}, "hsi_b": {"modalities": ["hsi"], "region": [20, 40, 0, 48]},
                "lidar_station": {"modalities": ["lidar"]}}
    keys = tmp_path / "keys"
    provision_job(keys, stations)
    provision_group(keys, "hsi", ["hsi_a", "hsi_b"])
    job = json.loads(json.dumps(JOB))
    job["train"]["pretrain_steps"] = 2
    job["federation"].update(security="he", label_holder="lab", clients=stations, keys_dir=str(keys))
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(job))
    cfg = load_config(tmp_path / "job.yaml")
    secret = he.make_secret_context()
    public = he.load_public(he.public_bytes(secret))
    grid_r, grid_c = np.divmod(np.arange(0, 40 * 48, 7), 48)
    st = {}
    for name, spec in stations.items():
        st[name] = Station(cfg, name, load_scene(cfg, modalities=spec["modalities"], with_labels=False), tmp_path / name)
        st[name].prepare(grid_r, grid_c, False)
        st[name].uplink.public_ctx = public
    rng = np.random.default_rng(0)
    rows, cols = rng.integers(0, 40, 24), rng.integers(0, 48, 24)
    own = own_masks(cfg.federation.clients, ownership(cfg.federation.clients, ["hsi", "lidar"], rows, cols), rows.size)
    assert set(own) == {"hsi_a", "hsi_b"}  # lidar answers for the whole batch: no mask sent
    dim = cfg.model.he_dim
    summed = None
    for name, s in st.items():
        cts = s.forward((0, 0, 0), rows, cols, None, False, own.get(name)).cts
        summed = cts if summed is None else he.add_ciphertexts(public, summed, cts)
    fused = he.decrypt_batch(secret, summed, (rows.size, dim))

    def alone(name: str, sel: np.ndarray) -> np.ndarray:
        out = st[name].forward((0, 0, 0), rows[sel], cols[sel], None, False)
        return he.decrypt_batch(secret, out.cts, (int(sel.sum()), dim))

    in_a = rows < 20
    assert 0 < in_a.sum() < rows.size
    want = alone("lidar_station", np.ones(rows.size, bool))
    want[in_a] += alone("hsi_a", in_a)
    want[~in_a] += alone("hsi_b", ~in_a)
    np.testing.assert_allclose(fused, want, atol=1e-3)
