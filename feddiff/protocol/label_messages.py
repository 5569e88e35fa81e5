"""Message kinds between the aggregator and a label holder that is not the aggregator, and the
encrypted features of HE mode (see ``messages`` for the conventions).

A station as label holder gets LOGITS and returns CE_GRAD; the HE third party gets FUSED (the
ciphertext sum of the stations' features) and returns HEAD_GRAD or PREDICTIONS; either scores
the test predictions (SCORE -> METRICS), because only it has the test labels.

In HE mode nothing label-dependent crosses the aggregator in the clear: HEAD_GRAD carries one
relay box per station (``SealedHeadGrad``: the gradient sealed to that station, which the
aggregator forwards unopened as ``SealedBackward``), PREDICTIONS only how many were made
(``Predicted``: the holder keeps them), and SCORE no predictions (the holder scores its own).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import numpy as np

from feddiff.protocol import jobs
from feddiff.protocol.messages import Arrays, Payload
from feddiff.protocol.payload import FLOAT, INT, array, bad, blob_arrays, blobs, number, optional

METRIC_KEYS = ("oa", "aa", "kappa", "per_class", "confusion")
LABEL_DP = "label_dp"  # optional: the label holder's privacy ledger (feddiff.privacy), published with the metrics


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
class SealedHeadGrad(Payload):
    """HE: per station, ``grad_z`` sealed to it by the label holder (``crypto.relay_box``); the
    loss and accuracy of the step, or None where the holder withholds them (label DP)."""

    kind: ClassVar[str] = jobs.HEAD_GRAD
    boxes: dict[str, bytes] = field(default_factory=dict)
    ce: Optional[float] = None
    correct: Optional[int] = None
    total: Optional[float] = None

    def to_arrays(self) -> tuple[Arrays, dict]:
        names = sorted(self.boxes)
        stats = {k: v for k, v in (("ce", self.ce), ("correct", self.correct), ("total", self.total)) if v is not None}
        return blob_arrays("box", [self.boxes[n] for n in names]), {"to": names, **stats}

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "SealedHeadGrad":
        names, boxes = meta.get("to"), blobs(arrays, "box")
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names) or len(names) != len(boxes) or len(set(names)) != len(names):
            raise bad("meta 'to': expected one distinct station name per box")
        correct = number(meta, "correct")
        return cls(dict(zip(names, boxes)), number(meta, "ce"), None if correct is None else int(correct), number(meta, "total"))


@dataclass
class SealedBackward(Payload):
    """HE: a station's BACKWARD as relayed by the aggregator: the label holder's box, unopened."""

    kind: ClassVar[str] = jobs.BACKWARD
    box: bytes = b""

    def to_arrays(self) -> tuple[Arrays, dict]:
        return blob_arrays("box", [self.box]), {}

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "SealedBackward":
        boxes = blobs(arrays, "box")
        if len(boxes) != 1:
            raise bad(f"array 'box': expected one relay box, got {len(boxes)}")
        return cls(boxes[0])


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
    """HE: the homomorphic sum of the stations' encrypted features, for the label holder; in
    training with the sample indices and the stations to seal the gradient to, in evaluation
    with the pixels (rows, cols) whose predictions the holder keeps."""

    kind: ClassVar[str] = jobs.FUSED
    train: bool = False
    idx: Optional[np.ndarray] = None
    to: list[str] = field(default_factory=list)
    rows: Optional[np.ndarray] = None
    cols: Optional[np.ndarray] = None

    def to_arrays(self) -> tuple[Arrays, dict]:
        arrays, _ = super().to_arrays()
        for name in ("idx", "rows", "cols"):
            if getattr(self, name) is not None:
                arrays[name] = getattr(self, name).astype(np.int64)
        return arrays, {"train": self.train, "to": list(self.to)}

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Fused":
        enc = Encrypted.from_arrays(arrays, meta)
        to = meta.get("to", [])
        if not isinstance(to, list) or not all(isinstance(n, str) for n in to):
            raise bad("meta 'to': expected a list of station names")
        n = enc.shape[0]
        return cls(enc.cts, enc.shape, bool(meta.get("train")), optional(arrays, "idx", INT, 1, n), to,
                   optional(arrays, "rows", INT, 1, n), optional(arrays, "cols", INT, 1, n))


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
class Predicted(Payload):
    """HE: the label holder made (and kept) ``n`` predictions of the requested batch."""

    kind: ClassVar[str] = jobs.PREDICTIONS
    n: int = 0

    def to_arrays(self) -> tuple[Arrays, dict]:
        return {}, {"n": self.n}

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Predicted":
        return cls(int(number(meta, "n", 0)))


@dataclass
class Score(Predictions):
    kind: ClassVar[str] = jobs.SCORE


@dataclass
class Metrics(Payload):
    kind: ClassVar[str] = jobs.METRICS
    metrics: dict = field(default_factory=dict)

    def to_arrays(self) -> tuple[Arrays, dict]:
        return {}, {k: self.metrics[k] for k in (*METRIC_KEYS, LABEL_DP) if k in self.metrics}

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Metrics":
        missing = [k for k in METRIC_KEYS if k not in meta]
        if missing:
            raise bad(f"meta: missing {', '.join(missing)}")
        dp = meta.get(LABEL_DP)
        if dp is not None and not isinstance(dp, dict):
            raise bad(f"meta {LABEL_DP!r}: expected an object")
        return cls({k: meta[k] for k in METRIC_KEYS} | ({LABEL_DP: dp} if dp is not None else {}))
