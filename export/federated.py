"""After a federated job: assemble the parties' halves into one FedDiffNet and ship it as ONNX.

No party ever held the whole model during training -- each station kept its denoiser and branch,
the aggregator its head. On the demo machine all their state directories are local, so the
deployable classifier is assembled here from exactly what each party saved:

* ``<state_dir>/<station>/pretrained.pt``: ``{'stats': {m: stats dict}, 'unet': {m: state_dict}}``
* ``<state_dir>/<station>/round_<r>.pt``: ``{'branches': {m: trainable state dict}}`` (highest r)
* ``<state_dir>/aggregator/aggregator_state.pt``: ``{'head': head state_dict, ...}``
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import torch

from feddiff.config import Config
from feddiff.errors import FedDiffError

log = logging.getLogger("feddiff.export.federated")


def _numpy_scalar_globals() -> list:
    """Numpy scalar types that some saved optimiser states hold (e.g. a numpy float learning
    rate); allowing exactly these keeps ``weights_only=True`` (no arbitrary pickled code)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return [core.multiarray.scalar, np.dtype, *(type(np.dtype(t)) for t in ("float64", "float32", "int64"))]


def _load(path: Path) -> dict:
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FedDiffError(f"{path}: not found (did the federated job finish?)") from None
    except Exception as exc:  # torch raises many types for a bad file
        raise FedDiffError(f"{path}: unreadable ({type(exc).__name__})") from None


def latest_round(station_dir: Path) -> Path:
    """The round the station committed (station.json), else the highest round file: a station
    writes round_<r>.pt just before committing r, so a crash can leave one uncommitted file."""
    meta = station_dir / "station.json"
    if meta.exists():
        try:
            committed = int(json.loads(meta.read_text()).get("committed_round", -1))
        except (ValueError, OSError):
            committed = None
        if committed is not None and (station_dir / f"round_{committed}.pt").exists():
            return station_dir / f"round_{committed}.pt"
    rounds = []
    for p in station_dir.glob("round_*.pt"):
        try:
            rounds.append((int(p.stem.split("_", 1)[1]), p))
        except ValueError:
            continue
    if not rounds:
        raise FedDiffError(f"{station_dir}: no round_<r>.pt (the station never committed a round)")
    return max(rounds)[1]


def assemble(cfg: Config, state_dir: Path):
    """(net, stats, class_names) from the parties' saved state."""
    from feddiff.data.loader import load_labels
    from feddiff.data.normalise import BandStats
    from feddiff.model.net import FedDiffNet

    unets: dict[str, dict] = {}
    branches: dict[str, dict] = {}
    stats: dict[str, BandStats] = {}
    for station, spec in cfg.federation.clients.items():
        sdir = state_dir / station
        pre = _load(sdir / "pretrained.pt")
        rnd_path = latest_round(sdir)
        rnd = _load(rnd_path)
        log.info("station %s: %s", station, rnd_path.name)
        for m in spec.modalities:
            stats[m] = BandStats.from_dict(pre["stats"][m])
            unets[m] = pre["unet"][m]
            # he_proj.* exists only in HE jobs: a projection used for encryption, not part of the model.
            branches[m] = {k: v for k, v in rnd["branches"][m].items() if not k.startswith("he_proj.")}
    head = _load(state_dir / "aggregator" / "aggregator_state.pt")["head"]
    class_names = list(load_labels(cfg)[2])
    bands = {m: int(len(s.mean)) for m, s in stats.items()}
    net = FedDiffNet(bands, len(class_names), cfg.model, cfg.train.seed)
    for m in bands:
        b = net.branches[m]
        b.unet.load_state_dict(unets[m])
        missing, unexpected = b.load_state_dict(branches[m], strict=False)
        bad = [k for k in missing if not k.startswith(("unet.", "features."))]
        if bad or unexpected:
            raise FedDiffError(f"station state for {m} does not fit the model (missing {bad[:3]}, unexpected {list(unexpected)[:3]})")
    try:
        net.head.load_state_dict(head)
    except RuntimeError as exc:
        raise FedDiffError(f"aggregator head does not fit the model: {str(exc).splitlines()[0]}") from None
    net.eval()
    return net, stats, class_names


def export_from_job(cfg: Config, out: Path) -> dict:
    """Assemble, checkpoint, export (parity-checked) and classify the scene with ONNX Runtime."""
    from export.infer import run_inference
    from export.onnx_export import export_checkpoint
    from feddiff.model.checkpoint import save_checkpoint

    out = Path(out)
    state_dir = cfg.resolve(cfg.federation.state_dir)
    net, stats, class_names = assemble(cfg, state_dir)
    ck_path = out / "model.pt"
    save_checkpoint(ck_path, net, cfg, stats, class_names)
    if cfg.source.startswith("<"):
        raise FedDiffError("export_from_job needs a config loaded from a file (infer re-reads the scene from it)")
    config = cfg.source
    res = export_checkpoint(ck_path, out / "model.onnx", config=config)
    inf = run_inference(out / "model.onnx", config, out / "onnx", progress=False)
    return {
        "model": str(out / "model.onnx"),
        "checkpoint": str(ck_path),
        "provider": inf.provider,
        "oa": None if inf.metrics is None else inf.metrics["oa"],
        "parity_max_abs_diff": res.parity.max_abs_diff,
        "pixels_per_s": inf.pixels_per_s,
    }
