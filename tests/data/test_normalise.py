"""Band statistics come from training pixels only and survive a round trip through JSON."""

from __future__ import annotations

import json

import numpy as np
import pytest

from feddiff.data.normalise import BandStats
from feddiff.errors import DataError


def test_fitted_on_training_pixels_only():
    rng = np.random.default_rng(0)
    raster = rng.normal(5.0, 2.0, (20, 30, 4)).astype(np.float32)
    mask = np.zeros((20, 30), bool)
    mask[:5] = True
    raster[5:] += 100.0  # test pixels far away: they must not move the statistics
    s = BandStats.fit(raster, mask)
    train = raster[mask].astype(np.float64)
    assert np.allclose(s.mean, train.mean(0)) and np.allclose(s.std, train.std(0))
    out = s.apply(raster)
    assert out.dtype == np.float32 and out.shape == raster.shape
    assert np.allclose(out[mask].mean(0), 0, atol=1e-5) and np.allclose(out[mask].std(0), 1, atol=1e-4)
    assert out[~mask].mean() > 10  # the shifted test pixels stay shifted


def test_constant_band_is_centred_not_blown_up():
    raster = np.zeros((4, 4, 2), np.float32)
    raster[..., 0] = 7.0
    raster[..., 1] = np.arange(16).reshape(4, 4)
    mask = np.zeros((4, 4), bool)
    mask[0] = True
    raster[3, 3, 0] = 7.5  # a test pixel off the constant training value
    s = BandStats.fit(raster, mask)
    out = s.apply(raster)
    assert np.all(np.isfinite(out)) and s.std[0] == 1.0
    assert out[3, 3, 0] == pytest.approx(0.5)


def test_empty_mask_uses_every_pixel():
    raster = np.random.default_rng(1).random((6, 6, 3)).astype(np.float32)
    s = BandStats.fit(raster, np.zeros((6, 6), bool))
    assert np.allclose(s.mean, raster.reshape(-1, 3).mean(0))


def test_dict_round_trip_is_plain_json():
    raster = np.random.default_rng(2).random((5, 5, 3)).astype(np.float32)
    s = BandStats.fit(raster, np.ones((5, 5), bool))
    d = json.loads(json.dumps(s.to_dict()))
    assert all(isinstance(v, float) for v in d["mean"] + d["std"])
    back = BandStats.from_dict(d)
    assert np.array_equal(back.mean, s.mean) and np.array_equal(back.std, s.std)
    assert np.array_equal(back.apply(raster), s.apply(raster))


def test_wrong_band_count_and_malformed_dict():
    s = BandStats.fit(np.ones((3, 3, 4), np.float32), np.ones((3, 3), bool))
    with pytest.raises(DataError, match="4 channels but the raster has 3"):
        s.apply(np.ones((3, 3, 3), np.float32))
    with pytest.raises(DataError):
        BandStats.from_dict({"mean": [0.0, 1.0], "std": [1.0]})
    with pytest.raises(DataError):
        BandStats.from_dict({"mean": [0.0], "std": [0.0]})
    with pytest.raises(DataError):
        BandStats.from_dict({"mean": [0.0]})
    with pytest.raises(DataError):
        BandStats.fit(np.ones((3, 3, 4), np.float32), np.ones((3, 2), bool))
