"""Strategy selection from the job config, and FedAvg's arithmetic on typed WEIGHTS replies."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from feddiff.config import config_from_dict
from feddiff.errors import ConfigError
from feddiff.protocol.messages import Weights

from aggregator.averaging import FedAvg
from aggregator.fusion import make_fusion
from aggregator.fusion.he import HeThirdParty
from aggregator.fusion.local import LocalLabels, StationLabels

CLIENTS = {"a": {"modalities": ["hsi"]}, "b": {"modalities": ["hsi"]}, "c": {"modalities": ["lidar"]}}


def cfg_of(**fed):
    model = fed.pop("model", {})
    return config_from_dict({"scene": {"synthetic": {"seed": 0}}, "model": model, "federation": {"clients": CLIENTS, **fed}})


def link_of(cfg):
    holder = cfg.federation.label_holder if cfg.federation.label_holder != "aggregator" else None
    return SimpleNamespace(clients=dict(cfg.federation.clients), holder=holder, status=None)


@pytest.mark.parametrize("fed, kind", [
    ({}, LocalLabels),
    ({"label_holder": "c"}, StationLabels),
    ({"security": "he", "label_holder": "lab", "keys_dir": "k"}, HeThirdParty),
    ({"security": "he", "label_holder": "lab", "keys_dir": "k", "model": {"fusion": "additive"}}, HeThirdParty),
    ({"model": {"fusion": "interaction"}}, LocalLabels),
])
def test_the_job_config_selects_the_fusion_strategy(fed, kind):
    cfg = cfg_of(**fed)
    assert type(make_fusion(cfg, link_of(cfg))) is kind


@pytest.mark.parametrize("fed, says", [
    ({"security": "he"}, "third-party label_holder"),
    ({"security": "he", "label_holder": "a"}, "third-party label_holder"),
    ({"model": {"fusion": "additive"}}, "model.fusion: 'additive' does not fit"),
    ({"security": "he", "label_holder": "lab", "model": {"fusion": "interaction"}}, "model.fusion"),
])
def test_inconsistent_fusion_settings_are_one_config_error(fed, says):
    with pytest.raises(ConfigError, match=says):
        cfg_of(**fed)


def test_fedavg_weights_each_member_by_its_samples_and_keeps_dtypes():
    cfg = cfg_of()
    avg = FedAvg(cfg, link_of(cfg))
    assert avg.groups == {"hsi": ["a", "b"]}
    avg.samples = {"a": 1, "b": 3}
    replies = {"a": Weights({"hsi": {"w": np.array([4.0, 0.0], np.float32)}}, 1),
               "b": Weights({"hsi": {"w": np.array([0.0, 8.0], np.float32)}}, 3)}
    out = avg.combine(replies, {"hsi": 4})
    for c in ("a", "b"):
        np.testing.assert_array_equal(out[c].params["hsi"]["w"], np.array([1.0, 6.0], np.float32))
        assert out[c].params["hsi"]["w"].dtype == np.float32
    replies["b"] = Weights({"hsi": {"other": np.zeros(2, np.float32)}}, 3)
    with pytest.raises(Exception, match="weights_mismatch"):
        avg.combine(replies, {"hsi": 4})
