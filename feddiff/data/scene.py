"""The scene: co-registered modality rasters with train and test label maps.

A scene is plain data (torchgeo-style): every consumer reads the same fields and nothing here
knows about models or roles. Labels follow the benchmark convention: 0 = unlabelled, classes 1..K.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from feddiff.errors import DataError


@dataclass
class GeoRef:
    """Georeference of the input rasters, kept so class maps can be written back in place."""

    crs_wkt: Optional[str]
    transform: tuple[float, float, float, float, float, float]  # affine a, b, c, d, e, f (rasterio order)


@dataclass
class Scene:
    name: str
    modalities: dict[str, np.ndarray]  # name -> (rows, cols, channels) float32
    train_labels: Optional[np.ndarray]  # (rows, cols) int64, 0 = unlabelled; None when not the label holder
    test_labels: Optional[np.ndarray]
    class_names: list[str]
    georef: Optional[GeoRef] = None
    meta: dict = field(default_factory=dict)

    @property
    def shape(self) -> tuple[int, int]:
        first = next(iter(self.modalities.values()))
        return int(first.shape[0]), int(first.shape[1])

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def bands(self) -> dict[str, int]:
        return {k: int(v.shape[2]) for k, v in self.modalities.items()}

    def validate(self) -> "Scene":
        """Say exactly what is wrong: shapes that disagree, NaN/inf, labels out of range."""
        if not self.modalities:
            raise DataError(f"scene {self.name}: no modalities")
        ref_name, ref = next(iter(self.modalities.items()))
        for name, arr in self.modalities.items():
            if arr.ndim != 3:
                raise DataError(
                    f"scene {self.name}: modality {name} must be rows x cols x channels, got shape {arr.shape}"
                )
            if arr.shape[:2] != ref.shape[:2]:
                raise DataError(
                    f"scene {self.name}: modality {name} is {arr.shape[0]} x {arr.shape[1]} but "
                    f"{ref_name} is {ref.shape[0]} x {ref.shape[1]}: rasters must be co-registered"
                )
            if not np.issubdtype(arr.dtype, np.floating):
                raise DataError(f"scene {self.name}: modality {name} has dtype {arr.dtype}, expected float")
            bad = ~np.isfinite(arr)
            if bad.any():
                r, c, b = np.argwhere(bad)[0]
                raise DataError(
                    f"scene {self.name}: modality {name} holds {int(bad.sum())} NaN/inf values "
                    f"(first at row {r}, col {c}, band {b})"
                )
        K = self.num_classes
        for which in ("train_labels", "test_labels"):
            lab = getattr(self, which)
            if lab is None:
                continue
            if lab.shape != ref.shape[:2]:
                raise DataError(
                    f"scene {self.name}: {which} is {lab.shape[0]} x {lab.shape[1]} but the rasters are "
                    f"{ref.shape[0]} x {ref.shape[1]}"
                )
            if lab.min() < 0 or (K and lab.max() > K):
                raise DataError(
                    f"scene {self.name}: {which} holds labels {int(lab.min())}..{int(lab.max())}, "
                    f"expected 0 (unlabelled) or 1..{K}"
                )
        return self
