"""Whole-scene classification with an exported ONNX model: onnxruntime + numpy only.

This module must never import torch (a base station installs only ``feddiff[inference]``);
``tests/export`` checks that. Everything the model needs besides its weights -- band counts,
modality order, patch size, normalisation statistics, class names -- is read from the ONNX
metadata, so a model file and a scene config are all a station needs.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

import numpy as np

from feddiff.data.normalise import BandStats
from feddiff.data.patches import extract_patches, labelled_pixels, pad_raster, sliding_batches
from feddiff.errors import FedDiffError

from export.pipeline import pipelined

from export.session import CPU, CUDA, META_PREFIX, ModelMeta, Schedule, open_scheduled, open_session, plan_schedule, requested_providers, session_meta, usable_cores  # noqa: F401 - the public names of ``feddiff infer``


def check_scene(meta: ModelMeta, rasters: dict[str, np.ndarray], where: str) -> None:
    """One line naming the modality, expected and actual: the usual mistake is the wrong cube
    or a config that lists modalities the model was not trained on."""
    missing = [m for m in meta.modalities if m not in rasters]
    if missing:
        m = missing[0]
        raise FedDiffError(f"{where}: modality {m}: expected {meta.bands[m]} bands, scene has no such modality (scene: {', '.join(rasters) or 'none'})")
    for m in meta.modalities:
        got = int(rasters[m].shape[2])
        if got != meta.bands[m]:
            raise FedDiffError(f"{where}: modality {m}: expected {meta.bands[m]} bands, got {got}")


def padded_sources(meta: ModelMeta, rasters: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Normalised, padded rasters (one copy per modality, float32); patches are cut from them
    per batch so memory stays O(scene + batch), never O(pixels x P x P x bands)."""
    return {m: pad_raster(meta.stats[m].apply(rasters[m]).astype(np.float32), meta.patch_size) for m in meta.modalities}


def scene_patches(config: str, stats: dict[str, BandStats], modalities: list[str], patch_size: int, which: str, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Up to ``n`` normalised patches of the train or test pixels of a scene: held-out patches
    for parity checks, training patches for int8 calibration."""
    from feddiff.config import load_config
    from feddiff.data.loader import load_scene

    scene = load_scene(load_config(config))
    labels = scene.train_labels if which == "train" else scene.test_labels
    if labels is None or not (labels > 0).any():
        raise FedDiffError(f"{config}: scene has no {which} pixels to draw patches from")
    rows, cols, _ = labelled_pixels(labels)
    pick = rng.choice(rows.shape[0], size=min(n, rows.shape[0]), replace=False)
    pick.sort()
    out = {}
    for m in modalities:
        if m not in scene.modalities:
            raise FedDiffError(f"{config}: modality {m}: scene has no such modality")
        padded = pad_raster(stats[m].apply(scene.modalities[m]).astype(np.float32), patch_size)
        out[m] = extract_patches(padded, rows[pick], cols[pick], patch_size)
    return out


def classify_pixels(
    run: Callable[[dict[str, np.ndarray]], np.ndarray],
    padded: dict[str, np.ndarray],
    patch_size: int,
    batches: Iterable[tuple[Union[slice, np.ndarray], np.ndarray, np.ndarray]],
    out: np.ndarray,
    workers: int = 1,
    on_batch: Callable[[int], None] = lambda n: None,
) -> np.ndarray:
    """For every ``(where, rows, cols)`` batch, writes ``run(patches).argmax(1)`` into
    ``out[where]``, ``workers`` batches at a time.

    Each worker cuts its own patches, so patch cutting overlaps inference; at most ``2 *
    workers`` batches are in flight, so memory stays O(scene + workers x batch). ``run`` must be
    safe to call from several threads at once (``InferenceSession.run`` is, and releases the
    GIL for the whole graph; so is a PyTorch module under ``no_grad``, entered per thread)."""

    def one(job: tuple[Union[slice, np.ndarray], np.ndarray, np.ndarray]) -> int:
        where, rows, cols = job
        feeds = {m: extract_patches(p, rows, cols, patch_size) for m, p in padded.items()}
        out[where] = run(feeds).argmax(1)
        return int(rows.shape[0])

    pipelined(one, batches, workers, lambda job, n: on_batch(n))
    return out


def classify_scene(sess, meta: ModelMeta, rasters: dict[str, np.ndarray], batch: int = 512, progress: bool = True, workers: int = 1) -> np.ndarray:
    """(rows, cols) 0-based class ids for every pixel of the scene."""
    from tqdm import tqdm

    shape = next(iter(rasters.values())).shape[:2]
    padded = padded_sources(meta, rasters)
    pred = np.empty(shape[0] * shape[1], dtype=np.int64)
    batches = ((rows * shape[1] + cols, rows, cols) for rows, cols in sliding_batches(shape, batch))
    with tqdm(total=pred.size, desc="infer", unit="px", disable=not progress, leave=False) as bar:
        classify_pixels(lambda feeds: sess.run(["logits"], feeds)[0], padded, meta.patch_size, batches, pred, workers, bar.update)
    return pred.reshape(shape)


@dataclass
class InferResult:
    provider: str
    class_map: Path
    png: Path
    metrics: Optional[dict]
    seconds: float
    pixels: int
    schedule: Schedule

    @property
    def pixels_per_s(self) -> float:
        return self.pixels / max(self.seconds, 1e-9)


def run_inference(
    model: Path,
    config: str,
    out: Path,
    batch: int = 512,
    provider: str = "auto",
    progress: bool = True,
    workers: int = 0,
    threads: int = 0,
    strip_pixels: int = 0,
) -> InferResult:
    """Classify the whole scene of ``config`` strip by strip (``export.windowed``: memory does
    not grow with the scene); write class_map.tif, classification_map.png and metrics.json
    (with test metrics when the scene has test labels) into ``out``."""
    from tqdm import tqdm

    from export.map_output import png_preview
    from export.windowed import STRIP_PIXELS, check_bands, classify_to_geotiff, open_scene

    if batch < 1:
        raise FedDiffError(f"--batch must be >= 1, got {batch}")
    if strip_pixels < 0:
        raise FedDiffError(f"--strip-pixels must be >= 0 (0: {STRIP_PIXELS}), got {strip_pixels}")
    sess, used, plan = open_scheduled(Path(model), provider, workers, threads)
    meta = session_meta(sess, str(model))
    if meta.graph != "whole":
        raise FedDiffError(f"{model}: a split ({meta.graph}) graph; infer needs the whole-model export")
    scene = open_scene(config, meta.modalities)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    try:
        check_bands(meta.bands, scene, str(config))
        pixels = scene.shape[0] * scene.shape[1]
        t0 = time.perf_counter()
        with tqdm(total=pixels, desc="infer", unit="px", disable=not progress, leave=False) as bar:
            metrics = classify_to_geotiff(lambda feeds: sess.run(["logits"], feeds)[0], scene, {m: meta.stats[m] for m in meta.modalities}, meta.patch_size,
                                          meta.class_names, out / "class_map.tif", batch, plan.workers, strip_pixels or STRIP_PIXELS, bar.update)
        seconds = time.perf_counter() - t0
    finally:
        scene.close()
    step = png_preview(out / "class_map.tif", meta.class_names, out / "classification_map.png")
    if metrics is not None:
        metrics["class_names"] = meta.class_names
    doc = {"provider": used, "model": str(model), "quantize": meta.quantize, "workers": plan.workers, "threads_per_worker": plan.threads, "rows": scene.shape[0], "cols": scene.shape[1],
           "pixels": pixels, "seconds": seconds, "pixels_per_s": pixels / max(seconds, 1e-9), "png_decimation": step}
    if metrics is not None:
        doc.update(metrics)
    (out / "metrics.json").write_text(json.dumps(doc, indent=2))
    return InferResult(used, out / "class_map.tif", out / "classification_map.png", metrics, seconds, pixels, plan)
