"""FedDiff's classification loss: CE on the cross stream, MSE tying single streams to it, L2.

The released code's regulariser evaluated to zero; here the L2 term is the explicit sum of
squared trainable weights (biases and norm scales excluded), so it is testable.
"""

from __future__ import annotations

from typing import Iterable

import torch
import torch.nn as nn
import torch.nn.functional as F


def l2_penalty(params: Iterable[tuple[str, nn.Parameter]]) -> torch.Tensor:
    total = torch.zeros(())
    for name, p in params:
        if p.requires_grad and p.dim() > 1:
            total = total + (p**2).sum()
    return total


def label_free_terms(
    logits: torch.Tensor,
    singles: dict[str, torch.Tensor],
    named_params: Iterable[tuple[str, nn.Parameter]] = (),
    mse_weight: float = 1.0,
    l2: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(weighted sum, MSE, L2) of the terms that need no label: apart from the cross-entropy
    because a fusion head whose labels sit at another party computes these itself. The MSE
    target is the detached cross-stream logits: single streams learn to agree with the fused
    prediction without dragging it toward one modality."""
    mse = torch.zeros(())
    for s in singles.values():
        mse = mse + F.mse_loss(s, logits.detach())
    reg = l2_penalty(named_params) if l2 > 0 else torch.zeros(())
    return mse_weight * mse + l2 * reg, mse, reg


def feddiff_loss(
    logits: torch.Tensor,
    singles: dict[str, torch.Tensor],
    labels: torch.Tensor,
    named_params: Iterable[tuple[str, nn.Parameter]] = (),
    mse_weight: float = 1.0,
    l2: float = 0.0,
    smoothing: float = 0.0,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total loss and its parts. ``smoothing``: label smoothing of the cross-entropy
    (``train.label_smoothing``)."""
    ce = F.cross_entropy(logits, labels, label_smoothing=smoothing)
    rest, mse, reg = label_free_terms(logits, singles, named_params, mse_weight, l2)
    total = ce + rest
    return total, {"ce": ce.item(), "mse": mse.item(), "l2": reg.item(), "total": total.item()}
