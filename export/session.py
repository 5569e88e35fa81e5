"""Opening an exported model: its metadata, the provider that really runs, the CPU schedule.

Kept apart from the scene loop (``export.infer``) because every consumer of an exported graph
-- whole-scene inference, the benchmarks, a station's split graph -- opens it the same way and
must report the provider onnxruntime actually chose, not the one requested.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from feddiff.data.normalise import BandStats
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
    threads share badly, so two single-threaded callers on two cores classify far more pixels
    per second than one caller on two threads (``benchmarks/inference.py``; figures in
    docs/results.md). On CUDA the GPU does the work: one caller."""

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
