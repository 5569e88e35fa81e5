"""Loaders on the real benchmark files in ../shared/data (beside the project root).

Those files are not part of the project: the whole module skips where the folder is absent.
Only Trento has a hyperspectral cube there (simulated); for Houston 2013 and Augsburg only the
label maps exist, and MUUFL has its LiDAR raster, so those are tested as far as they go.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from feddiff.config import config_from_dict, load_config
from feddiff.data.loader import load_labels, load_scene, scene_summary

ROOT = Path(__file__).resolve().parents[2]
SHARED = (ROOT / ".." / "shared" / "data").resolve()

pytestmark = pytest.mark.skipif(
    not SHARED.is_dir(), reason=f"benchmark data not found at {SHARED} (../shared/data beside the project root)"
)


def need(*parts: str) -> Path:
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"benchmark file not found: {path}")
    return path


def labels_only_config(tmp_path, folder: str, train: tuple[str, str], test: tuple[str, str], names: list[str]):
    """A config whose rasters are not there: the label holder must never open them."""
    d = {"name": folder, "scene": {
        "modalities": {"hsi": {"path": str(tmp_path / "absent_hsi.mat")}},
        "train_labels": {"path": str(need(folder, train[0])), "key": train[1]},
        "test_labels": {"path": str(need(folder, test[0])), "key": test[1]},
        "class_names": names}}
    return config_from_dict(d, str(tmp_path / f"{folder}.yaml"), check_files=False)


def test_trento_sim_through_the_shipped_config():
    need("trento", "hsi_sim.npz")
    cfg = load_config(ROOT / "configs" / "trento_sim.yaml")
    s = load_scene(cfg)
    assert s.shape == (166, 600)
    assert s.bands() == {"hsi": 63, "lidar": 2}
    assert s.num_classes == 6 and s.class_names[0] == "Apple trees" and s.class_names[5] == "Roads"
    assert (s.train_labels > 0).sum() == 819 and (s.test_labels > 0).sum() == 29395
    assert [int((s.train_labels == k).sum()) for k in range(1, 7)] == [129, 125, 105, 154, 184, 122]
    assert not np.any((s.train_labels > 0) & (s.test_labels > 0))
    assert 0 <= s.modalities["lidar"][..., 0].min() and s.modalities["lidar"][..., 0].max() < 25  # metres
    assert "819 train / 29395 test" in scene_summary(s)
    lidar_station = load_scene(cfg, modalities=["lidar"], with_labels=False)
    assert list(lidar_station.modalities) == ["lidar"] and lidar_station.train_labels is None
    assert np.array_equal(lidar_station.modalities["lidar"], s.modalities["lidar"])


def test_trento_full_ground_truth_is_the_union_of_the_split(tmp_path):
    gt_cfg = {"name": "trento_gt", "scene": {
        "modalities": {"lidar": {"path": str(need("trento", "lidar.mat")), "key": "data"}},
        "labels": {"path": str(need("trento", "gt.mat")), "key": "mask_test"},
        "split": {"mode": "per_class_count", "per_class": 20, "seed": 0}}}
    s = load_scene(config_from_dict(gt_cfg, str(tmp_path / "gt.yaml")))
    full = np.where(s.train_labels > 0, s.train_labels, s.test_labels)
    assert (full > 0).sum() == 30214 and s.num_classes == 6 and (s.train_labels > 0).sum() == 120
    tr, te, _ = load_labels(load_config(ROOT / "configs" / "trento_sim.yaml"))
    assert np.array_equal(np.where(tr > 0, tr, te), full)


def test_houston2013_label_maps(tmp_path):
    names = [f"h{k}" for k in range(1, 16)]
    tr, te, got = load_labels(labels_only_config(tmp_path, "houston2013", ("TRLabel.mat", "TRLabel"), ("TSLabel.mat", "TSLabel"), names))
    assert tr.shape == (349, 1905) and tr.dtype == np.int64
    assert ((tr > 0).sum(), (te > 0).sum()) == (2832, 12197)
    assert set(np.unique(tr[tr > 0])) == set(range(1, 16)) == set(np.unique(te[te > 0])) and got == names


def test_augsburg_label_maps_with_a_float_test_map(tmp_path):
    names = [f"a{k}" for k in range(1, 8)]
    tr, te, _ = load_labels(labels_only_config(tmp_path, "augsburg", ("TrainImage.mat", "TrainImage"), ("TestImage.mat", "TestImage"), names))
    assert tr.shape == te.shape == (332, 485) and te.dtype == np.int64  # TestImage is float32 on disk
    assert ((tr > 0).sum(), (te > 0).sum()) == (761, 77533)
    assert set(np.unique(te[te > 0])) == set(range(1, 8))


def test_muufl_lidar_scene_with_a_seeded_split(tmp_path):
    names = load_config_names(ROOT / "configs" / "muufl.yaml")
    d = {"name": "muufl", "scene": {
        "modalities": {"lidar": {"path": str(need("muufl", "lidar.mat")), "key": "LiDAR"}},
        "labels": {"path": str(need("muufl", "gt.mat")), "key": "gt"},
        "split": {"mode": "per_class_count", "per_class": 20, "seed": 0},
        "class_names": names}}
    cfg = config_from_dict(d, str(tmp_path / "muufl.yaml"))
    s = load_scene(cfg)
    assert s.shape == (325, 220) and s.bands() == {"lidar": 2} and s.num_classes == 11
    assert (s.train_labels > 0).sum() + (s.test_labels > 0).sum() == 53687
    assert [int((s.train_labels == k).sum()) for k in range(1, 12)] == [20] * 11
    assert np.array_equal(load_scene(cfg).train_labels, s.train_labels)
    cfg.scene.split.seed = 1
    assert not np.array_equal(load_scene(cfg).train_labels, s.train_labels)


def load_config_names(path: Path) -> list[str]:
    import yaml

    return yaml.safe_load(path.read_text())["scene"]["class_names"]
