"""The synthetic scene is seeded and fast, and it needs BOTH modalities: a per-pixel classifier
on HSI + LiDAR beats either alone by a clear margin, and each alone confuses the designed pairs."""

from __future__ import annotations

import time

import numpy as np
import pytest

from feddiff.config import SyntheticSpec
from feddiff.data.normalise import BandStats
from feddiff.data.synthetic import CLASS_NAMES, make_synthetic_scene


def nearest_centroid(scene, mods: list[str]) -> np.ndarray:
    """(K, K) confusion of a nearest-centroid classifier on normalised per-pixel features,
    trained on the training pixels, evaluated on the test pixels. Each modality is weighted
    equally (1/sqrt(channels)) so 32 bands of HSI do not drown 2 channels of LiDAR."""
    tr, te = scene.train_labels, scene.test_labels
    feats = np.concatenate(
        [BandStats.fit(scene.modalities[m], tr > 0).apply(scene.modalities[m]) / np.sqrt(scene.modalities[m].shape[2]) for m in mods],
        axis=2,
    )
    k = scene.num_classes
    cents = np.stack([feats[tr == c].mean(0) for c in range(1, k + 1)])
    x, y = feats[te > 0], te[te > 0] - 1
    pred = np.argmin(((x[:, None, :] - cents[None]) ** 2).sum(-1), 1)
    cm = np.zeros((k, k), int)
    np.add.at(cm, (y, pred), 1)
    return cm


def accuracy(cm: np.ndarray) -> float:
    return np.trace(cm) / cm.sum()


def confusion_rate(cm: np.ndarray, names: list[str], a: str, b: str) -> float:
    i, j = names.index(a), names.index(b)
    return (cm[i, j] + cm[j, i]) / (cm[i].sum() + cm[j].sum())


@pytest.mark.parametrize("spec", [SyntheticSpec(seed=0), SyntheticSpec(seed=5), SyntheticSpec(seed=3, rows=40, cols=48, bands=12, train_per_class=25)])
def test_fusion_beats_each_modality_alone(spec):
    s = make_synthetic_scene(spec)
    both, hsi, lidar = (nearest_centroid(s, m) for m in (["hsi", "lidar"], ["hsi"], ["lidar"]))
    oa = {"both": accuracy(both), "hsi": accuracy(hsi), "lidar": accuracy(lidar)}
    assert oa["both"] > 0.93, oa
    assert oa["both"] - max(oa["hsi"], oa["lidar"]) > 0.15, oa
    names = s.class_names
    # the designed ambiguities: same spectrum / different height, same height / different spectrum
    assert confusion_rate(hsi, names, "low grass", "tall trees") > 0.1
    assert confusion_rate(hsi, names, "asphalt road", "grey roof") > 0.1
    assert confusion_rate(lidar, names, "red roof", "grey roof") > 0.1
    assert confusion_rate(lidar, names, "asphalt road", "bare soil") > 0.1
    for a, b in [("low grass", "tall trees"), ("asphalt road", "grey roof"), ("red roof", "grey roof"), ("asphalt road", "bare soil")]:
        assert confusion_rate(both, names, a, b) < 0.05, (a, b)


def test_seeded_and_shaped():
    a = make_synthetic_scene(SyntheticSpec(seed=4, rows=32, cols=48, bands=10, train_per_class=5))
    b = make_synthetic_scene(SyntheticSpec(seed=4, rows=32, cols=48, bands=10, train_per_class=5))
    c = make_synthetic_scene(SyntheticSpec(seed=5, rows=32, cols=48, bands=10, train_per_class=5))
    for m in ("hsi", "lidar"):
        assert np.array_equal(a.modalities[m], b.modalities[m])
    assert np.array_equal(a.train_labels, b.train_labels) and np.array_equal(a.test_labels, b.test_labels)
    assert not np.array_equal(a.modalities["hsi"], c.modalities["hsi"])
    assert a.bands() == {"hsi": 10, "lidar": 2} and a.shape == (32, 48)
    assert a.modalities["hsi"].dtype == np.float32 and a.train_labels.dtype == np.int64
    assert len(set(a.class_names)) == 6 and all(len(n) > 3 for n in a.class_names)


@pytest.mark.parametrize("rows, cols", [(16, 40), (40, 48), (96, 128), (61, 203)])
def test_every_class_present_with_requested_training_pixels(rows, cols):
    s = make_synthetic_scene(SyntheticSpec(seed=1, rows=rows, cols=cols, bands=8, train_per_class=5))
    tr, te = s.train_labels, s.test_labels
    assert not np.any((tr > 0) & (te > 0))
    for k in range(1, 7):
        assert (tr == k).sum() == 5 and (te == k).sum() > 0, (k, rows, cols)
    labelled = ((tr > 0) | (te > 0)).mean()
    assert 0.15 < labelled < 0.85  # objects on an unlabelled background


def test_default_scene_is_fast():
    make_synthetic_scene(SyntheticSpec(seed=9, rows=16, cols=16))  # imports out of the timing
    t = time.perf_counter()
    s = make_synthetic_scene(SyntheticSpec())
    assert time.perf_counter() - t < 1.5
    assert s.shape == (96, 128) and s.bands() == {"hsi": 32, "lidar": 2}


@pytest.mark.parametrize("spec", [SyntheticSpec(seed=0, sar=True), SyntheticSpec(seed=3, rows=40, cols=48, bands=12, train_per_class=25, sar=True)])
def test_sar_is_the_third_modality_each_pair_needs(spec):
    """With ``sar`` every pair of modalities confuses one designed pair of classes that the
    third modality separates, and all three together separate every class."""
    s = make_synthetic_scene(spec)
    assert s.bands()["sar"] == 2 and s.num_classes == 7 and s.class_names[-1] == "ploughed soil"
    names = s.class_names
    cms = {tuple(m): nearest_centroid(s, list(m)) for m in (["hsi", "lidar", "sar"], ["hsi", "lidar"], ["hsi", "sar"], ["lidar", "sar"])}
    oa = {"+".join(k): accuracy(cm) for k, cm in cms.items()}
    assert oa["hsi+lidar+sar"] > 0.97 and oa["hsi+lidar+sar"] - max(v for k, v in oa.items() if k.count("+") == 1) > 0.04, oa
    assert confusion_rate(cms[("hsi", "lidar")], names, "bare soil", "ploughed soil") > 0.1
    assert confusion_rate(cms[("hsi", "sar")], names, "low grass", "tall trees") > 0.1
    assert confusion_rate(cms[("lidar", "sar")], names, "red roof", "grey roof") > 0.1
    for a, b in [("bare soil", "ploughed soil"), ("low grass", "tall trees"), ("red roof", "grey roof")]:
        assert confusion_rate(cms[("hsi", "lidar", "sar")], names, a, b) < 0.05, (a, b)


def test_sar_is_opt_in_and_leaves_the_default_scene_alone():
    plain = make_synthetic_scene(SyntheticSpec(seed=4, rows=32, cols=48, bands=10, train_per_class=5))
    assert set(plain.modalities) == {"hsi", "lidar"} and plain.num_classes == 6
    assert plain.class_names == CLASS_NAMES
