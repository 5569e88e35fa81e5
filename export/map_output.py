"""The outputs of a scene classified strip by strip: the GeoTIFF map written as strips finish,
the test confusion accumulated alongside, and a bounded PNG preview read back from the map.

Each exists so that no output needs the whole scene in memory at once.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Optional

import numpy as np

from feddiff.data.scene import GeoRef
from feddiff.errors import DataError, FedDiffError

TILE = 256  # GeoTIFF tile edge; strips taller than a tile are cut on tile rows
GDAL_CACHE_MB = 64  # partially written output tiles wait here (inputs add one row of their blocks)


class MapWriter:
    """The uint8 class map (0 = none, 1..K) as a tiled, deflate-compressed GeoTIFF with the
    palette of the PNG, written one strip at a time."""

    def __init__(self, path: Path, shape: tuple[int, int], georef: Optional[GeoRef], class_names: list[str]):
        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        from feddiff.maps import map_profile, palette

        k = len(class_names)
        if k > 255:
            raise FedDiffError(f"a uint8 class map holds at most 255 classes, got {k}")
        profile = map_profile(shape, georef, tile=TILE)
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            self.ds = rasterio.open(path, "w", **profile)
        self.ds.write_colormap(1, {i: (*c, 255) for i, c in enumerate(palette(k))})
        self.ds.update_tags(1, **{f"class_{i}": n for i, n in enumerate(class_names, start=1)})

    def write(self, r0: int, class_ids: np.ndarray) -> None:
        """``class_ids``: (rows, cols) 0-based ids of rows ``r0..``; stored as 1..K."""
        from rasterio.windows import Window

        self.ds.write((class_ids + 1).astype(np.uint8)[None], window=Window(0, r0, class_ids.shape[1], class_ids.shape[0]))

    def close(self) -> None:
        self.ds.close()


class Confusion:
    """Test-set confusion accumulated strip by strip, so metrics need no whole label map."""

    def __init__(self, num_classes: int, where: str):
        self.k, self.where = num_classes, where
        self.cm = np.zeros((num_classes, num_classes), dtype=np.int64)

    def add(self, labels: np.ndarray, class_ids: np.ndarray) -> None:
        from feddiff.metrics import confusion_matrix

        t = labels.reshape(class_ids.shape)
        if np.issubdtype(t.dtype, np.floating) and (not np.all(np.isfinite(t)) or np.any(t != np.round(t))):
            raise DataError(f"{self.where}: holds non-integer labels")
        t = t.astype(np.int64)
        if t.size and (t.min() < 0 or t.max() > self.k):
            raise DataError(f"{self.where}: holds label {int(t.min() if t.min() < 0 else t.max())}, expected 0 (unlabelled) or 1..{self.k}")
        keep = t > 0
        self.cm += confusion_matrix(t[keep] - 1, class_ids[keep], self.k)

    def metrics(self) -> Optional[dict]:
        """OA, AA, kappa, per class and confusion, or None where no pixel is labelled."""
        from feddiff.metrics import metrics_from_confusion

        return metrics_from_confusion(self.cm) if self.cm.sum() else None


def png_preview(tif: Path, class_names: list[str], png: Path, max_side: int = 2048) -> int:
    """The PNG map with its legend from the written GeoTIFF, decimated (nearest class) to at
    most ``max_side`` pixels a side so it stays small for any scene; returns the decimation."""
    import rasterio
    from rasterio.enums import Resampling

    from feddiff.maps import write_png_map

    with rasterio.open(tif) as ds:
        step = max(1, -(-max(ds.height, ds.width) // max_side))
        out_shape = (max(1, ds.height // step), max(1, ds.width // step))
        cm = ds.read(1, out_shape=out_shape, resampling=Resampling.nearest) if step > 1 else ds.read(1)
    write_png_map(cm, class_names, png)
    return step
