"""Patches cut on the fly from the padded raster; sliding batches over a whole scene.

Only one batch of patches exists at a time: an N x P x P x B copy of a scene would not fit a
base station's memory for real cubes. Convention: the patch of size P around pixel (r, c)
covers rows r - P//2 .. r - P//2 + P - 1 (same for columns) of the original grid, so an even P
puts the pixel just below and right of the patch centre.
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np


def pad_amounts(patch_size: int) -> tuple[int, int]:
    """(before, after) padding on each spatial axis for patches of size P."""
    before = patch_size // 2
    return before, patch_size - 1 - before


def pad_raster(raster: np.ndarray, patch_size: int) -> np.ndarray:
    """Pad (H, W, C) so that padded[r:r+P, c:c+P] is the patch around original pixel (r, c).

    Reflect keeps border patches looking like land cover rather than a smeared edge; a raster
    not larger than the padding cannot be reflected, so it is edge-padded instead.
    """
    if raster.ndim != 3:
        raise ValueError(f"pad_raster: expected rows x cols x channels, got shape {raster.shape}")
    if patch_size < 1:
        raise ValueError(f"pad_raster: patch size must be >= 1, got {patch_size}")
    before, after = pad_amounts(patch_size)
    pad = ((before, after), (before, after), (0, 0))
    tiny = min(raster.shape[0], raster.shape[1]) <= max(before, after)
    return np.pad(raster, pad, mode="edge" if tiny else "reflect")


def extract_patches(padded: np.ndarray, rows: np.ndarray, cols: np.ndarray, patch_size: int) -> np.ndarray:
    """(N, C, P, P) float32 patches for one batch of original-grid pixel coordinates.

    Bounds are checked because an index past the scene would silently read padding (and a
    negative one would wrap round), giving a plausible but wrong patch.
    """
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    cols = np.asarray(cols, dtype=np.int64).reshape(-1)
    if rows.shape != cols.shape:
        raise ValueError(f"extract_patches: {rows.shape[0]} rows but {cols.shape[0]} cols")
    h, w = padded.shape[0] - patch_size + 1, padded.shape[1] - patch_size + 1
    if rows.size and (rows.min() < 0 or rows.max() >= h or cols.min() < 0 or cols.max() >= w):
        raise IndexError(f"extract_patches: pixel indices outside the {h} x {w} scene")
    off = np.arange(patch_size)
    r = rows[:, None, None] + off[None, :, None]
    c = cols[:, None, None] + off[None, None, :]
    out = padded[r, c]  # N, P, P, C
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2), dtype=np.float32)


def sliding_batches(
    shape: tuple[int, int], batch: int, mask: Optional[np.ndarray] = None
) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rows, cols) batches in raster order over the whole scene, or only where ``mask`` is true.

    Indices are generated per batch so a full-scene pass never holds more than one batch.
    """
    if batch < 1:
        raise ValueError(f"sliding_batches: batch must be >= 1, got {batch}")
    h, w = int(shape[0]), int(shape[1])
    if mask is not None:
        if mask.shape != (h, w):
            raise ValueError(f"sliding_batches: mask is {mask.shape}, scene is {(h, w)}")
        flat = np.flatnonzero(mask.reshape(-1))
        for i in range(0, flat.shape[0], batch):
            sel = flat[i : i + batch]
            yield sel // w, sel % w
        return
    for start in range(0, h * w, batch):
        sel = np.arange(start, min(start + batch, h * w), dtype=np.int64)
        yield sel // w, sel % w


def labelled_pixels(label_map: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, labels0) of every labelled pixel in raster order; labels0 = label - 1 are the
    0-based class ids models and metrics use."""
    rows, cols = np.nonzero(label_map > 0)
    return rows.astype(np.int64), cols.astype(np.int64), (label_map[rows, cols] - 1).astype(np.int64)
