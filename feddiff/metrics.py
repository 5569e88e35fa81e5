"""Accuracy metrics of land-cover maps: OA, AA, Cohen's kappa, per-class accuracy, confusion."""

from __future__ import annotations

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Rows are true classes, columns predicted (0-based ids)."""
    idx = np.asarray(y_true, np.int64) * num_classes + np.asarray(y_pred, np.int64)
    return np.bincount(idx, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """Fractions in [0, 1]. AA averages over classes present in ``y_true`` (an absent class has
    no accuracy to average)."""
    cm = confusion_matrix(y_true, y_pred, num_classes).astype(np.float64)
    n = cm.sum()
    support = cm.sum(axis=1)
    diag = np.diag(cm)
    per_class = np.where(support > 0, diag / np.maximum(support, 1), np.nan)
    oa = diag.sum() / n if n else float("nan")
    pe = (cm.sum(axis=0) * support).sum() / (n * n) if n else float("nan")
    kappa = (oa - pe) / (1 - pe) if n and pe < 1 else 1.0
    return {
        "oa": float(oa),
        "aa": float(np.nanmean(per_class)),
        "kappa": float(kappa),
        "per_class": [None if np.isnan(v) else float(v) for v in per_class],
        "confusion": cm.astype(np.int64).tolist(),
    }


def format_metrics(m: dict, class_names: list[str]) -> str:
    lines = [f"OA {100 * m['oa']:.2f}%   AA {100 * m['aa']:.2f}%   kappa {m['kappa']:.4f}"]
    for name, acc in zip(class_names, m["per_class"]):
        lines.append(f"  {name:<24} {'-' if acc is None else f'{100 * acc:6.2f}%'}")
    return "\n".join(lines)
