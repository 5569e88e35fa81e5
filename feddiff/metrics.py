"""Accuracy metrics of land-cover maps: OA, AA, Cohen's kappa, per-class accuracy, confusion.

Values are fractions in [0, 1] so they compose (means over seeds, JSON reports); only
``format_metrics`` turns them into the percentages papers print. Class ids are 0-based.
"""

from __future__ import annotations

import math
from typing import Optional

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """(K, K) int64 counts; rows are true classes, columns predicted (0-based ids)."""
    t = np.asarray(y_true, dtype=np.int64).reshape(-1)
    p = np.asarray(y_pred, dtype=np.int64).reshape(-1)
    if t.shape != p.shape:
        raise ValueError(f"confusion_matrix: {t.shape[0]} true labels but {p.shape[0]} predictions")
    for name, v in (("y_true", t), ("y_pred", p)):
        if v.size and (v.min() < 0 or v.max() >= num_classes):
            raise ValueError(f"confusion_matrix: {name} holds ids {int(v.min())}..{int(v.max())}, expected 0..{num_classes - 1}")
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


def classification_metrics(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> dict:
    """OA, AA, kappa, per-class accuracy and the confusion matrix of two label vectors."""
    return metrics_from_confusion(confusion_matrix(y_true, y_pred, num_classes))


def metrics_from_confusion(cm: np.ndarray) -> dict:
    """The same metrics from a (K, K) confusion alone, so a scene classified strip by strip
    needs no label vector. A class absent from the truth has accuracy None: it has none, and
    counting it as 0 or 1 would bias AA."""
    cm = np.asarray(cm, dtype=np.int64)
    n = int(cm.sum())
    support = cm.sum(axis=1)
    diag = np.diag(cm)
    per_class: list[Optional[float]] = [float(d / s) if s else None for d, s in zip(diag, support)]
    present = [v for v in per_class if v is not None]
    if n == 0:
        oa = aa = kappa = math.nan
    else:
        oa = float(diag.sum() / n)
        aa = float(np.mean(present))
        pe = float((cm.sum(axis=0).astype(np.float64) * support).sum() / (float(n) * n))
        # pe == 1 only when truth and prediction are one and the same class: perfect agreement.
        kappa = (oa - pe) / (1.0 - pe) if pe < 1.0 else 1.0
    return {
        "oa": oa,
        "aa": aa,
        "kappa": float(kappa),
        "per_class": per_class,
        "confusion": cm.tolist(),
    }


def format_metrics(m: dict, class_names: list[str]) -> str:
    """A terminal table in percent, one row per class with its test support."""
    conf = m.get("confusion")
    support = [sum(row) for row in conf] if conf else [None] * len(class_names)
    width = max([5] + [len(n) for n in class_names])
    lines = [
        f"OA {100 * m['oa']:.2f}%   AA {100 * m['aa']:.2f}%   kappa {m['kappa']:.4f}",
        f"  {'class':<{width}} {'accuracy':>9} {'pixels':>8}",
    ]
    for name, acc, sup in zip(class_names, m["per_class"], support):
        acc_s = "-" if acc is None else f"{100 * acc:.2f}%"
        lines.append(f"  {name:<{width}} {acc_s:>9} {'' if sup is None else sup:>8}")
    return "\n".join(lines)
