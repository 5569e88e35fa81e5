"""From a scene to model-ready patch sources: normalise on training pixels, pad, index.

A ``PatchSource`` holds one modality's normalised, padded raster and cuts patches for a batch of
pixel indices on demand, so no N x P x P x B array of the scene ever exists. A station builds
one for its own modality only; the centralised trainer builds one per modality.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from feddiff.data.normalise import BandStats
from feddiff.data.patches import extract_patches, labelled_pixels, pad_raster
from feddiff.data.scene import Scene


@dataclass
class PixelSet:
    rows: np.ndarray
    cols: np.ndarray
    labels: np.ndarray  # 0-based class ids

    def __len__(self) -> int:
        return int(self.rows.shape[0])


class PatchSource:
    def __init__(self, raster: np.ndarray, stats: BandStats, patch_size: int) -> None:
        self.stats = stats
        self.patch_size = patch_size
        self.shape = raster.shape[:2]
        self.bands = raster.shape[2]
        self.padded = pad_raster(stats.apply(raster).astype(np.float32), patch_size)

    def patches(self, rows: np.ndarray, cols: np.ndarray, dihedral: np.ndarray | None = None) -> torch.Tensor:
        """(N, C, P, P) float tensor; ``dihedral`` (N,) in 0..7 rotates/flips each patch."""
        x = torch.from_numpy(extract_patches(self.padded, rows, cols, self.patch_size))
        if dihedral is not None:
            x = apply_dihedral(x, torch.from_numpy(dihedral))
        return x


def apply_dihedral(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Rotate by 90 * (k % 4) degrees and flip when k >= 4; the same k for every modality of a
    sample keeps co-registration."""
    out = x.clone()
    for code in range(8):
        sel = k == code
        if not bool(sel.any()):
            continue
        y = torch.rot90(x[sel], code % 4, dims=(2, 3))
        if code >= 4:
            y = torch.flip(y, dims=(3,))
        out[sel] = y
    return out


def fit_stats(scene: Scene, name: str) -> BandStats:
    """Band statistics from training pixels only (all pixels when this party holds no labels)."""
    raster = scene.modalities[name]
    mask = scene.train_labels > 0 if scene.train_labels is not None else np.ones(raster.shape[:2], bool)
    return BandStats.fit(raster, mask)


def pixel_sets(scene: Scene) -> tuple[PixelSet, PixelSet]:
    r, c, y = labelled_pixels(scene.train_labels)
    tr, tc, ty = labelled_pixels(scene.test_labels)
    return PixelSet(r, c, y), PixelSet(tr, tc, ty)


def sources(scene: Scene, modalities: list[str], patch_size: int, stats: dict[str, BandStats] | None = None) -> dict[str, PatchSource]:
    stats = stats or {m: fit_stats(scene, m) for m in modalities}
    return {m: PatchSource(scene.modalities[m], stats[m], patch_size) for m in modalities}
