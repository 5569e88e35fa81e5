"""Checkpoint -> ONNX: the whole classifier as one graph, or cut at the wire (``--split``).

Why one graph: a base station that only classifies should need onnxruntime and nothing else,
so the diffusion features (fixed timesteps, fixed noise buffers), the comm module's
quantiser and the fusion head all run inside the graph. Why the split form: it is exactly the
federated deployment -- each station graph emits the Packed wire form (int codes + per-sample
scale) and the fusion graph consumes it, so the wire format is checked by the same parity test.

Every export is verified against PyTorch on held-out patches before it is kept; a graph that
disagrees is deleted, never shipped.
"""

from __future__ import annotations

import contextlib
import json
import logging
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Optional

import torch
import torch.nn as nn

from feddiff.errors import FedDiffError
from feddiff.model.comm import dequantise_codes, quantise
from feddiff.model.ensemble import EnsembleNet
from feddiff.model.net import FedDiffNet

from export.parity import PARITY_TOL, Parity, compare, ort_split_logits, ort_whole_logits, parity_patches, require_parity, torch_logits

__all__ = ["PARITY_TOL", "Parity", "export_checkpoint", "export_split", "export_whole", "ort_split_logits", "ort_whole_logits", "require_parity"]

log = logging.getLogger("feddiff.export")

OPSET = 17
META_PREFIX = "feddiff."


# -- export modules ------------------------------------------------------------------------------
class WholeModel(nn.Module):
    """Positional inputs (one per modality, in checkpoint order) -> logits only: ONNX graphs
    take tensors, not dicts, and the single-stream logits are a training-time signal."""

    def __init__(self, net: FedDiffNet) -> None:
        super().__init__()
        self.net = net
        self.modalities = list(net.modalities)

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return self.net({m: x for m, x in zip(self.modalities, xs)})[0]


class StationModel(nn.Module):
    """One station's half: patch -> (codes, scale), the exact Packed wire form."""

    def __init__(self, net: FedDiffNet, modality: str) -> None:
        super().__init__()
        self.branch = net.branches[modality]

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        flat = self.branch.flat_features(x)
        enc = self.branch.encoder
        if enc is None:  # raw features: the scale is a ones vector shaped by the batch
            return flat, torch.ones_like(flat[:, 0])
        p = quantise(enc.project(flat), enc.bits)
        return p.codes, p.scale


class FusionModel(nn.Module):
    """The aggregator's half: (codes_m, scale_m) for every modality -> logits."""

    def __init__(self, net: FedDiffNet) -> None:
        super().__init__()
        self.head = net.head
        self.modalities = list(net.modalities)

    def forward(self, *wire: torch.Tensor) -> torch.Tensor:
        feats = {m: dequantise_codes(wire[2 * i], wire[2 * i + 1]) for i, m in enumerate(self.modalities)}
        return self.head(feats)[0]


# -- metadata ------------------------------------------------------------------------------------
def model_metadata(net: FedDiffNet, ck: dict, graph: str, quantize: str = "none") -> dict[str, str]:
    """Everything a base station needs besides the weights: the band statistics above all,
    because a model fed differently normalised bands is silently wrong."""
    cfg = ck["cfg"]
    return {
        "class_names": json.dumps(list(ck["class_names"])),
        "bands": json.dumps({m: int(ck["bands"][m]) for m in net.modalities}),
        "modalities": json.dumps(list(net.modalities)),
        "patch_size": str(int(cfg.model.patch_size)),
        "stats": json.dumps({m: s.to_dict() for m, s in ck["stats"].items()}),
        "timesteps": json.dumps(list(cfg.model.feature_timesteps)),
        "members": str(int(cfg.model.members)),
        "version": str(ck.get("version", "")),
        "config_hash": str(ck.get("config_hash", "")),
        "graph": graph,
        "quantize": quantize,
    }


def write_metadata(path: Path, meta: dict[str, str]) -> None:
    import onnx

    model = onnx.load(str(path))
    del model.metadata_props[:]
    for k, v in meta.items():
        entry = model.metadata_props.add()
        entry.key, entry.value = META_PREFIX + k, v
    model.producer_name = "feddiff"
    onnx.save(model, str(path))


# -- export --------------------------------------------------------------------------------------
def _adaptive_avg_pool2d(x: torch.Tensor, output_size) -> torch.Tensor:
    """Exact adaptive average pooling written as slices and means. The TorchScript exporter
    cannot lower ``adaptive_avg_pool2d`` once the batch axis is dynamic (the diffusion features
    reshape K*B samples, and ONNX shape inference loses the static spatial size); the spatial
    sizes are static here, so the bins are Python constants."""
    import torch.nn.functional as F

    oh, ow = (output_size, output_size) if isinstance(output_size, int) else output_size
    h, w = int(x.shape[-2]), int(x.shape[-1])
    if h % oh == 0 and w % ow == 0:  # equal bins: one AveragePool node, not oh * ow slices
        return F.avg_pool2d(x, (h // oh, w // ow))
    rows = []
    for i in range(oh):
        r0, r1 = (i * h) // oh, -((-(i + 1) * h) // oh)
        cols = []
        for j in range(ow):
            c0, c1 = (j * w) // ow, -((-(j + 1) * w) // ow)
            cols.append(x[..., r0:r1, c0:c1].mean(dim=(-2, -1)))
        rows.append(torch.stack(cols, dim=-1))
    return torch.stack(rows, dim=-2)


@contextlib.contextmanager
def _export_friendly_ops() -> Iterator[None]:
    """Swap in export-friendly equivalents of ops the exporter cannot lower, for the duration
    of one export only (the training code is left untouched)."""
    import torch.nn.functional as F

    orig = F.adaptive_avg_pool2d
    F.adaptive_avg_pool2d = _adaptive_avg_pool2d
    try:
        yield
    finally:
        F.adaptive_avg_pool2d = orig


def _torch_export(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str]) -> None:
    """The exported graph, then the exact rewrites of ``export.graph_rewrites`` (checked by
    the parity step like everything else)."""
    from export.graph_rewrites import optimise_file

    _exporter(module, args, path, inputs, outputs)
    log.info("%s: %d per-channel affines as BatchNormalization", path.name, optimise_file(path))


def _exporter(module: nn.Module, args: tuple, path: Path, inputs: list[str], outputs: list[str]) -> None:
    """TorchScript exporter first (fast, deterministic for this static graph); the dynamo
    exporter only as a fallback."""
    axes = {n: {0: "batch"} for n in inputs + outputs}
    module.eval()
    try:
        with torch.no_grad(), _export_friendly_ops(), warnings.catch_warnings():
            warnings.simplefilter("ignore", torch.jit.TracerWarning)  # static patch sizes, by design
            torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_axes=axes, opset_version=OPSET, dynamo=False)
        return
    except Exception as exc:  # noqa: BLE001 - any exporter failure falls back to dynamo
        log.warning("TorchScript exporter failed (%s); trying the dynamo exporter", exc)
    batch = torch.export.Dim("batch", min=1)
    shapes = (tuple({0: batch} for _ in args),)  # forward(*xs): one varargs entry
    with torch.no_grad():
        torch.onnx.export(module, args, str(path), input_names=inputs, output_names=outputs, dynamic_shapes=shapes, opset_version=OPSET, dynamo=True)


def dummy_inputs(net: FedDiffNet, batch: int = 2) -> tuple[torch.Tensor, ...]:
    p = next(iter(net.branches.values())).patch_size
    return tuple(torch.zeros(batch, net.branches[m].in_channels, p, p) for m in net.modalities)


def export_whole(net: FedDiffNet, ck: dict, path: Path, quantize: str = "none") -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _torch_export(WholeModel(net), dummy_inputs(net), path, list(net.modalities), ["logits"])
    write_metadata(path, model_metadata(net, ck, "whole", quantize))
    return path


def export_split(net: FedDiffNet, ck: dict, folder: Path) -> dict[str, Path]:
    """``<modality>.station.onnx`` per modality plus ``fusion.onnx``; returns name -> path."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    xs = dummy_inputs(net)
    paths: dict[str, Path] = {}
    wire: list[torch.Tensor] = []
    wire_names: list[str] = []
    for m, x in zip(net.modalities, xs):
        st = StationModel(net, m).eval()
        p = folder / f"{m}.station.onnx"
        _torch_export(st, (x,), p, [m], ["codes", "scale"])
        write_metadata(p, {**model_metadata(net, ck, "station"), "station_modality": m})
        paths[m] = p
        with torch.no_grad():
            codes, scale = st(x)
        wire += [codes, scale]
        wire_names += [f"codes_{m}", f"scale_{m}"]
    p = folder / "fusion.onnx"
    _torch_export(FusionModel(net), tuple(wire), p, wire_names, ["logits"])
    write_metadata(p, model_metadata(net, ck, "fusion"))
    paths["fusion"] = p
    return paths


# -- top level -----------------------------------------------------------------------------------
@dataclass
class ExportResult:
    paths: dict[str, Path]
    parity: Parity
    quantized: Optional[Parity] = None
    sizes: dict[str, int] = field(default_factory=dict)


def export_checkpoint(
    checkpoint: Path,
    out: Path,
    split: bool = False,
    quantize: str = "none",
    config: Optional[str] = None,
    parity_n: int = 256,
) -> ExportResult:
    """The ``feddiff export`` command minus printing. With ``quantize`` the fp32 graph is
    exported and verified first (in a temp folder), then converted and written at ``out``."""
    from feddiff.model.checkpoint import load_checkpoint

    net, ck = load_checkpoint(Path(checkpoint))
    if split and quantize != "none":
        raise FedDiffError("--split with --quantize is not supported: quantise the whole graph, or export --split in fp32")
    if split and isinstance(net, EnsembleNet):
        raise FedDiffError(f"{checkpoint}: --split cuts one model at the wire, this checkpoint is an ensemble of {len(net.members)} (model.members); export the whole graph")
    torch.set_num_threads(max(1, torch.get_num_threads()))
    patches = parity_patches(net, ck, config, parity_n)
    ref = torch_logits(net, patches)
    out = Path(out)
    if split:
        paths = export_split(net, ck, out)
        par = compare(ref, ort_split_logits(paths, patches))
        require_parity(par, list(paths.values()), "split export")
        return ExportResult(paths, par, sizes={k: p.stat().st_size for k, p in paths.items()})
    if quantize == "none":
        export_whole(net, ck, out)
        par = compare(ref, ort_whole_logits(out, patches))
        require_parity(par, [out], "export")
        return ExportResult({"model": out}, par, sizes={"model": out.stat().st_size})
    from export.quantize import quantize_model

    with tempfile.TemporaryDirectory() as tmp:
        fp32 = export_whole(net, ck, Path(tmp) / "fp32.onnx")
        par = compare(ref, ort_whole_logits(fp32, patches))
        require_parity(par, [fp32], "export (fp32 before quantisation)")
        quantize_model(fp32, out, quantize, config=config, ck=ck)
    meta = model_metadata(net, ck, "whole", quantize)
    write_metadata(out, meta)
    qpar = compare(ref, ort_whole_logits(out, patches))
    log.info("%s graph vs PyTorch: max |dlogit| %.3g, argmax agree %.4f", quantize, qpar.max_abs_diff, qpar.argmax_agree)
    return ExportResult({"model": out}, par, quantized=qpar, sizes={"model": out.stat().st_size})
