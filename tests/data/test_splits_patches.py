"""Splits are reproducible; patches equal naive slicing; sliding batches cover every pixel once."""

import numpy as np

from feddiff.config import SyntheticSpec
from feddiff.data.normalise import BandStats
from feddiff.data.patches import extract_patches, pad_raster, sliding_batches
from feddiff.data.splits import per_class_split
from feddiff.data.synthetic import make_synthetic_scene


def test_per_class_split_is_seeded():
    lab = np.random.default_rng(0).integers(0, 4, (40, 40))
    a = per_class_split(lab, 3, per_class=5)
    b = per_class_split(lab, 3, per_class=5)
    c = per_class_split(lab, 4, per_class=5)
    assert np.array_equal(a[0], b[0]) and not np.array_equal(a[0], c[0])
    assert all((a[0] == k).sum() == 5 for k in (1, 2, 3))
    assert not np.any((a[0] > 0) & (a[1] > 0))
    f = per_class_split(lab, 0, fraction=0.1)[0]
    assert abs((f == 1).sum() - round(0.1 * (lab == 1).sum())) <= 1


def test_patches_equal_naive_slicing():
    r = np.random.default_rng(0).random((9, 11, 3)).astype(np.float32)
    P = 5
    pad = pad_raster(r, P)
    rows, cols = np.array([0, 4, 8]), np.array([0, 5, 10])
    got = extract_patches(pad, rows, cols, P)
    for i, (y, x) in enumerate(zip(rows, cols)):
        ref = np.pad(r, ((2, 2), (2, 2), (0, 0)), mode="reflect")[y : y + P, x : x + P].transpose(2, 0, 1)
        assert np.array_equal(got[i], ref)


def test_sliding_batches_cover_scene_once():
    seen = np.zeros((7, 13), int)
    for rows, cols in sliding_batches((7, 13), 10):
        seen[rows, cols] += 1
    assert (seen == 1).all()


def test_normalisation_uses_training_pixels_only():
    r = np.zeros((4, 4, 1), np.float32)
    r[:2] = 10.0
    mask = np.zeros((4, 4), bool)
    mask[2:] = True
    s = BandStats.fit(r, mask)
    assert s.mean[0] == 0.0 and BandStats.from_dict(s.to_dict()).mean[0] == 0.0


def test_synthetic_scene_needs_both_modalities():
    """Nearest-centroid per pixel: each modality alone confuses classes, both together do not."""
    s = make_synthetic_scene(SyntheticSpec(seed=1))
    tr, te = s.train_labels, s.test_labels

    def acc(mods):
        feats = np.concatenate([BandStats.fit(s.modalities[m], tr > 0).apply(s.modalities[m]) for m in mods], axis=2)
        cents = np.stack([feats[tr == k].mean(0) for k in range(1, 7)])
        x, y = feats[te > 0], te[te > 0]
        pred = np.argmin(((x[:, None] - cents[None]) ** 2).sum(-1), 1) + 1
        return (pred == y).mean()

    both, hsi, lidar = acc(["hsi", "lidar"]), acc(["hsi"]), acc(["lidar"])
    assert both > 0.95 and both - max(hsi, lidar) > 0.1, (both, hsi, lidar)
