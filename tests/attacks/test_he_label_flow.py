"""Issue #18 item 2 (what the aggregator sees of the labels in HE mode), on a whole job.

An HE job runs as real processes (aggregator, two stations, the label holder) over the real
Mosquitto with the generated TLS config and ACL, with label DP on. A spy with the broker
operator's credentials records every message; opened with the AGGREGATOR's keys, the label
holder's uplinks hold no gradient and no prediction array, only relay boxes and counts; opened
with a station's keys, its BACKWARD holds only its box. The holder keeps the predictions,
writes the map and its report, and the aggregator's report carries the metrics and epsilon the
holder published."""

from __future__ import annotations

import json
import math

import pytest
import yaml

from feddiff_app.broker import mosquitto_binary
from tests.federation.test_secure_jobs import JOB, operator_spy, provision_job, start_operator_broker
from tests.party_processes import run_parties

pytestmark = [pytest.mark.security, pytest.mark.broker, pytest.mark.skipif(mosquitto_binary() is None, reason="mosquitto is not installed")]

STATIONS = {"hsi_station": {"modalities": ["hsi"]}, "lidar_station": {"modalities": ["lidar"]}}


def run_job(tmp_path, keys, port):
    job = json.loads(json.dumps(JOB))
    job["train"].update(epochs=2, label_dp_sigma=1.0, label_dp_clip=1.0)
    job["federation"].update(security="he", label_holder="lab", clients=STATIONS, keys_dir=str(keys), state_dir=str(tmp_path / "state"),
                             broker={"port": port})
    cfg_path = tmp_path / "job.yaml"
    cfg_path.write_text(yaml.safe_dump(job))
    run_parties(cfg_path, ["aggregator", *STATIONS, "lab"], tmp_path)
    return cfg_path


class Recorded:
    """Raw (topic, bytes) the spy took off the real broker, read back by a channel."""

    def __init__(self, items: list) -> None:
        self.items = list(items)

    def get(self, timeout: float):
        return self.items.pop(0) if self.items else None

    def close(self) -> None:
        pass


def opened(spy, keys, cfg_path, party: str, tmp_path) -> list:
    """Everything the spy recorded, opened as ``party`` would open it."""
    from crypto import security_filters
    from crypto.directory import load_directory
    from crypto.keys import load_party
    from feddiff.config import load_config
    from feddiff.protocol.channel import Channel
    from feddiff.protocol.endpoint import build_chain

    cfg = load_config(cfg_path)
    chain = build_chain(cfg, security_filters("securetest", load_party(keys, party), load_directory(keys), tmp_path / f"{party}_replay.json", max_age_s=3600))
    reader = Channel(spy, "securetest", party, chain, cfg.federation.max_message_bytes)
    out = []
    while (msg := reader.recv(0.5)) is not None:
        out.append(msg)
    return out


def test_he_job_keeps_gradients_predictions_and_map_away_from_the_aggregator(tmp_path):
    from feddiff.protocol import jobs

    keys = tmp_path / "keys"
    provision_job(keys, (*STATIONS, "operator"), labels="lab")
    broker = start_operator_broker(keys, tmp_path)
    try:
        spy = operator_spy(keys, broker.port)
        spy.subscribe("feddiff/securetest/up/lab")
        spy.subscribe("feddiff/securetest/down/hsi_station")
        cfg_path = run_job(tmp_path, keys, broker.port)
        raw = []
        while (item := spy.get(0.5)) is not None:
            raw.append(item)
        spy.close()
    finally:
        broker.stop()
    from_holder = opened(Recorded(r for r in raw if "/up/" in r[0]), keys, cfg_path, "aggregator", tmp_path)
    to_station = opened(Recorded(r for r in raw if "/down/" in r[0]), keys, cfg_path, "hsi_station", tmp_path)

    kinds = {m.header.content_type for m in from_holder}
    assert {jobs.HEAD_GRAD, jobs.PREDICTIONS, jobs.METRICS} <= kinds
    for m in from_holder:
        if m.header.content_type == jobs.HEAD_GRAD:
            assert set(m.arrays) == {"box_data", "box_lens"}, sorted(m.arrays)
            assert not {"ce", "correct", "total"} & set(m.meta)  # withheld under label DP
        if m.header.content_type == jobs.PREDICTIONS:
            assert m.arrays == {} and set(m.meta) == {"attempt", "n"}
    backward = [m for m in to_station if m.header.content_type == jobs.BACKWARD]
    assert backward and all(set(m.arrays) == {"box_data", "box_lens"} for m in backward)

    state = tmp_path / "state"
    holder = json.loads((state / "lab" / "report.json").read_text())
    agg = json.loads((state / "aggregator" / "report.json").read_text())
    status = json.loads((state / "aggregator" / "status.json").read_text())
    assert (state / "lab" / "classification_map.png").exists() and holder["map"]
    assert agg["oa"] == holder["oa"] and agg["kappa"] == holder["kappa"]
    dp = holder["label_dp"]
    assert dp["enabled"] and dp["sigma"] == 1.0 and math.isfinite(dp["epsilon"]) and dp["max_units"] >= 2
    assert status["label_dp"] == dp
