"""What one inference-benchmark worker runs: the pixels, the variant spec (``fp32@2x1``) and a
runner per runtime (PyTorch eager or an ONNX graph), kept apart from the orchestration in
``inference.py`` so that a worker process imports only what it measures.
"""

from __future__ import annotations

import resource
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def pixel_sets(config: str, max_pixels: int, test_pixels: int, seed: int = 0):
    """(timed rows, cols) in raster order -- the whole scene unless capped -- and the test
    pixels (rows, cols, labels0) the OA is computed on."""
    from feddiff.config import load_config
    from feddiff.data.loader import load_scene
    from feddiff.data.patches import labelled_pixels

    scene = load_scene(load_config(config))
    h, w = scene.shape
    n = h * w if max_pixels <= 0 else min(max_pixels, h * w)
    flat = np.arange(n)
    r, c, y = labelled_pixels(scene.test_labels)
    if 0 < test_pixels < r.shape[0]:
        pick = np.sort(np.random.default_rng(seed).choice(r.shape[0], test_pixels, replace=False))
        r, c, y = r[pick], c[pick], y[pick]
    return scene, (flat // w, flat % w), (r, c, y)


def peak_rss_mib() -> float:
    """This process's own peak RSS. Not ``getrusage``: Linux carries ru_maxrss across exec, so a
    worker would report its parent's peak (the export step) instead of its own."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB -> MiB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def runtime_of(spec: str) -> str:
    """``int8@2x1`` -> ``int8``: which model a variant runs, whatever its schedule."""
    return spec.partition("@")[0]


def parse_variant(spec: str, threads: int) -> tuple[str, int, int]:
    """``fp32`` -> (fp32, 1 worker, ``threads``); ``fp32@2x1`` -> (fp32, 2 workers, 1 thread)."""
    name, _, sched = spec.partition("@")
    if not sched:
        return name, 1, threads
    w, _, t = sched.partition("x")
    return name, int(w), int(t)


@dataclass
class Runner:
    """One variant under one schedule, ready to classify."""

    spec: str
    name: str
    workers: int
    threads: int
    provider: str
    meta: object
    run: Callable[[dict], np.ndarray]

    def classify(self, padded: dict, rows: np.ndarray, cols: np.ndarray, batch: int) -> np.ndarray:
        """Batches go through ``export.infer.classify_pixels``, the loop ``feddiff infer`` runs,
        ``workers`` batches side by side, each on ``threads`` intra-op threads."""
        from export.infer import classify_pixels

        if self.name == "torch":
            import torch

            torch.set_num_threads(self.threads)  # process-wide: set again before every use
        out = np.empty(rows.shape[0], np.int64)
        batches = ((slice(i, i + batch), rows[i : i + batch], cols[i : i + batch]) for i in range(0, rows.shape[0], batch))
        return classify_pixels(self.run, padded, self.meta.patch_size, batches, out, self.workers)


def make_runner(spec: str, threads: int, checkpoint: Path, model: Optional[Path]) -> Runner:
    from export.infer import ModelMeta, open_session, session_meta

    name, workers, threads = parse_variant(spec, threads)
    if name == "torch":
        import torch

        from feddiff.model.checkpoint import load_checkpoint

        net, ck = load_checkpoint(checkpoint)
        meta = ModelMeta(list(net.modalities), dict(ck["bands"]), list(ck["class_names"]), int(ck["cfg"].model.patch_size), ck["stats"], [], "", "", "whole", "none")

        def run(feeds: dict) -> np.ndarray:
            with torch.no_grad():  # no_grad is thread-local: each worker thread enters its own
                return net({m: torch.from_numpy(x) for m, x in feeds.items()})[0].numpy()

        return Runner(spec, name, workers, threads, "torch-eager-cpu", meta, run)
    sess, provider = open_session(Path(model), "cpu", threads=threads)
    return Runner(spec, name, workers, threads, provider, session_meta(sess), lambda feeds: sess.run(["logits"], feeds)[0])
