"""Patches cut on the fly from the padded raster; sliding batches over a whole scene.

Only one batch of patches exists at a time: an N x P x P x B copy of a scene would not fit a
base station's memory for real cubes.
"""

from __future__ import annotations

from typing import Iterator, Optional

import numpy as np


def pad_raster(raster: np.ndarray, patch_size: int) -> np.ndarray:
    """Pad so the patch of size P around (r, c) covers rows r - P//2 .. r - P//2 + P - 1."""
    before = patch_size // 2
    after = patch_size - 1 - before
    pad = ((before, after), (before, after), (0, 0))
    small = min(raster.shape[0], raster.shape[1]) <= max(before, after)
    return np.pad(raster, pad, mode="edge" if small else "reflect")


def extract_patches(padded: np.ndarray, rows: np.ndarray, cols: np.ndarray, patch_size: int) -> np.ndarray:
    """(N, C, P, P) float32 for one batch of pixel indices (original-grid coordinates)."""
    off = np.arange(patch_size)
    r = rows[:, None, None] + off[None, :, None]
    c = cols[:, None, None] + off[None, None, :]
    out = padded[r, c]  # N, P, P, C
    return np.ascontiguousarray(out.transpose(0, 3, 1, 2), dtype=np.float32)


def sliding_batches(shape: tuple[int, int], batch: int, mask: Optional[np.ndarray] = None) -> Iterator[tuple[np.ndarray, np.ndarray]]:
    """(rows, cols) batches in raster order over the whole scene, or only where ``mask``."""
    h, w = shape
    if mask is None:
        flat = np.arange(h * w)
    else:
        flat = np.flatnonzero(mask.reshape(-1))
    for i in range(0, flat.shape[0], batch):
        sel = flat[i : i + batch]
        yield sel // w, sel % w


def labelled_pixels(label_map: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(rows, cols, labels0) of every labelled pixel; labels0 are 0-based class ids."""
    rows, cols = np.nonzero(label_map > 0)
    return rows.astype(np.int64), cols.astype(np.int64), (label_map[rows, cols] - 1).astype(np.int64)
