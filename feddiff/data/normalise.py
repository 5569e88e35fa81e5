"""Per-band normalisation fitted on training pixels only, stored with the model.

Fitting on test pixels would leak them into training; storing the statistics with the model
lets a base station normalise a new scene exactly as the model saw its training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

STD_FLOOR = 1e-6


@dataclass
class BandStats:
    mean: np.ndarray  # (C,) float64
    std: np.ndarray  # (C,) float64, floored

    @classmethod
    def fit(cls, raster: np.ndarray, mask: np.ndarray) -> "BandStats":
        pix = raster[mask].astype(np.float64)
        if pix.shape[0] == 0:
            pix = raster.reshape(-1, raster.shape[-1]).astype(np.float64)
        return cls(pix.mean(axis=0), np.maximum(pix.std(axis=0), STD_FLOOR))

    def apply(self, raster: np.ndarray) -> np.ndarray:
        return ((raster - self.mean) / self.std).astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, d: dict) -> "BandStats":
        return cls(np.asarray(d["mean"], dtype=np.float64), np.asarray(d["std"], dtype=np.float64))
