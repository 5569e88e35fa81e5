"""The defaults are FedDiff as published; ``model.preset: recipe`` is the candidate general
recipe, with any key the config sets still winning."""

from __future__ import annotations

import pytest

from feddiff.config import RECIPE, config_from_dict
from feddiff.errors import ConfigError

SCENE = {"scene": {"synthetic": {"seed": 0}}}


def test_defaults_are_feddiff_as_published():
    cfg = config_from_dict(SCENE)
    assert cfg.model.preset == "published" and cfg.model.feature_timesteps == [5, 50, 150]
    assert cfg.model.unet.num_res_blocks == 2 and cfg.model.comm.rank == 8
    assert cfg.train.mse_weight == 1.0 and cfg.train.l2 == 1e-4 and cfg.train.svm_baseline
    assert cfg.train.val_fraction == 0.0 and cfg.train.self_train == "off"


def test_recipe_preset_fills_what_the_config_leaves_out():
    cfg = config_from_dict({**SCENE, "model": {"preset": "recipe", "head_channels": 48}, "train": {"epochs": 7}})
    assert cfg.model.head_channels == 48 and cfg.train.epochs == 7  # set keys win
    assert cfg.model.feature_timesteps == RECIPE["model"]["feature_timesteps"]
    assert cfg.model.unet.num_res_blocks == 1 and cfg.model.comm.rank == 32
    assert cfg.train.mse_weight == 0.0 and cfg.train.l2 == 0.0
    assert cfg.train.val_fraction == 0.2 and cfg.train.self_train == "auto"


def test_unknown_preset_is_one_line():
    with pytest.raises(ConfigError, match="model.preset: expected one of recipe, published"):
        config_from_dict({**SCENE, "model": {"preset": "fast"}})
