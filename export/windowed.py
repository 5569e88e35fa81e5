"""Scenes larger than memory: read strip by strip, classify, write the map as it is made.

Why strips with a halo and not tiles: a patch of size P around a pixel reaches P//2 rows above
and below it, so a strip of rows needs only those extra rows (the halo) from its neighbours,
and the padding the in-memory path applies to the whole scene (reflect, or edge for a scene
not larger than the padding) is reproduced exactly by mapping each halo row to the source row
it mirrors. Full-width strips keep every read one contiguous window of a GeoTIFF or a memory
map, and strips are sized by pixels, not rows. The map goes to a tiled, deflate-compressed
GeoTIFF strip by strip under a bounded GDAL block cache, so peak memory is a few strips plus one
row of the input's decoded blocks (for a tiled input, tile height x scene width): it does not
grow with the length of a scene, only with its width.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator, Optional

import numpy as np

from feddiff.data.normalise import BandStats
from feddiff.data.patches import extract_patches, pad_amounts, sliding_batches
from feddiff.data.readers import ArrayWindows, open_windows
from feddiff.data.scene import GeoRef
from feddiff.errors import DataError, FedDiffError

from export.map_output import GDAL_CACHE_MB, TILE, Confusion, MapWriter
from export.pipeline import pipelined

STRIP_PIXELS = 1 << 16  # default strip size: Trento in two strips, a flight line in thousands


@dataclass
class WindowedScene:
    """Strip readers of one scene: the model's modalities and, when there are any, test labels."""

    modalities: dict
    test_labels: Optional[object]
    georef: Optional[GeoRef]
    shape: tuple[int, int]
    readers: list = field(default_factory=list)

    def close(self) -> None:
        for r in self.readers:
            r.close()


def _check_grid(where: str, readers: dict) -> tuple[int, int]:
    """Every raster on one grid: a strip of one modality must cover the same ground as the others."""
    first, ref = next(iter(readers.items()))
    h, w = ref.shape[:2]
    for name, r in readers.items():
        if r.shape[:2] != (h, w):
            raise DataError(f"{where}: {name} ({r.path}) is {r.shape[0]} x {r.shape[1]} pixels but {first} is {h} x {w}")
    return h, w


def _georef(where: str, readers: dict) -> Optional[GeoRef]:
    found: Optional[tuple[str, GeoRef]] = None
    for name, r in readers.items():
        if r.georef is None:
            continue
        if found is None:
            found = (name, r.georef)
        elif not np.allclose(found[1].transform, r.georef.transform):
            raise DataError(f"{where}: modality {name} has geotransform {r.georef.transform} but {found[0]} has {found[1].transform}: rasters must be co-registered")
    return found[1] if found else None


def open_scene(config: str, modalities: list[str]) -> WindowedScene:
    """Strip readers for ``modalities`` of the scene of ``config``. File scenes are opened by
    window or memory map; the synthetic and sample-table scenes are small and built in memory.
    Test labels are read by window when the split is given as files; a drawn split needs the
    whole label map to draw from."""
    from feddiff.config import load_config
    from feddiff.data.loader import load_labels, load_scene

    cfg = load_config(config)
    sc = cfg.scene
    readers: dict = {}
    test = None
    try:
        if sc.modalities:
            missing = [m for m in modalities if m not in sc.modalities]
            if missing:
                raise DataError(f"{config}: no modality {', '.join(missing)} in the scene (have: {', '.join(sc.modalities)})")
            for m in modalities:
                readers[m] = open_windows(cfg.resolve(sc.modalities[m].path), sc.modalities[m].key)
            if sc.split.mode == "given" and sc.test_labels is not None:
                test = open_windows(cfg.resolve(sc.test_labels.path), sc.test_labels.key)
            else:
                test = ArrayWindows(load_labels(cfg)[1], "test labels")
        else:
            scene = load_scene(cfg, modalities)
            readers = {m: ArrayWindows(a, f"{config}: {m}") for m, a in scene.modalities.items()}
            test = ArrayWindows(scene.test_labels, "test labels") if scene.test_labels is not None else None
        grid = dict(readers) | ({"test_labels": test} if test is not None else {})
        shape = _check_grid(str(config), grid)
        if test is not None and test.shape[2] != 1:
            raise DataError(f"{test.path}: test labels must be a 2-D label map, got {test.shape[2]} channels")
        georef = _georef(str(config), readers)
    except Exception:
        for r in list(readers.values()) + ([test] if test is not None else []):
            r.close()
        raise
    return WindowedScene(readers, test, georef, shape, list(readers.values()) + ([test] if test is not None else []))


def check_bands(bands: dict[str, int], scene: WindowedScene, where: str) -> None:
    """One line naming the modality, expected and actual band counts."""
    for m, want in bands.items():
        got = scene.modalities[m].shape[2]
        if got != want:
            raise FedDiffError(f"{where}: modality {m}: expected {want} bands, got {got}")


def halo_rows(r0: int, r1: int, h: int, w: int, patch_size: int) -> np.ndarray:
    """Source row of every padded row that the patches of rows ``r0:r1`` read, exactly as
    ``pad_raster`` pads the whole scene (reflect without repeating the edge; edge for a tiny
    scene)."""
    before, after = pad_amounts(patch_size)
    j = np.arange(r0 - before, r1 + after)
    if min(h, w) <= max(before, after):
        return np.clip(j, 0, h - 1)
    j = np.abs(j)
    return np.where(j > h - 1, 2 * (h - 1) - j, j)


def padded_strip(reader, stats: BandStats, r0: int, r1: int, shape: tuple[int, int], patch_size: int) -> np.ndarray:
    """Normalised, padded rows ``r0:r1`` of one modality with their halo: what
    ``padded_sources`` holds for those rows, read from the source in one window."""
    h, w = shape
    idx = halo_rows(r0, r1, h, w, patch_size)
    lo, hi = int(idx.min()), int(idx.max()) + 1
    block = stats.apply(reader.read(lo, hi))[idx - lo]
    before, after = pad_amounts(patch_size)
    mode = "edge" if min(h, w) <= max(before, after) else "reflect"
    return np.pad(block, ((0, 0), (before, after), (0, 0)), mode=mode)


def strip_rows(width: int, strip_pixels: int) -> int:
    """Rows per strip: about ``strip_pixels`` pixels, whole output tiles when a strip is taller
    than a tile (a finished tile row leaves GDAL's cache for the file at once)."""
    rows = max(1, strip_pixels // max(width, 1))
    return rows - rows % TILE if rows >= TILE else rows


@dataclass
class Strip:
    r0: int
    r1: int
    padded: dict
    pred: np.ndarray
    remaining: int


def strip_jobs(scene: WindowedScene, stats: dict[str, BandStats], patch_size: int, batch: int, strip_pixels: int) -> Iterator[tuple[Strip, np.ndarray, np.ndarray]]:
    """(strip, rows, cols) batches, strip after strip; a strip is read and padded only when the
    scheduler asks for its first batch, so at most the strips in flight are in memory."""
    h, w = scene.shape
    step = strip_rows(w, strip_pixels)
    for r0 in range(0, h, step):
        r1 = min(h, r0 + step)
        padded = {m: padded_strip(scene.modalities[m], stats[m], r0, r1, scene.shape, patch_size) for m in stats}
        n = (r1 - r0) * w
        strip = Strip(r0, r1, padded, np.empty(n, dtype=np.int64), -(-n // batch))
        for rows, cols in sliding_batches((r1 - r0, w), batch):
            yield strip, rows, cols


def classify_to_geotiff(
    run: Callable[[dict[str, np.ndarray]], np.ndarray],
    scene: WindowedScene,
    stats: dict[str, BandStats],
    patch_size: int,
    class_names: list[str],
    path: Path,
    batch: int = 512,
    workers: int = 1,
    strip_pixels: int = STRIP_PIXELS,
    on_batch: Callable[[int], None] = lambda n: None,
) -> Optional[dict]:
    """Classify every pixel of ``scene`` into the GeoTIFF ``path``; returns the test metrics
    (None without labelled test pixels). Batches of consecutive strips overlap in the worker
    pool, so strips cost no idle cores."""
    import rasterio

    w = scene.shape[1]
    conf = Confusion(len(class_names), scene.test_labels.path if scene.test_labels is not None else "")

    def one(job: tuple[Strip, np.ndarray, np.ndarray]) -> int:
        strip, rows, cols = job
        feeds = {m: extract_patches(p, rows, cols, patch_size) for m, p in strip.padded.items()}
        strip.pred[rows * w + cols] = run(feeds).argmax(1)
        return int(rows.shape[0])

    # the cache holds one row of decoded input blocks besides the output's partial tiles
    cache_mb = GDAL_CACHE_MB + -(-sum(r.block_row_bytes for r in scene.readers) * 5 // 4 // (1 << 20))
    with rasterio.Env(GDAL_CACHEMAX=cache_mb):
        writer = MapWriter(path, scene.shape, scene.georef, class_names)
        try:
            def done(job: tuple[Strip, np.ndarray, np.ndarray], n: int) -> None:
                strip = job[0]
                on_batch(n)
                strip.remaining -= 1
                if strip.remaining:
                    return
                ids = strip.pred.reshape(strip.r1 - strip.r0, w)
                writer.write(strip.r0, ids)
                if scene.test_labels is not None:
                    conf.add(scene.test_labels.read(strip.r0, strip.r1), ids)
                strip.padded, strip.pred = {}, strip.pred[:0]

            pipelined(one, strip_jobs(scene, stats, patch_size, batch, strip_pixels), workers, done)
        finally:
            writer.close()
    return conf.metrics()


