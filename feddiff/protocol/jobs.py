"""What the messages of a federated FedDiff job mean: content types and who owns which pixel.

Both roles read this module; neither imports the other. A job is driven by the aggregator:

  edge -> agg   HELLO      {client, modalities, bands, shape, committed_round}
  agg -> edge   JOB        {round, attempt} + train_rows, train_cols (the shared grid's samples)
  edge -> agg   READY      {round, attempt}          (after local pretraining, rolled back to round)
  agg -> edge   FORWARD    {round, step, attempt, train} + rows, cols[, dihedral]
  edge -> agg   FEATURES   {round, step, attempt} + codes_<m>, scale_<m> per modality
  agg -> edge   BACKWARD   {round, step, attempt} + grad_<m>
  agg -> edge   GET_WEIGHTS {round, attempt}         (horizontal mode)
  edge -> agg   WEIGHTS    {round, attempt, samples} + w_<m>/<param>
  agg -> edge   COMMIT     {round, attempt}[+ averaged w_<m>/<param>]
  edge -> agg   COMMITTED  {round, attempt}
  agg -> all    DONE       {}                        (broadcast)

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
# HE mode (a third-party label holder holds the only CKKS secret key):
#   labels -> agg   HELLO  + train_rows/cols, test_rows/cols, ctx (public CKKS context)
#   agg -> labels   FUSED  {round, step, attempt, train} + sum of the stations' ciphertexts, idx
#   labels -> agg   HEAD_GRAD (train) grad_z | PREDICTIONS (eval) pred
#   agg -> labels   SCORE + pred (the test set)  ->  labels -> agg  METRICS {oa, aa, kappa, ...}
# A station as label holder (plaintext/signed modes): the aggregator keeps the head and the
# label-free loss terms and asks the holder only for the cross-entropy gradient:
#   agg -> holder  LOGITS {round, step, attempt} + logits, idx  ->  holder -> agg  CE_GRAD + grad_logits
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
