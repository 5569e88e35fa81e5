"""The HE label holder's handlers on a provisioned job: it seals one box per station asked for,
withholds the batch loss under label DP, and never scores predictions sent to it."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from crypto.chain import party_security, verified_he_context
from crypto.he import encrypt_batch
from crypto.provision import init_job, issue
from feddiff.config import load_config
from feddiff.protocol.label_messages import Fused, Score, SealedHeadGrad
from feddiff.runtime import Incoming


class Sent:
    """The holder's node as far as its handlers use it: what they send."""

    def __init__(self, security: dict) -> None:
        self.security, self.out = security, []

    def send(self, payload, **kw) -> None:
        self.out.append(payload)


@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    out = tmp_path_factory.mktemp("keys") / "j1"
    init_job("j1", out)
    for role, name in (("aggregator", "agg"), ("edge", "hsi"), ("edge", "lidar"), ("labels", "lab")):
        issue(out, role, name)
    return out


def holder(tmp_path, keys, sigma: float):
    from label_holder.holder import LabelHolderApp

    doc = {"name": "j1", "scene": {"synthetic": {"seed": 1, "rows": 16, "cols": 16, "bands": 6, "train_per_class": 5}},
           "model": {"he_dim": 8, "head_channels": 8}, "train": {"label_dp_sigma": sigma, "min_steps": 0},
           "federation": {"job": "j1", "security": "he", "label_holder": "lab", "keys_dir": str(keys),
                          "clients": {"hsi": {"modalities": ["hsi"]}, "lidar": {"modalities": ["lidar"]}}}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    cfg = load_config(path)
    app = LabelHolderApp(cfg, "lab", tmp_path / "lab")
    node = Sent(party_security(cfg, "lab", tmp_path / "lab"))
    app.attach(node)
    return cfg, app, node


def fused(cfg, app, to) -> Incoming:
    ctx = verified_he_context(cfg, "agg", app.public)
    z = np.random.default_rng(0).normal(0, 1, (6, 8))
    return Incoming("fused", 0, 0, 0, Fused(encrypt_batch(ctx, z), (6, 8), True, np.arange(6), to))


@pytest.mark.parametrize("sigma", [0.0, 1.0])
def test_one_box_per_station_and_no_batch_statistics_under_label_dp(tmp_path, keys, sigma):
    cfg, app, node = holder(tmp_path, keys, sigma)
    assert "relay_box" not in node.security  # taken out before the channel opens
    app.on_fused(fused(cfg, app, ["hsi", "lidar"]))
    reply = node.out[-1]
    assert isinstance(reply, SealedHeadGrad) and set(reply.boxes) == {"hsi", "lidar"}
    assert (reply.ce is None) == (sigma > 0)


def test_a_gradient_for_a_party_that_is_not_a_station_is_refused(tmp_path, keys):
    cfg, app, _ = holder(tmp_path, keys, 0.0)
    with pytest.raises(ValueError, match="for agg, not stations of this job"):
        app.on_fused(fused(cfg, app, ["hsi", "agg"]))


def test_predictions_sent_for_scoring_are_refused(tmp_path, keys):
    _, app, _ = holder(tmp_path, keys, 0.0)
    with pytest.raises(ValueError, match="scores only what it predicted itself"):
        app.on_score(Incoming("score", 3, 0, 0, Score(np.zeros(app.test[0].shape[0], np.int64))))


def test_samples_outside_the_training_set_are_refused(tmp_path, keys):
    cfg, app, _ = holder(tmp_path, keys, 0.0)
    msg = fused(cfg, app, ["hsi"])
    msg.payload.idx = msg.payload.idx + 10_000
    with pytest.raises(ValueError, match="outside the"):
        app.on_fused(msg)
