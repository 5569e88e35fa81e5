"""Whole-scene classification with an exported ONNX model: onnxruntime + numpy only.

This module must never import torch (a base station installs only ``feddiff[inference]``);
``tests/export`` checks that. Everything the model needs besides its weights -- band counts,
modality order, patch size, normalisation statistics, class names -- is read from the ONNX
metadata, so a model file and a scene config are all a station needs.
"""

from __future__ import annotations

import json
import logging
import os
import time
import warnings
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Optional, Union

import numpy as np

from feddiff.data.normalise import BandStats
from feddiff.data.patches import extract_patches, labelled_pixels, pad_raster, sliding_batches
from feddiff.errors import FedDiffError

log = logging.getLogger("feddiff.infer")

META_PREFIX = "feddiff."
CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"


@dataclass
class ModelMeta:
    modalities: list[str]
    bands: dict[str, int]
    class_names: list[str]
    patch_size: int
    stats: dict[str, BandStats]
    timesteps: list[int]
    version: str
    config_hash: str
    graph: str
    quantize: str

    @classmethod
    def from_props(cls, props: dict[str, str], where: str = "model") -> "ModelMeta":
        def get(key: str) -> str:
            if META_PREFIX + key not in props:
                raise FedDiffError(f"{where}: not a FedDiff ONNX model (metadata {META_PREFIX}{key} missing)")
            return props[META_PREFIX + key]

        return cls(
            modalities=json.loads(get("modalities")),
            bands={k: int(v) for k, v in json.loads(get("bands")).items()},
            class_names=json.loads(get("class_names")),
            patch_size=int(get("patch_size")),
            stats={m: BandStats.from_dict(d) for m, d in json.loads(get("stats")).items()},
            timesteps=json.loads(get("timesteps")),
            version=get("version"),
            config_hash=get("config_hash"),
            graph=props.get(META_PREFIX + "graph", "whole"),
            quantize=props.get(META_PREFIX + "quantize", "none"),
        )


def requested_providers(provider: str) -> list[str]:
    """What to ask onnxruntime for: CUDA first where the build has it and the user allows it."""
    import onnxruntime as ort

    return [CUDA, CPU] if provider in ("auto", "cuda") and CUDA in ort.get_available_providers() else [CPU]


def open_session(path: Path, provider: str = "auto", threads: int = 0):
    """(session, provider that actually runs). CUDA is only *requested* here; onnxruntime-gpu
    silently falls back to CPU when the CUDA libraries or a GPU are missing, so the truth is
    ``session.get_providers()`` after creation, never the request. ``threads``: intra-op
    threads of each ``run`` (0: onnxruntime's default, one per core)."""
    import onnxruntime as ort

    path = Path(path)
    if not path.is_file():
        raise FedDiffError(f"{path}: ONNX model not found")
    want = requested_providers(provider)
    if provider == "cuda" and CUDA not in want:
        log.warning("CUDA requested but this onnxruntime build has no CUDAExecutionProvider; using CPU")
    # A missing CUDA runtime makes onnxruntime print a multi-line library error before it falls
    # back; we report the provider that actually runs on one line instead.
    ort.set_default_logger_severity(4 if CUDA in want else 3)
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    if threads:
        opts.intra_op_num_threads = threads
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=want)
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
        raise FedDiffError(f"{path}: onnxruntime cannot load the model ({type(exc).__name__}: {str(exc).splitlines()[0]})") from None
    used = sess.get_providers()[0]
    if provider == "cuda" and used != CUDA:
        log.warning("CUDA requested but the session runs on %s", used)
    return sess, used


def usable_cores() -> int:
    """Cores this process may run on (a container or ``taskset`` may allow fewer than exist)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class Schedule:
    """How a scene's batches use the CPU: ``workers`` batches run side by side, each on
    ``threads`` intra-op threads (0: the runtime's default).

    Why one single-threaded run per core is the CPU default: a batch of 8 x 8 patches is a
    long chain of small operators (16-32 channels, 4 x 4 to 8 x 8 pixels) that intra-op
    threads share badly: on the 2-core development machine the fp32 Trento graph ran 2,996 px/s
    as one caller on two threads and 5,477 px/s as two single-threaded callers
    (``benchmarks/inference.py``, README). On CUDA the GPU does the work: one caller."""

    workers: int
    threads: int

    def __str__(self) -> str:
        return f"{self.workers} worker{'s' if self.workers != 1 else ''} x {self.threads or 'default'} intra-op thread{'s' if self.threads != 1 else ''}"


def plan_schedule(cuda: bool, workers: int = 0, threads: int = 0) -> Schedule:
    """Fill in what the user left at 0 (auto)."""
    if workers < 0 or threads < 0:
        raise FedDiffError(f"--workers and --threads must be >= 0 (0: automatic), got {workers} and {threads}")
    if workers == 0:
        workers = 1 if cuda else usable_cores()
    if threads == 0 and workers > 1 and not cuda:
        threads = 1
    return Schedule(workers, threads)


def open_scheduled(path: Path, provider: str = "auto", workers: int = 0, threads: int = 0):
    """(session, provider that runs, schedule): the schedule follows the provider that really
    runs, so a CUDA request that falls back to CPU gets the CPU schedule (the session is reopened
    once, because intra-op threads are fixed when a session is created)."""
    cuda = CUDA in requested_providers(provider)
    plan = plan_schedule(cuda, workers, threads)
    sess, used = open_session(path, provider, plan.threads)
    if cuda and used != CUDA:
        plan = plan_schedule(False, workers, threads)
        sess, used = open_session(path, "cpu", plan.threads)
    return sess, used, plan


def session_meta(sess, where: str = "model") -> ModelMeta:
    return ModelMeta.from_props(dict(sess.get_modelmeta().custom_metadata_map), where)


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

    def one(where: Union[slice, np.ndarray], rows: np.ndarray, cols: np.ndarray) -> int:
        feeds = {m: extract_patches(p, rows, cols, patch_size) for m, p in padded.items()}
        out[where] = run(feeds).argmax(1)
        return int(rows.shape[0])

    workers = max(1, workers)
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="infer") as pool:
        pending: deque = deque()
        for where, rows, cols in batches:
            pending.append(pool.submit(one, where, rows, cols))
            if len(pending) >= 2 * workers:
                on_batch(pending.popleft().result())
        while pending:
            on_batch(pending.popleft().result())
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
    model: Path, config: str, out: Path, batch: int = 512, provider: str = "auto", progress: bool = True, workers: int = 0, threads: int = 0
) -> InferResult:
    """Classify the whole scene of ``config``; write class_map.tif, classification_map.png and
    (when the scene has test labels) metrics.json into ``out``."""
    from feddiff.config import load_config
    from feddiff.data.loader import load_scene
    from feddiff.maps import write_geotiff_map, write_png_map
    from feddiff.metrics import classification_metrics

    if batch < 1:
        raise FedDiffError(f"--batch must be >= 1, got {batch}")
    sess, used, plan = open_scheduled(Path(model), provider, workers, threads)
    meta = session_meta(sess, str(model))
    if meta.graph != "whole":
        raise FedDiffError(f"{model}: a split ({meta.graph}) graph; infer needs the whole-model export")
    cfg = load_config(config)
    scene = load_scene(cfg)
    check_scene(meta, scene.modalities, str(config))
    t0 = time.perf_counter()
    pred = classify_scene(sess, meta, scene.modalities, batch, progress, plan.workers)
    seconds = time.perf_counter() - t0
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    class_map = (pred + 1).astype(np.uint8)
    k = len(meta.class_names)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*no geotransform.*")  # synthetic/.mat scenes carry no georeference
        write_geotiff_map(class_map, out / "class_map.tif", scene.georef, k)
    write_png_map(class_map, meta.class_names, out / "classification_map.png")
    metrics = None
    if scene.test_labels is not None and (scene.test_labels > 0).any():
        r, c, y = labelled_pixels(scene.test_labels)
        metrics = classification_metrics(y, pred[r, c], k)
        metrics["class_names"] = meta.class_names
    doc = {"provider": used, "model": str(model), "quantize": meta.quantize, "workers": plan.workers, "threads_per_worker": plan.threads, "pixels": int(pred.size), "seconds": seconds, "pixels_per_s": pred.size / max(seconds, 1e-9)}
    if metrics is not None:
        doc.update(metrics)
    (out / "metrics.json").write_text(json.dumps(doc, indent=2))
    return InferResult(used, out / "class_map.tif", out / "classification_map.png", metrics, seconds, int(pred.size), plan)
