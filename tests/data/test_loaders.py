"""Readers and loaders on real and written files; every data error is one line."""

import dataclasses

import h5py
import numpy as np
import pytest
import scipy.io

from feddiff.config import config_from_dict, load_config
from feddiff.data.loader import load_labels, load_scene, scene_summary
from feddiff.data.readers import read_array
from feddiff.data.scene import GeoRef
from feddiff.errors import DataError
from feddiff.maps import write_geotiff_map, write_png_map
from tests.conftest import SHARED, needs_shared

ROOT = SHARED.parents[1] / "main"


@needs_shared("trento", "hsi_sim.npz")
def test_trento_sim_scene():
    from pathlib import Path

    cfg = load_config(Path(__file__).resolve().parents[2] / "configs" / "trento_sim.yaml")
    s = load_scene(cfg)
    assert s.bands() == {"hsi": 63, "lidar": 2}
    assert s.num_classes == 6
    assert (s.train_labels > 0).sum() == 819 and (s.test_labels > 0).sum() == 29395
    assert "819 train / 29395 test" in scene_summary(s)


def _labels_cfg(tmp_path, folder, train, test, extra=None):
    d = {"scene": {"modalities": {"lidar": {"path": str(SHARED / "trento" / "lidar.mat"), "key": "data"}},
                   "train_labels": {"path": str(SHARED / folder / train[0]), "key": train[1]},
                   "test_labels": {"path": str(SHARED / folder / test[0]), "key": test[1]}}}
    return config_from_dict(d, str(tmp_path / "x.yaml"))


@needs_shared("houston2013", "TRLabel.mat")
def test_houston_labels(tmp_path):
    tr, te, names = load_labels(_labels_cfg(tmp_path, "houston2013", ("TRLabel.mat", "TRLabel"), ("TSLabel.mat", "TSLabel")))
    assert ((tr > 0).sum(), (te > 0).sum(), int(max(tr.max(), te.max()))) == (2832, 12197, 15)


@needs_shared("augsburg", "TestImage.mat")
def test_augsburg_labels_float_test_map(tmp_path):
    tr, te, _ = load_labels(_labels_cfg(tmp_path, "augsburg", ("TrainImage.mat", "TrainImage"), ("TestImage.mat", "TestImage")))
    assert ((tr > 0).sum(), (te > 0).sum(), int(max(tr.max(), te.max()))) == (761, 77533, 7)


@needs_shared("muufl", "gt.mat")
def test_muufl_scene_with_per_class_split(tmp_path):
    d = {"scene": {"modalities": {"lidar": {"path": str(SHARED / "muufl" / "lidar.mat"), "key": "LiDAR"}},
                   "labels": {"path": str(SHARED / "muufl" / "gt.mat"), "key": "gt"},
                   "split": {"mode": "per_class_count", "per_class": 20, "seed": 0}}}
    s = load_scene(config_from_dict(d, str(tmp_path / "m.yaml")))
    labelled = (s.train_labels > 0).sum() + (s.test_labels > 0).sum()
    assert labelled == 53687 and s.num_classes == 11 and (s.train_labels > 0).sum() == 220


def test_mat_v73_npz_npy(tmp_path):
    a = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    with h5py.File(tmp_path / "a.mat", "w") as f:
        f["cube"] = a.T  # MATLAB v7.3 stores column-major
    assert np.array_equal(read_array(tmp_path / "a.mat", "cube")[0], a)
    scipy.io.savemat(tmp_path / "b.mat", {"cube": a})
    assert np.array_equal(read_array(tmp_path / "b.mat")[0], a)
    np.savez(tmp_path / "c.npz", cube=a)
    assert np.array_equal(read_array(tmp_path / "c.npz", "cube")[0], a)
    np.save(tmp_path / "d.npy", a)
    assert np.array_equal(read_array(tmp_path / "d.npy")[0], a)


def test_truncated_mat_and_missing_key(tmp_path):
    scipy.io.savemat(tmp_path / "b.mat", {"cube": np.ones((50, 50))})
    data = (tmp_path / "b.mat").read_bytes()
    (tmp_path / "t.mat").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match="t.mat"):
        read_array(tmp_path / "t.mat")
    with pytest.raises(DataError, match="no variable 'other'"):
        read_array(tmp_path / "b.mat", "other")


def _scene_files(tmp_path, lidar_shape=(10, 12, 2), nan=False):
    hsi = np.random.default_rng(0).random((10, 12, 5)).astype(np.float32)
    if nan:
        hsi[3, 4, 1] = np.nan
    np.save(tmp_path / "hsi.npy", hsi)
    np.save(tmp_path / "lidar.npy", np.ones(lidar_shape, np.float32))
    lab = np.zeros((10, 12), np.int64)
    lab[2:4, 2:4] = 1
    lab[6:8, 6:9] = 2
    np.save(tmp_path / "tr.npy", lab)
    np.save(tmp_path / "te.npy", lab)
    d = {"scene": {"modalities": {"hsi": {"path": "hsi.npy"}, "lidar": {"path": "lidar.npy"}},
                   "train_labels": {"path": "tr.npy"}, "test_labels": {"path": "te.npy"}}}
    return config_from_dict(d, str(tmp_path / "s.yaml"))


def test_lidar_of_another_size_names_both_shapes(tmp_path):
    with pytest.raises(DataError) as err:
        load_scene(_scene_files(tmp_path, lidar_shape=(9, 12, 2)))
    assert "9 x 12" in str(err.value) and "10 x 12" in str(err.value) and "\n" not in str(err.value)


def test_nan_in_raster_is_located(tmp_path):
    with pytest.raises(DataError, match=r"NaN/inf .*row 3, col 4, band 1"):
        load_scene(_scene_files(tmp_path, nan=True))


def test_client_view_loads_only_its_modality_and_no_labels(tmp_path):
    cfg = _scene_files(tmp_path)
    (tmp_path / "hsi.npy").unlink()  # the other organisation's file is not even there
    s = load_scene(cfg, modalities=["lidar"], with_labels=False)
    assert list(s.modalities) == ["lidar"] and s.train_labels is None


def test_geotiff_round_trip_keeps_georeference(tmp_path):
    geo = GeoRef('GEOGCS["WGS 84",DATUM["WGS_1984",SPHEROID["WGS 84",6378137,298.257223563]],PRIMEM["Greenwich",0],UNIT["degree",0.0174532925199433]]', (0.001, 0.0, 11.1, 0.0, -0.001, 46.1))
    cmap = np.random.default_rng(1).integers(0, 7, (20, 30)).astype(np.uint8)
    write_geotiff_map(cmap, tmp_path / "m.tif", geo, 6)
    back, g2 = read_array(tmp_path / "m.tif")
    assert np.array_equal(back[..., 0], cmap)
    assert g2 is not None and np.allclose(g2.transform, geo.transform) and "WGS" in g2.crs_wkt
    write_png_map(cmap, [f"c{i}" for i in range(6)], tmp_path / "m.png")
    assert (tmp_path / "m.png").stat().st_size > 0
