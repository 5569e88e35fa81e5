"""Per-band normalisation fitted on training pixels only, stored with the model.

Fitting on test pixels would leak them into training; storing the statistics with the model
(as plain lists of floats, for checkpoints and ONNX metadata) lets a base station normalise a
new scene exactly as the model saw its training data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feddiff.errors import DataError

STD_FLOOR = 1e-6


def _floor_std(mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """A band that is constant over the training pixels carries nothing to scale: divide it by 1
    (centre only) instead of by a tiny number that would blow other pixels up to huge values."""
    tiny = STD_FLOOR * np.maximum(1.0, np.abs(mean))
    return np.where(std < tiny, 1.0, std)


@dataclass
class BandStats:
    mean: np.ndarray  # (C,) float64
    std: np.ndarray  # (C,) float64, floored

    @classmethod
    def fit(cls, raster: np.ndarray, mask: np.ndarray) -> "BandStats":
        """Statistics over the pixels where ``mask`` is true (the training pixels).

        An all-false mask falls back to every pixel: a station that holds no labels normalises
        with what it has, which reveals nothing about the labels.
        """
        if raster.ndim != 3 or mask.shape != raster.shape[:2]:
            raise DataError(f"band statistics: mask {mask.shape} does not match raster {raster.shape}")
        pix = raster[mask]
        if pix.shape[0] == 0:
            pix = raster.reshape(-1, raster.shape[-1])
        # float64 accumulation: float32 sums over millions of pixels lose digits.
        mean = pix.mean(axis=0, dtype=np.float64)
        std = pix.std(axis=0, dtype=np.float64)
        return cls(mean, _floor_std(mean, std))

    @property
    def channels(self) -> int:
        return int(self.mean.shape[0])

    def apply(self, raster: np.ndarray) -> np.ndarray:
        """Normalised float32 copy; refuses a raster with another band count, since a cube from
        another sensor would otherwise be silently misread."""
        if raster.shape[-1] != self.channels:
            raise DataError(f"band statistics are for {self.channels} channels but the raster has {raster.shape[-1]}")
        # float32 arithmetic: a float64 temporary of a whole cube doubles peak memory.
        return (raster.astype(np.float32, copy=False) - self.mean.astype(np.float32)) / self.std.astype(np.float32)

    def to_dict(self) -> dict:
        return {"mean": [float(v) for v in self.mean], "std": [float(v) for v in self.std]}

    @classmethod
    def from_dict(cls, d: dict) -> "BandStats":
        try:
            mean = np.asarray(d["mean"], dtype=np.float64).reshape(-1)
            std = np.asarray(d["std"], dtype=np.float64).reshape(-1)
        except (KeyError, TypeError, ValueError) as exc:
            raise DataError(f"band statistics: malformed ({type(exc).__name__}: {exc})") from None
        if mean.shape != std.shape or not (np.all(np.isfinite(mean)) and np.all(np.isfinite(std)) and np.all(std > 0)):
            raise DataError("band statistics: mean and std must be equal-length, finite, std > 0")
        return cls(mean, std)
