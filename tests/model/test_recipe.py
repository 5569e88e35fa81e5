"""The defaults are the general recipe; ``model.preset: published`` is FedDiff as published,
with any key the config sets still winning."""

from __future__ import annotations

import pytest

from feddiff.config import PUBLISHED, config_from_dict
from feddiff.errors import ConfigError

SCENE = {"scene": {"synthetic": {"seed": 0}}}


def test_defaults_are_the_general_recipe():
    cfg = config_from_dict(SCENE)
    assert cfg.model.preset == "general" and cfg.model.feature_timesteps == [5]
    assert cfg.model.unet.num_res_blocks == 2 and cfg.model.comm.rank == 32 and cfg.train.comm_lr_scale == 0.01
    assert cfg.train.mse_weight == 0.0 and cfg.train.min_steps == 300 and cfg.train.label_smoothing == 0.1
    assert cfg.train.l2 == 1e-4 and cfg.train.svm_baseline and cfg.train.diff_lr_scale == 0.01
    assert cfg.train.val_fraction == 0.0 and cfg.train.self_train == "off"


def test_published_preset_fills_what_the_config_leaves_out():
    cfg = config_from_dict({**SCENE, "model": {"preset": "published", "head_channels": 48}, "train": {"epochs": 7}})
    assert cfg.model.head_channels == 48 and cfg.train.epochs == 7  # set keys win
    assert cfg.train.mse_weight == PUBLISHED["train"]["mse_weight"] == 1.0
    assert cfg.train.min_steps == 0 and cfg.train.label_smoothing == 0.0
    assert cfg.model.comm.rank == 8 and cfg.train.comm_lr_scale == 1.0 and cfg.train.diff_lr_scale == 1.0
    assert cfg.model.feature_timesteps == [5, 50, 150]
    bits = config_from_dict({**SCENE, "model": {"preset": "published", "comm": {"bits": 16}}})
    assert bits.model.comm.bits == 16 and bits.model.comm.rank == 8  # a nested key set keeps its siblings' preset
    kept = config_from_dict({**SCENE, "model": {"preset": "published"}, "train": {"mse_weight": 0.5}})
    assert kept.train.mse_weight == 0.5


def test_unknown_preset_is_one_line():
    with pytest.raises(ConfigError, match="model.preset: expected one of general, published"):
        config_from_dict({**SCENE, "model": {"preset": "fast"}})
