"""Does an exported graph compute what PyTorch computes? Parity of ONNX Runtime against the
checkpoint on held-out patches, for the whole graph and for the split (stations then fusion,
the wire form passed between graphs as a deployment would).

A graph that disagrees is deleted by ``require_parity``: a silently different deployed model is
worse than no model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional

import numpy as np
import torch

from feddiff.errors import FedDiffError
from feddiff.model.net import FedDiffNet

log = logging.getLogger("feddiff.export")

PARITY_TOL = 1e-4
# The int8 codes inside a graph are rounded: a code that sits on a rounding boundary may round
# the other way under another runtime's float32 order of operations, one quantisation step, which
# moves that patch's logits by far more than 1e-4. So at most this share of patches may exceed
# PARITY_TOL, none by more than BOUNDARY_TOL, and every argmax must agree.
BOUNDARY_SHARE = 0.01
BOUNDARY_TOL = 1e-2


def parity_patches(net: FedDiffNet, ck: dict, config: Optional[str], n: int = 256, seed: int = 0) -> dict[str, np.ndarray]:
    """Held-out (test) patches of the scene when a config is given, else random normal patches
    (normalised data is roughly N(0, 1), so these exercise the same value range)."""
    rng = np.random.default_rng(seed)
    if config:
        from export.infer import scene_patches

        return scene_patches(config, ck["stats"], list(net.modalities), int(ck["cfg"].model.patch_size), "test", n, rng)
    p = next(iter(net.branches.values())).patch_size
    return {m: rng.standard_normal((n, net.branches[m].in_channels, p, p)).astype(np.float32) for m in net.modalities}


def torch_logits(net: FedDiffNet, patches: dict[str, np.ndarray], batch: int = 256) -> np.ndarray:
    net.eval()
    n = next(iter(patches.values())).shape[0]
    out = []
    with torch.no_grad():
        for i in range(0, n, batch):
            out.append(net({m: torch.from_numpy(x[i : i + batch]) for m, x in patches.items()})[0].numpy())
    return np.concatenate(out)


def ort_whole_logits(path: Path, patches: dict[str, np.ndarray], batch: int = 256) -> np.ndarray:
    from export.infer import open_session

    sess, _ = open_session(path, "cpu")
    n = next(iter(patches.values())).shape[0]
    return np.concatenate([sess.run(["logits"], {m: x[i : i + batch] for m, x in patches.items()})[0] for i in range(0, n, batch)])


def ort_split_logits(paths: dict[str, Path], patches: dict[str, np.ndarray]) -> np.ndarray:
    """Stations then fusion, passing the wire form between graphs as a deployment would."""
    from export.infer import open_session

    feeds: dict[str, np.ndarray] = {}
    for m, x in patches.items():
        sess, _ = open_session(paths[m], "cpu")
        codes, scale = sess.run(["codes", "scale"], {m: x})
        feeds[f"codes_{m}"], feeds[f"scale_{m}"] = codes, scale
    sess, _ = open_session(paths["fusion"], "cpu")
    return sess.run(["logits"], feeds)[0]


@dataclass
class Parity:
    max_abs_diff: float
    argmax_agree: float  # fraction of patches with identical argmax
    n: int
    extra: dict = field(default_factory=dict)
    over_tol: float = 0.0  # share of patches whose max |dlogit| exceeds PARITY_TOL

    @property
    def ok(self) -> bool:
        within = self.max_abs_diff <= PARITY_TOL or (self.over_tol <= BOUNDARY_SHARE and self.max_abs_diff <= BOUNDARY_TOL)
        return within and self.argmax_agree == 1.0


def compare(ref: np.ndarray, got: np.ndarray) -> Parity:
    per_patch = np.abs(ref - got).max(axis=1)
    return Parity(float(per_patch.max()), float((ref.argmax(1) == got.argmax(1)).mean()), int(ref.shape[0]),
                  over_tol=float((per_patch > PARITY_TOL).mean()))


def require_parity(par: Parity, paths: list[Path], what: str) -> None:
    """Delete the graph(s) and raise when ONNX Runtime disagrees with PyTorch: a silently
    different deployed model is worse than no model."""
    if par.ok:
        log.info("%s parity: max |dlogit| %.3g (%.1f %% of patches over %g), argmax agree %.4f on %d patches",
                 what, par.max_abs_diff, 100 * par.over_tol, PARITY_TOL, par.argmax_agree, par.n)
        return
    for p in paths:
        Path(p).unlink(missing_ok=True)
    raise FedDiffError(
        f"{what}: ONNX Runtime disagrees with PyTorch (max |dlogit| {par.max_abs_diff:.3g}, "
        f"{100 * par.over_tol:.1f} % of patches over {PARITY_TOL:g}, argmax agreement {par.argmax_agree:.4f}); output deleted"
    )
