"""Patches equal an independent per-pixel reference; sliding batches cover every pixel once."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feddiff.data.patches import extract_patches, labelled_pixels, pad_raster, sliding_batches


def reference_patch(raster: np.ndarray, r: int, c: int, p: int, mode: str) -> np.ndarray:
    """The convention written out pixel by pixel: rows r - P//2 .. r - P//2 + P - 1, mirrored
    (without repeating the border) or clamped outside the grid."""
    h, w, ch = raster.shape

    def src(i: int, n: int) -> int:
        if mode == "edge":
            return min(max(i, 0), n - 1)
        if i < 0:
            return -i
        if i >= n:
            return 2 * (n - 1) - i
        return i

    out = np.empty((ch, p, p), np.float32)
    for a in range(p):
        for b in range(p):
            out[:, a, b] = raster[src(r - p // 2 + a, h), src(c - p // 2 + b, w)]
    return out


@pytest.mark.parametrize("p", [1, 2, 3, 4, 5, 8])
def test_patches_equal_reference_reflect(p):
    raster = np.random.default_rng(p).random((9, 11, 3)).astype(np.float32)
    padded = pad_raster(raster, p)
    assert padded.shape == (9 + p - 1, 11 + p - 1, 3)
    rows, cols = np.meshgrid(np.arange(9), np.arange(11), indexing="ij")
    got = extract_patches(padded, rows.ravel(), cols.ravel(), p)
    assert got.shape == (99, 3, p, p) and got.dtype == np.float32 and got.flags.c_contiguous
    for i, (r, c) in enumerate(zip(rows.ravel(), cols.ravel())):
        assert np.array_equal(got[i], reference_patch(raster, r, c, p, "reflect")), (r, c)


def test_tiny_raster_falls_back_to_edge_padding():
    raster = np.random.default_rng(0).random((3, 20, 2)).astype(np.float32)  # 3 rows < padding 4
    p = 9
    got = extract_patches(pad_raster(raster, p), np.array([0, 2, 1]), np.array([0, 19, 10]), p)
    for i, (r, c) in enumerate([(0, 0), (2, 19), (1, 10)]):
        assert np.array_equal(got[i], reference_patch(raster, r, c, p, "edge"))


def test_patch_centre_is_the_pixel():
    raster = np.arange(6 * 7, dtype=np.float32).reshape(6, 7, 1)
    for p in (3, 4, 7):
        got = extract_patches(pad_raster(raster, p), np.array([2]), np.array([5]), p)
        assert got[0, 0, p // 2, p // 2] == raster[2, 5, 0]


def test_indices_outside_the_scene_are_refused():
    padded = pad_raster(np.zeros((5, 6, 1), np.float32), 3)
    for rows, cols in [([5], [0]), ([0], [6]), ([-1], [0])]:
        with pytest.raises(IndexError):
            extract_patches(padded, np.array(rows), np.array(cols), 3)


@settings(max_examples=30, deadline=None)
@given(h=st.integers(1, 17), w=st.integers(1, 17), batch=st.integers(1, 50), masked=st.booleans(), seed=st.integers(0, 1000))
def test_sliding_batches_cover_every_pixel_exactly_once_in_raster_order(h, w, batch, masked, seed):
    mask = np.random.default_rng(seed).random((h, w)) < 0.4 if masked else None
    seen = np.zeros((h, w), int)
    order = []
    for rows, cols in sliding_batches((h, w), batch, mask):
        assert 0 < rows.shape[0] <= batch and rows.shape == cols.shape
        seen[rows, cols] += 1
        order.extend((rows * w + cols).tolist())
    expected = np.ones((h, w), int) if mask is None else mask.astype(int)
    assert np.array_equal(seen, expected)
    assert order == sorted(order)


def test_sliding_batches_arguments():
    with pytest.raises(ValueError):
        next(sliding_batches((3, 3), 0))
    with pytest.raises(ValueError):
        next(sliding_batches((3, 3), 4, np.ones((3, 4), bool)))


def test_labelled_pixels_are_zero_based():
    lab = np.array([[0, 3, 0], [1, 0, 2]])
    rows, cols, y = labelled_pixels(lab)
    assert rows.tolist() == [0, 1, 1] and cols.tolist() == [1, 0, 2] and y.tolist() == [2, 0, 1]
    assert y.dtype == np.int64
