"""Train/test splits: the label-map split as given, or seeded per-class draws.

Draws are from the union of labelled pixels with a numpy Generator seeded by the config, so a
split is reproducible from the YAML alone.
"""

from __future__ import annotations

import numpy as np


def per_class_split(labels: np.ndarray, seed: int, per_class: int | None = None, fraction: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Split a full label map into (train_map, test_map): N per class (or a fraction per class,
    at least one) for training, every other labelled pixel for testing."""
    rng = np.random.default_rng(seed)
    flat = labels.reshape(-1)
    train = np.zeros_like(flat)
    for k in np.unique(flat[flat > 0]):
        idx = np.flatnonzero(flat == k)
        n = per_class if per_class is not None else max(1, int(round(fraction * idx.shape[0])))
        n = min(n, idx.shape[0] - 1) if idx.shape[0] > 1 else idx.shape[0]
        pick = rng.choice(idx, size=n, replace=False)
        train[pick] = k
    test = np.where(train > 0, 0, flat)
    return train.reshape(labels.shape), test.reshape(labels.shape)


def merge_maps(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The union of two label maps (train wins where both are labelled)."""
    return np.where(train > 0, train, test)
