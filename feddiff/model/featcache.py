"""Frozen-denoiser features kept per (pixel, dihedral code) across stage-2 epochs and runs.

Why: in stage 2 the denoiser is frozen and its feature noise is a fixed buffer, so a patch's
diffusion features are a pure function of the pixel and its dihedral code, yet they are most of
the compute per step. Validation-driven selection trains stage 2 several times over the same
pixels (model.selection), and each epoch revisits every pixel; with the features kept, each
(pixel, code) pays for the U-Net once. Bounded by ``max_bytes``: past it, features are
computed as usual and not kept.
"""

from __future__ import annotations

import numpy as np
import torch

from feddiff.model.net import FedDiffNet


class FeatureCache:
    def __init__(self, max_bytes: int = 1 << 30) -> None:
        self.max_bytes = max_bytes
        self.bytes = 0
        self.store: dict[str, dict[tuple[int, int, int], torch.Tensor]] = {}

    def features(
        self, net: FedDiffNet, patches: dict[str, torch.Tensor], rows: np.ndarray, cols: np.ndarray, dih: np.ndarray | None
    ) -> dict[str, torch.Tensor] | None:
        """Each modality's ``diffusion_features`` of the batch, from the store where known;
        None for a model without diffusion (its features are the patch itself)."""
        if not all(net.branches[m].features is not None for m in net.modalities):
            return None
        codes = np.zeros(rows.shape[0], np.int64) if dih is None else dih
        keys = [(int(r), int(c), int(d)) for r, c, d in zip(rows, cols, codes)]
        out = {}
        for m in net.modalities:
            store = self.store.setdefault(m, {})
            missing = [i for i, k in enumerate(keys) if k not in store]
            if missing:
                with torch.no_grad():
                    new = net.branches[m].diffusion_features(patches[m][missing])
                for j, i in enumerate(missing):
                    if self.bytes < self.max_bytes:
                        store[keys[i]] = new[j].clone()
                        self.bytes += new[j].numel() * new[j].element_size()
                fresh = dict(zip(missing, new))
                out[m] = torch.stack([fresh[i] if i in fresh else store[k] for i, k in enumerate(keys)])
            else:
                out[m] = torch.stack([store[k] for k in keys])
        return out
