"""After a federated job: assemble the parties' halves into one FedDiffNet and ship it as ONNX.

On the demo machine every party's state directory is local, so the deployable classifier is
assembled here from what each party committed, read through ``feddiff.state.federated``.
"""

from __future__ import annotations

import logging
from pathlib import Path

from feddiff.config import Config
from feddiff.errors import FedDiffError
from feddiff.state.federated import aggregator_head, station_parts

log = logging.getLogger("feddiff.export.federated")


def assemble(cfg: Config, state_dir: Path):
    """(net, stats, class_names) from the parties' committed state."""
    from feddiff.data.loader import load_labels
    from feddiff.data.normalise import BandStats
    from feddiff.model.net import FedDiffNet

    parts = {}
    for station, spec in cfg.federation.clients.items():
        parts.update(station_parts(Path(state_dir) / station, list(spec.modalities)))
    head = aggregator_head(Path(state_dir) / "aggregator")
    stats = {m: BandStats.from_dict(p.stats) for m, p in parts.items()}
    class_names = list(load_labels(cfg)[2])
    bands = {m: int(len(s.mean)) for m, s in stats.items()}
    net = FedDiffNet(bands, len(class_names), cfg.model, cfg.train.seed)
    for m in bands:
        b = net.branches[m]
        b.unet.load_state_dict(parts[m].unet)
        missing, unexpected = b.load_state_dict(parts[m].branch, strict=False)
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
        "parity_share_over_tol": res.parity.over_tol,
        "pixels_per_s": inf.pixels_per_s,
    }
