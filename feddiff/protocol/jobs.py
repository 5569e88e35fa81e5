"""The names of a federated job's message kinds, and who owns which pixel.

Both sides read this module; neither imports the other. The payload of each kind is one
dataclass in ``messages`` (job kinds) or ``label_messages`` (label holder and HE kinds); the
table of kinds, senders and contents is in docs/architecture.md. A job is driven by the
aggregator: HELLO, then per round JOB -> READY, FORWARD -> FEATURES and BACKWARD per step,
GET_WEIGHTS -> WEIGHTS (horizontal mode), COMMIT -> COMMITTED; DONE at the end.

Any failure inside a round (timeout, a client that restarted) makes every party roll back to the
last committed round and the round is run again, so no step is ever applied twice.
"""

from __future__ import annotations

import numpy as np

from feddiff.config import ClientSpec

HELLO = "hello"
JOB = "job"
READY = "ready"
FORWARD = "forward"
FEATURES = "features"
BACKWARD = "backward"
GET_WEIGHTS = "get_weights"
WEIGHTS = "weights"
COMMIT = "commit"
COMMITTED = "committed"
DONE = "done"
# A label holder that is not the aggregator: a station (LOGITS -> CE_GRAD) or, in HE mode, a
# third party with the only CKKS secret key (FUSED -> HEAD_GRAD | PREDICTIONS); either scores
# the test predictions (SCORE -> METRICS).
LOGITS = "logits"
CE_GRAD = "ce_grad"
FUSED = "fused"
HEAD_GRAD = "head_grad"
PREDICTIONS = "predictions"
SCORE = "score"
METRICS = "metrics"


def in_region(spec: ClientSpec, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Pixels a station observes: its region [row0, row1) x [col0, col1), or everything."""
    if spec.region is None:
        return np.ones(rows.shape[0], dtype=bool)
    r0, r1, c0, c1 = spec.region
    return (rows >= r0) & (rows < r1) & (cols >= c0) & (cols < c1)


def owners(clients: dict[str, ClientSpec], modality: str, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
    """For one modality, which client answers for which sample (boolean masks, first match
    wins so overlapping regions never double-count a pixel)."""
    taken = np.zeros(rows.shape[0], dtype=bool)
    out: dict[str, np.ndarray] = {}
    for name, spec in clients.items():
        if modality not in spec.modalities:
            continue
        mask = in_region(spec, rows, cols) & ~taken
        taken |= mask
        if mask.any():
            out[name] = mask
    return out


def modalities_of(clients: dict[str, ClientSpec]) -> list[str]:
    seen: list[str] = []
    for spec in clients.values():
        for m in spec.modalities:
            if m not in seen:
                seen.append(m)
    return seen


def horizontal_groups(clients: dict[str, ClientSpec]) -> dict[str, list[str]]:
    """Modality -> the stations holding it; a group of two or more averages branch weights."""
    return {m: [n for n, s in clients.items() if m in s.modalities] for m in modalities_of(clients)}
