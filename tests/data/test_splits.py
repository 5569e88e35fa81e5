"""Per-class draws are reproducible from the seed, disjoint, and keep every labelled pixel."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feddiff.data.splits import apply_split, check_disjoint, merge_maps, per_class_split
from feddiff.errors import DataError


def random_labels(seed: int, shape=(40, 50), k=4) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k + 1, shape)


def test_same_seed_same_split_different_seed_different():
    lab = random_labels(0)
    a = per_class_split(lab, 3, per_class=5)
    b = per_class_split(lab, 3, per_class=5)
    c = per_class_split(lab, 4, per_class=5)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])
    assert not np.array_equal(a[0], c[0])


def test_count_per_class_disjoint_and_union_is_the_map():
    lab = random_labels(1)
    train, test = per_class_split(lab, 0, per_class=7)
    assert [(train == k).sum() for k in range(1, 5)] == [7] * 4
    assert not np.any((train > 0) & (test > 0))
    assert np.array_equal(merge_maps(train, test), lab)
    assert train.shape == lab.shape and train.dtype == lab.dtype


def test_fraction_per_class():
    lab = random_labels(2)
    train, _ = per_class_split(lab, 0, fraction=0.1)
    for k in range(1, 5):
        assert (train == k).sum() == max(1, round(0.1 * (lab == k).sum()))


def test_a_small_class_keeps_a_test_pixel():
    lab = np.zeros((5, 5), np.int64)
    lab[0, :3] = 1  # 3 pixels, fewer than asked
    lab[4, 4] = 2  # a single pixel cannot be split: it goes to training
    train, test = per_class_split(lab, 0, per_class=20)
    assert (train == 1).sum() == 2 and (test == 1).sum() == 1
    assert (train == 2).sum() == 1 and (test == 2).sum() == 0


def test_bad_arguments():
    lab = random_labels(0)
    with pytest.raises(ValueError):
        per_class_split(lab, 0)
    with pytest.raises(ValueError):
        per_class_split(lab, 0, per_class=3, fraction=0.5)
    with pytest.raises(ValueError):
        per_class_split(lab, 0, fraction=1.5)


def test_apply_split_modes():
    lab = random_labels(5)
    tr, te = per_class_split(lab, 9, per_class=4)
    kept = apply_split("given", tr, te)
    assert kept[0] is tr and kept[1] is te
    redrawn = apply_split("per_class_count", tr, te, seed=1, per_class=6)
    assert [(redrawn[0] == k).sum() for k in range(1, 5)] == [6] * 4
    assert np.array_equal(merge_maps(*redrawn), lab)
    assert np.array_equal(apply_split("per_class_count", lab, None, seed=1, per_class=6)[0], redrawn[0])
    with pytest.raises(ValueError):
        apply_split("given", lab, None)


def test_check_disjoint():
    tr = np.zeros((3, 3), int)
    te = np.zeros((3, 3), int)
    tr[1, 2] = te[1, 2] = 1
    with pytest.raises(DataError, match="row 1, col 2"):
        check_disjoint(tr, te, "x.yaml")
    check_disjoint(tr, np.zeros_like(te), "x.yaml")


@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31), n=st.integers(1, 30), shape=st.tuples(st.integers(1, 20), st.integers(1, 20)))
def test_split_properties(seed, n, shape):
    lab = np.random.default_rng(seed).integers(0, 4, shape)
    train, test = per_class_split(lab, seed, per_class=n)
    assert not np.any((train > 0) & (test > 0))
    assert np.array_equal(merge_maps(train, test), lab)
    for k in np.unique(lab[lab > 0]):
        size = (lab == k).sum()
        assert (train == k).sum() == (min(n, size - 1) if size > 1 else 1)


def test_validation_split_is_carved_from_training_pixels_only_and_reproducible():
    """The validation pixels are training pixels: never a test pixel, and the same on every run."""
    from feddiff.data.splits import validation_split

    full = random_labels(5, (60, 70), k=5)
    train, test = per_class_split(full, 1, per_class=30)
    fit, val = validation_split(train, 0.2, seed=7)
    assert not ((val > 0) & (test > 0)).any()
    assert not ((val > 0) & (fit > 0)).any()
    assert np.array_equal(np.where(val > 0, val, fit), train)
    for k in range(1, 6):
        assert (val == k).sum() == 6 and (fit == k).sum() == 24
    again = validation_split(train, 0.2, seed=7)
    assert np.array_equal(again[0], fit) and np.array_equal(again[1], val)
    other = validation_split(train, 0.2, seed=8)[1]
    assert not np.array_equal(other, val)


def test_validation_split_small_classes_keep_a_training_pixel():
    from feddiff.data.splits import validation_split

    train = np.zeros((10, 10), np.int64)
    train[0, :2] = 1  # two pixels: 0.9 of them rounds to 2, one must stay
    train[1, 0] = 2  # one pixel: nothing to spare
    train[2, :] = 3
    fit, val = validation_split(train, 0.9, seed=0)
    assert (fit == 1).sum() == 1 and (val == 1).sum() == 1
    assert (fit == 2).sum() == 1 and (val == 2).sum() == 0
    assert (fit == 3).sum() == 1 and (val == 3).sum() == 9
    assert validation_split(train, 0.0, seed=0)[1].max() == 0
    with pytest.raises(ValueError):
        validation_split(train, 1.0, seed=0)
