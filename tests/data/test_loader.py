"""Scenes from rasters, label maps, sample tables and the synthetic spec; every data error is one line."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from affine import Affine

from feddiff.config import config_from_dict
from feddiff.data import load_scene
from feddiff.data.loader import load_labels, scene_summary
from feddiff.data.patches import extract_patches, labelled_pixels, pad_raster
from feddiff.errors import ConfigError, DataError

H, W = 10, 12


def label_maps() -> tuple[np.ndarray, np.ndarray]:
    tr = np.zeros((H, W), np.int64)
    te = np.zeros((H, W), np.int64)
    tr[1:3, 1:3] = 1
    tr[6:8, 6:8] = 2
    te[1:4, 8:11] = 1
    te[8:10, 1:5] = 2
    return tr, te


def write_scene(tmp_path, lidar_shape=(H, W, 2), nan_at=None, labels=None, class_names=None, **scene_extra):
    rng = np.random.default_rng(0)
    hsi = rng.random((H, W, 5)).astype(np.float64)  # float64 on disk: the loader makes float32
    if nan_at is not None:
        hsi[nan_at] = np.nan
    np.save(tmp_path / "hsi.npy", hsi)
    np.save(tmp_path / "lidar.npy", rng.random(lidar_shape).astype(np.float32))
    tr, te = labels if labels is not None else label_maps()
    np.save(tmp_path / "tr.npy", tr.astype(np.uint8))
    np.save(tmp_path / "te.npy", te.astype(np.uint8))
    scene = {"modalities": {"hsi": {"path": "hsi.npy"}, "lidar": {"path": "lidar.npy"}},
             "train_labels": {"path": "tr.npy"}, "test_labels": {"path": "te.npy"}}
    if class_names is not None:
        scene["class_names"] = class_names
    scene.update(scene_extra)
    return config_from_dict({"name": "t", "scene": scene}, str(tmp_path / "s.yaml"))


def one_line(err) -> str:
    msg = str(err.value)
    assert "\n" not in msg
    return msg


def test_raster_scene_types_shapes_and_default_names(tmp_path):
    s = load_scene(write_scene(tmp_path, lidar_shape=(H, W)))  # a 2-D DSM gets a channel axis
    assert s.bands() == {"hsi": 5, "lidar": 1}
    assert all(a.dtype == np.float32 for a in s.modalities.values())
    assert s.train_labels.dtype == np.int64 and s.test_labels.dtype == np.int64
    tr, te = label_maps()
    assert np.array_equal(s.train_labels, tr) and np.array_equal(s.test_labels, te)
    assert s.class_names == ["class 1", "class 2"]
    assert np.allclose(s.modalities["hsi"], np.load(tmp_path / "hsi.npy"))


def test_configured_class_names_and_labels_beyond_them(tmp_path):
    assert load_scene(write_scene(tmp_path, class_names=["roof", "tree", "water"])).class_names == ["roof", "tree", "water"]
    with pytest.raises(DataError) as err:
        load_scene(write_scene(tmp_path, class_names=["roof"]))
    assert "labels go up to 2" in one_line(err) and "1 classes" in str(err.value)


def test_nan_in_raster_is_located(tmp_path):
    with pytest.raises(DataError) as err:
        load_scene(write_scene(tmp_path, nan_at=(3, 4, 1)))
    assert "hsi" in one_line(err) and "row 3, col 4, band 1" in str(err.value)


def test_lidar_of_another_size_names_both_shapes(tmp_path):
    with pytest.raises(DataError) as err:
        load_scene(write_scene(tmp_path, lidar_shape=(9, W, 2)))
    msg = one_line(err)
    assert f"9 x {W}" in msg and f"{H} x {W}" in msg and "lidar" in msg


def test_label_map_of_another_size(tmp_path):
    tr, te = label_maps()
    with pytest.raises(DataError) as err:
        load_scene(write_scene(tmp_path, labels=(tr[:-1], te[:-1])))
    assert f"{H - 1} x {W}" in one_line(err) and f"{H} x {W}" in str(err.value)


def test_client_view_opens_only_its_modality_and_no_labels(tmp_path):
    cfg = write_scene(tmp_path)
    for other in ("hsi.npy", "tr.npy", "te.npy"):  # the other organisation's files are not even there
        (tmp_path / other).unlink()
    s = load_scene(cfg, modalities=["lidar"], with_labels=False)
    assert list(s.modalities) == ["lidar"] and s.train_labels is None and s.test_labels is None
    with pytest.raises(DataError):  # proves the files above really would have been needed
        load_scene(cfg, modalities=["lidar"], with_labels=True)


def test_unknown_modality(tmp_path):
    with pytest.raises(DataError) as err:
        load_scene(write_scene(tmp_path), modalities=["sar"])
    assert "no modality sar" in one_line(err) and "hsi, lidar" in str(err.value)


def test_overlapping_train_and_test_maps_are_refused(tmp_path):
    tr, te = label_maps()
    te[2, 2] = 1
    with pytest.raises(DataError) as err:
        load_scene(write_scene(tmp_path, labels=(tr, te)))
    assert "1 pixels are labelled in both" in one_line(err) and "row 2, col 2" in str(err.value)


def test_non_integer_float_labels_are_refused_integer_floats_accepted(tmp_path):
    tr, te = label_maps()
    cfg = write_scene(tmp_path)
    np.save(tmp_path / "te.npy", te.astype(np.float32))  # like Augsburg's TestImage
    assert np.array_equal(load_scene(cfg).test_labels, te)
    np.save(tmp_path / "te.npy", te.astype(np.float32) * 0.5)
    with pytest.raises(DataError) as err:
        load_scene(cfg)
    assert "non-integer labels" in one_line(err) and "te.npy" in str(err.value)


def test_one_labels_map_split_per_class(tmp_path):
    tr, te = label_maps()
    full = np.where(tr > 0, tr, te)
    np.save(tmp_path / "full.npy", full)
    write_scene(tmp_path)  # for hsi.npy
    d = {"name": "t", "scene": {"modalities": {"hsi": {"path": "hsi.npy"}}, "labels": {"path": "full.npy"},
                                "split": {"mode": "per_class_count", "per_class": 3, "seed": 7}}}
    cfg = config_from_dict(d, str(tmp_path / "s.yaml"))
    s = load_scene(cfg)
    assert [(s.train_labels == k).sum() for k in (1, 2)] == [3, 3]
    assert np.array_equal(np.where(s.train_labels > 0, s.train_labels, s.test_labels), full)
    assert np.array_equal(load_scene(cfg).train_labels, s.train_labels)  # reproducible from the YAML
    d["scene"]["split"]["mode"] = "given"
    with pytest.raises(ConfigError) as err:
        load_scene(config_from_dict(d, str(tmp_path / "s.yaml")))
    assert "scene.split.mode" in one_line(err)


def test_given_maps_can_be_redrawn(tmp_path):
    cfg = write_scene(tmp_path, split={"mode": "per_class_fraction", "fraction": 0.5, "seed": 1})
    s = load_scene(cfg)
    tr, te = label_maps()
    union = np.where(tr > 0, tr, te)
    assert np.array_equal(np.where(s.train_labels > 0, s.train_labels, s.test_labels), union)
    assert not np.array_equal(s.train_labels, tr)
    for k in (1, 2):
        assert (s.train_labels == k).sum() == round(0.5 * (union == k).sum())


def test_load_labels_never_opens_rasters(tmp_path):
    cfg = write_scene(tmp_path)
    (tmp_path / "hsi.npy").unlink()
    (tmp_path / "lidar.npy").unlink()
    tr, te, names = load_labels(cfg)
    assert np.array_equal(tr, label_maps()[0]) and names == ["class 1", "class 2"]


def test_geotiff_modality_carries_its_georeference(tmp_path):
    cfg = write_scene(tmp_path)
    t = Affine(1.0, 0.0, 500.0, 0.0, -1.0, 900.0)
    with rasterio.open(tmp_path / "dsm.tif", "w", driver="GTiff", height=H, width=W, count=1, dtype="float32",
                       crs="EPSG:32632", transform=t) as ds:
        ds.write(np.ones((1, H, W), np.float32))
    cfg.scene.modalities["lidar"].path = "dsm.tif"
    s = load_scene(cfg)
    assert s.georef is not None and np.allclose(s.georef.transform, tuple(t)[:6]) and s.bands()["lidar"] == 1


def write_table(tmp_path, n=30, split=None):
    rng = np.random.default_rng(3)
    labels = np.repeat([1, 2, 3], n // 3)
    split = np.resize([1, 2, 2], n) if split is None else split
    np.save(tmp_path / "hsi.npy", rng.random((n, 6)))
    np.save(tmp_path / "lidar.npy", rng.random((n, 2)).astype(np.float32))
    np.save(tmp_path / "labels.npy", labels[:, None])  # MATLAB-style column vector
    np.save(tmp_path / "split.npy", split)
    d = {"name": "table", "scene": {"sample_table": {
        "modalities": {"hsi": {"path": "hsi.npy"}, "lidar": {"path": "lidar.npy"}},
        "labels": {"path": "labels.npy"}, "split": {"path": "split.npy"}}}}
    return config_from_dict(d, str(tmp_path / "t.yaml")), labels, split


def test_sample_table_is_a_scene_of_n_rows_by_one_column(tmp_path):
    cfg, labels, split = write_table(tmp_path)
    s = load_scene(cfg)
    assert s.shape == (30, 1) and s.bands() == {"hsi": 6, "lidar": 2}
    assert np.array_equal(s.train_labels[:, 0], np.where(split == 1, labels, 0))
    assert np.array_equal(s.test_labels[:, 0], np.where(split == 2, labels, 0))
    assert np.allclose(s.modalities["hsi"][:, 0, :], np.load(tmp_path / "hsi.npy"))
    rows, cols, y = labelled_pixels(s.train_labels)
    x = extract_patches(pad_raster(s.modalities["hsi"], 1), rows, cols, 1)  # patch size 1 works
    assert x.shape == (10, 6, 1, 1) and np.allclose(x[:, :, 0, 0], np.load(tmp_path / "hsi.npy")[rows])
    assert np.array_equal(y, labels[rows] - 1)


def test_sample_table_trains_at_patch_size_1_for_every_party(tmp_path):
    cfg, _, _ = write_table(tmp_path)
    assert cfg.model.patch_size == 1  # stations, aggregator and export all load this config
    d = {"name": "table", "model": {"patch_size": 7}, "scene": {"sample_table": {
        "modalities": {"hsi": {"path": "hsi.npy"}}, "labels": {"path": "labels.npy"}, "split": {"path": "split.npy"}}}}
    with pytest.raises(ConfigError) as err:
        config_from_dict(d, str(tmp_path / "t.yaml"), check_files=False)
    assert "model.patch_size" in one_line(err) and "got 7" in str(err.value)


def test_sample_table_client_view_reads_no_labels(tmp_path):
    cfg, _, _ = write_table(tmp_path)
    (tmp_path / "labels.npy").unlink()
    (tmp_path / "split.npy").unlink()
    (tmp_path / "hsi.npy").unlink()
    s = load_scene(cfg, modalities=["lidar"], with_labels=False)
    assert s.shape == (30, 1) and s.train_labels is None


def test_sample_table_errors(tmp_path):
    cfg, _, _ = write_table(tmp_path, split=np.resize([1, 2, 3], 30))
    with pytest.raises(DataError) as err:
        load_scene(cfg)
    assert "split holds 3" in one_line(err)
    cfg, _, _ = write_table(tmp_path)
    np.save(tmp_path / "lidar.npy", np.zeros((29, 2)))
    with pytest.raises(DataError) as err:
        load_scene(cfg)
    assert "hsi 30" in one_line(err) and "lidar 29" in str(err.value)


def test_synthetic_scene_through_the_config(tmp_path):
    cfg = config_from_dict({"scene": {"synthetic": {"seed": 1, "rows": 32, "cols": 40, "bands": 8, "train_per_class": 5}}},
                           str(tmp_path / "syn.yaml"))
    full = load_scene(cfg)
    lidar_only = load_scene(cfg, modalities=["lidar"], with_labels=False)
    assert list(lidar_only.modalities) == ["lidar"] and lidar_only.train_labels is None
    assert np.array_equal(lidar_only.modalities["lidar"], full.modalities["lidar"])
    with pytest.raises(DataError):
        load_scene(cfg, modalities=["sar"])


def test_scene_summary_lists_modalities_classes_and_counts(tmp_path):
    s = load_scene(write_scene(tmp_path, class_names=["red roof", "tall trees"]))
    text = scene_summary(s)
    tr, te = label_maps()
    assert f"modality hsi: {H} x {W} x 5" in text and f"modality lidar: {H} x {W} x 2" in text
    assert f"{(tr > 0).sum()} train / {(te > 0).sum()} test" in text
    roof = next(line for line in text.splitlines() if "red roof" in line).split()
    assert roof[-2:] == [str((tr == 1).sum()), str((te == 1).sum())]
    assert "labels not loaded" in scene_summary(load_scene(write_scene(tmp_path), with_labels=False))
