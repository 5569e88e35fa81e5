"""Train/test splits: the label-map split as given, or seeded per-class draws.

Draws are from the union of labelled pixels with a numpy Generator seeded by the config, so a
split is reproducible from the YAML alone. Pure functions on label maps (0 = unlabelled).
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from feddiff.errors import DataError


def per_class_split(
    labels: np.ndarray, seed: int, per_class: Optional[int] = None, fraction: Optional[float] = None
) -> tuple[np.ndarray, np.ndarray]:
    """(train_map, test_map) from one full label map: ``per_class`` pixels (or ``fraction`` of
    each class, at least one) drawn for training, every other labelled pixel for testing.

    A class never gives all its pixels to training (one is kept for testing when it has more
    than one), so every class present stays measurable.
    """
    if (per_class is None) == (fraction is None):
        raise ValueError("per_class_split: give exactly one of per_class and fraction")
    if per_class is not None and per_class < 1:
        raise ValueError(f"per_class_split: per_class must be >= 1, got {per_class}")
    if fraction is not None and not 0.0 <= fraction <= 1.0:
        raise ValueError(f"per_class_split: fraction must be in [0, 1], got {fraction}")
    rng = np.random.default_rng(seed)
    flat = np.asarray(labels).reshape(-1)
    train = np.zeros_like(flat)
    for k in np.unique(flat[flat > 0]):  # sorted: the draw order, hence the split, is fixed
        idx = np.flatnonzero(flat == k)
        n = per_class if per_class is not None else max(1, int(round(fraction * idx.shape[0])))
        n = min(n, idx.shape[0] - 1) if idx.shape[0] > 1 else idx.shape[0]
        train[rng.choice(idx, size=n, replace=False)] = k
    test = np.where(train > 0, 0, flat)
    return train.reshape(labels.shape), test.reshape(labels.shape)


def merge_maps(train: np.ndarray, test: np.ndarray) -> np.ndarray:
    """The union of two label maps (train wins where both are labelled)."""
    return np.where(train > 0, train, test)


def check_disjoint(train: np.ndarray, test: np.ndarray, where: str) -> None:
    """A pixel labelled in both maps would put a test pixel into training and make every
    reported accuracy meaningless, so it is an error rather than a warning."""
    both = (train > 0) & (test > 0)
    if both.any():
        r, c = np.argwhere(both)[0]
        raise DataError(
            f"{where}: {int(both.sum())} pixels are labelled in both train_labels and test_labels "
            f"(first at row {r}, col {c})"
        )


def apply_split(
    mode: str, train: np.ndarray, test: Optional[np.ndarray], seed: int = 0, per_class: int = 20, fraction: float = 0.1
) -> tuple[np.ndarray, np.ndarray]:
    """The split a config asks for. ``given`` keeps both maps; the per-class modes redraw from the
    union of whatever is labelled (``test`` may be None when there is one full map)."""
    full = train if test is None else merge_maps(train, test)
    if mode == "given":
        if test is None:
            raise ValueError("apply_split: mode 'given' needs both a train and a test map")
        return train, test
    if mode == "per_class_count":
        return per_class_split(full, seed, per_class=per_class)
    if mode == "per_class_fraction":
        return per_class_split(full, seed, fraction=fraction)
    raise ValueError(f"apply_split: unknown mode {mode!r}")


def validation_split(train: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(fit_map, val_map) carved from the training map alone: ``fraction`` of each class (rounded)
    goes to validation, drawn with its own seeded generator, and every class keeps at least one
    fitting pixel (a class with one training pixel gives none to validation).

    Why from the training pixels: everything chosen per scene (epochs, self-training) is chosen
    on these, so test pixels are read only for the final report. The test map is not an input,
    so a validation pixel cannot be a test pixel.
    """
    if not 0.0 <= fraction < 1.0:
        raise ValueError(f"validation_split: fraction must be in [0, 1), got {fraction}")
    rng = np.random.default_rng([seed, 0x7A1])
    flat = np.asarray(train).reshape(-1)
    val = np.zeros_like(flat)
    for k in np.unique(flat[flat > 0]):
        idx = np.flatnonzero(flat == k)
        n = min(int(round(fraction * idx.shape[0])), idx.shape[0] - 1)
        if n > 0:
            val[rng.choice(idx, size=n, replace=False)] = k
    fit = np.where(val > 0, 0, flat)
    return fit.reshape(train.shape), val.reshape(train.shape)
