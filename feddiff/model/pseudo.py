"""Self-training over the unlabelled scene: confident predictions become extra stage-2 pixels.

Why: a few hundred labels must generalise to fields and roofs the training set never showed,
while the scene around them is unlabelled but plentiful. A stage-2 model labels a random pool
of unlabelled pixels; the most confident ones per class (class-balanced, so a dominant class
cannot crowd the rest out) join the next stage-2 run with their predicted labels.

It is stage-2 work over features, so the federated job can do it too: stations compute their
wire codes for the pool pixels as for any batch, the label holder's head predicts, and only
pixel indices plus predicted classes (never raw data) decide the next run's pixel set.
"""

from __future__ import annotations

import numpy as np
import torch

from feddiff.data.sources import PatchSource, PixelSet
from feddiff.model.optim import batches


def unlabelled_pool(train_map: np.ndarray, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Up to ``size`` random pixels (rows, cols) outside the training map, seeded. Test pixels
    may be drawn: only their modalities are read, never their labels."""
    free = np.flatnonzero(np.asarray(train_map).reshape(-1) == 0)
    rng = np.random.default_rng([seed, 0x5E1F])
    pick = np.sort(rng.choice(free, size=min(size, free.shape[0]), replace=False))
    rows, cols = np.unravel_index(pick, train_map.shape)
    return rows.astype(np.int64), cols.astype(np.int64)


@torch.no_grad()
def predict_proba(net: torch.nn.Module, srcs: dict[str, PatchSource], rows: np.ndarray, cols: np.ndarray, batch: int) -> np.ndarray:
    """(N, K) class probabilities; the ensemble's log-mean-probabilities softmax back to them."""
    net.eval()
    out = []
    for idx in batches(rows.shape[0], batch, None):
        logits = net({m: s.patches(rows[idx], cols[idx]) for m, s in srcs.items()})[0]
        out.append(torch.softmax(logits, dim=1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 0), np.float32)


def select_confident(proba: np.ndarray, per_class: int, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """(indices into ``proba``, predicted class) of at most ``per_class`` pixels per class whose
    top probability is at least ``threshold``, most confident first."""
    pred = proba.argmax(1)
    conf = proba.max(1)
    keep: list[np.ndarray] = []
    for k in range(proba.shape[1]):
        cand = np.flatnonzero((pred == k) & (conf >= threshold))
        keep.append(cand[np.argsort(-conf[cand], kind="stable")[:per_class]])
    idx = np.sort(np.concatenate(keep)) if keep else np.zeros(0, np.int64)
    return idx, pred[idx]


def pseudo_labelled(
    net: torch.nn.Module,
    srcs: dict[str, PatchSource],
    pool: tuple[np.ndarray, np.ndarray],
    per_class: int,
    threshold: float,
    batch: int,
) -> PixelSet:
    """The pool pixels ``net`` labels confidently, as a ``PixelSet`` with predicted labels."""
    rows, cols = pool
    proba = predict_proba(net, srcs, rows, cols, batch)
    idx, labels = select_confident(proba, per_class, threshold)
    return PixelSet(rows[idx], cols[idx], labels.astype(np.int64))


def join(a: PixelSet, b: PixelSet) -> PixelSet:
    return PixelSet(np.concatenate([a.rows, b.rows]), np.concatenate([a.cols, b.cols]), np.concatenate([a.labels, b.labels]))
