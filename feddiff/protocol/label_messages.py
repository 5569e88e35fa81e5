"""Message kinds between the aggregator and a label holder that is not the aggregator, and the
encrypted features of HE mode (see ``messages`` for the conventions).

A station as label holder gets LOGITS and returns CE_GRAD; the HE third party gets FUSED (the
ciphertext sum of the stations' features) and returns HEAD_GRAD or PREDICTIONS; either scores
the test predictions (SCORE -> METRICS), because only it has the test labels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import numpy as np

from feddiff.protocol import jobs
from feddiff.protocol.messages import Arrays, Payload
from feddiff.protocol.payload import FLOAT, INT, array, bad, blob_arrays, blobs, number, optional

METRIC_KEYS = ("oa", "aa", "kappa", "per_class", "confusion")


@dataclass
class Logits(Payload):
    kind: ClassVar[str] = jobs.LOGITS
    logits: np.ndarray = None
    idx: np.ndarray = None  # rows of the label holder's training samples

    def to_arrays(self) -> tuple[Arrays, dict]:
        return {"logits": self.logits, "idx": self.idx.astype(np.int64)}, {}

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Logits":
        logits = array(arrays, "logits", FLOAT, 2)
        return cls(logits, array(arrays, "idx", INT, 1, logits.shape[0]))


@dataclass
class StepResult(Payload):
    """A label holder's answer to one training step: the gradient it returns and the loss it saw."""

    grad: np.ndarray = None
    ce: float = 0.0
    correct: int = 0
    total: Optional[float] = None
    grad_name: ClassVar[str] = ""

    def to_arrays(self) -> tuple[Arrays, dict]:
        meta = {"ce": self.ce, "correct": self.correct, **({} if self.total is None else {"total": self.total})}
        return {self.grad_name: self.grad}, meta

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "StepResult":
        total = number(meta, "total")
        return cls(array(arrays, cls.grad_name, FLOAT, 2), float(number(meta, "ce", 0.0)), int(number(meta, "correct", 0)), total)


@dataclass
class CeGrad(StepResult):
    """d cross-entropy / d logits; the label-free loss terms stay with the aggregator."""

    kind: ClassVar[str] = jobs.CE_GRAD
    grad_name: ClassVar[str] = "grad_logits"


@dataclass
class HeadGrad(StepResult):
    """HE: d loss / d fused features; the same gradient serves every station (a sum's gradient)."""

    kind: ClassVar[str] = jobs.HEAD_GRAD
    grad_name: ClassVar[str] = "grad_z"


@dataclass
class Encrypted(Payload):
    """HE: CKKS ciphertexts of a (rows, dim) float batch, one blob per ciphertext."""

    kind: ClassVar[str] = jobs.FEATURES
    cts: list[bytes] = field(default_factory=list)
    shape: tuple[int, int] = (0, 0)

    def to_arrays(self) -> tuple[Arrays, dict]:
        return {**blob_arrays("ct", self.cts), "shape": np.array(self.shape, dtype=np.int64)}, {}

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Encrypted":
        shape = array(arrays, "shape", INT, 1)
        if shape.shape[0] != 2 or (shape < 0).any():
            raise bad("array 'shape': expected two non-negative sizes")
        return cls(blobs(arrays, "ct"), (int(shape[0]), int(shape[1])))


@dataclass
class Fused(Encrypted):
    """HE: the homomorphic sum of the stations' encrypted features, for the label holder."""

    kind: ClassVar[str] = jobs.FUSED
    train: bool = False
    idx: Optional[np.ndarray] = None

    def to_arrays(self) -> tuple[Arrays, dict]:
        arrays, _ = super().to_arrays()
        if self.idx is not None:
            arrays["idx"] = self.idx.astype(np.int64)
        return arrays, {"train": self.train}

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Fused":
        enc = Encrypted.from_arrays(arrays, meta)
        return cls(enc.cts, enc.shape, bool(meta.get("train")), optional(arrays, "idx", INT, 1, enc.shape[0]))


@dataclass
class Predictions(Payload):
    """Predicted class indices; as PREDICTIONS an HE holder's answer, as SCORE the test set to score."""

    kind: ClassVar[str] = jobs.PREDICTIONS
    pred: np.ndarray = None

    def to_arrays(self) -> tuple[Arrays, dict]:
        return {"pred": self.pred.astype(np.int64)}, {}

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Predictions":
        return cls(array(arrays, "pred", INT, 1))


@dataclass
class Score(Predictions):
    kind: ClassVar[str] = jobs.SCORE


@dataclass
class Metrics(Payload):
    kind: ClassVar[str] = jobs.METRICS
    metrics: dict = field(default_factory=dict)

    def to_arrays(self) -> tuple[Arrays, dict]:
        return {}, {k: self.metrics[k] for k in METRIC_KEYS}

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Metrics":
        missing = [k for k in METRIC_KEYS if k not in meta]
        if missing:
            raise bad(f"meta: missing {', '.join(missing)}")
        return cls({k: meta[k] for k in METRIC_KEYS})
