"""One dataclass per message kind of a federated job: the only code that names payload arrays.

``to_arrays`` gives (arrays, meta) for ``Channel.send``; ``from_arrays`` reads a received
payload and raises ``EnvelopeError('bad_payload')`` naming the array that is missing or has the
wrong dtype or shape. Round, step and attempt travel in the envelope header and the exchange
(``feddiff.protocol.exchange``), not here. The HE kinds are in ``he_messages``; the sequence of
a job is drawn in docs/protocol.md. To add a kind: a dataclass here with its ``kind`` constant
from ``jobs``, then a handler on the party that receives it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Optional

import numpy as np

from feddiff.model.comm import Packed
from feddiff.protocol import jobs
from feddiff.protocol.payload import CODES, FLOAT, INT, array, bad, blob_arrays, blobs, number, optional, with_prefix

import torch

Arrays = dict[str, np.ndarray]


class Payload:
    kind: ClassVar[str]

    def to_arrays(self) -> tuple[Arrays, dict]:
        return {}, {}

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Payload":
        return cls()


@dataclass
class Samples:
    """Pixels of the shared grid: the job's training (or test) samples, never their labels."""

    rows: np.ndarray
    cols: np.ndarray

    def to_arrays(self, prefix: str) -> Arrays:
        return {f"{prefix}_rows": self.rows.astype(np.int32), f"{prefix}_cols": self.cols.astype(np.int32)}

    @classmethod
    def read(cls, arrays: Arrays, prefix: str) -> "Samples":
        rows = array(arrays, f"{prefix}_rows", INT, 1)
        return cls(rows.astype(np.int64), array(arrays, f"{prefix}_cols", INT, 1, rows.shape[0]).astype(np.int64))


@dataclass
class Hello(Payload):
    """A party is up (``fresh`` on its first hello: it lost any round in flight). A label holder
    adds its train/test samples and, in HE mode, the public CKKS context."""

    kind: ClassVar[str] = jobs.HELLO
    meta: dict = field(default_factory=dict)
    train: Optional[Samples] = None
    test: Optional[Samples] = None
    public_ctx: Optional[bytes] = None

    def to_arrays(self) -> tuple[Arrays, dict]:
        arrays: Arrays = {}
        if self.train is not None and self.test is not None:
            arrays.update({**self.train.to_arrays("train"), **self.test.to_arrays("test")})
        if self.public_ctx is not None:
            arrays.update(blob_arrays("ctx", [self.public_ctx]))
        return arrays, self.meta

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Hello":
        has = "train_rows" in arrays
        ctx = blobs(arrays, "ctx")[0] if "ctx_data" in arrays else None
        return cls(dict(meta), Samples.read(arrays, "train") if has else None, Samples.read(arrays, "test") if has else None, ctx)

    @property
    def fresh(self) -> bool:
        return bool(self.meta.get("fresh"))


@dataclass
class Job(Payload):
    """Be at ``round`` (rolling back if needed); stations get the training samples to pretrain on."""

    kind: ClassVar[str] = jobs.JOB
    round: int = 0
    train: Optional[Samples] = None
    public_ctx: Optional[bytes] = None

    def to_arrays(self) -> tuple[Arrays, dict]:
        arrays = self.train.to_arrays("train") if self.train is not None else {}
        if self.public_ctx is not None:
            arrays.update(blob_arrays("ctx", [self.public_ctx]))
        return arrays, {"round": self.round}

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Job":
        ctx = blobs(arrays, "ctx")[0] if "ctx_data" in arrays else None
        return cls(int(number(meta, "round", 0)), Samples.read(arrays, "train") if "train_rows" in arrays else None, ctx)


@dataclass
class Ready(Payload):
    kind: ClassVar[str] = jobs.READY


@dataclass
class Forward(Payload):
    """Features of these samples, please; ``own`` (HE) marks, per modality, the rows this
    station answers for when it is not all of them."""

    kind: ClassVar[str] = jobs.FORWARD
    rows: np.ndarray = None
    cols: np.ndarray = None
    train: bool = False
    dihedral: Optional[np.ndarray] = None
    own: dict[str, np.ndarray] = field(default_factory=dict)

    def to_arrays(self) -> tuple[Arrays, dict]:
        arrays = {"rows": self.rows.astype(np.int32), "cols": self.cols.astype(np.int32)}
        if self.dihedral is not None:
            arrays["dihedral"] = self.dihedral.astype(np.uint8)
        arrays.update({f"own_{m}": v.astype(np.uint8) for m, v in self.own.items()})
        return arrays, {"train": self.train}

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Forward":
        rows = array(arrays, "rows", INT, 1)
        n = rows.shape[0]
        own = {m: array(arrays, f"own_{m}", INT + "b", 1, n).astype(bool) for m in with_prefix(arrays, "own_")}
        return cls(rows, array(arrays, "cols", INT, 1, n), bool(meta.get("train")), optional(arrays, "dihedral", INT, 1, n), own)


@dataclass
class Features(Payload):
    """Per modality, the communication module's wire form of the requested samples' codes."""

    kind: ClassVar[str] = jobs.FEATURES
    packed: dict[str, Packed] = field(default_factory=dict)

    def to_arrays(self) -> tuple[Arrays, dict]:
        arrays: Arrays = {}
        for m, p in self.packed.items():
            arrays[f"codes_{m}"], arrays[f"scale_{m}"] = p.codes.numpy(), p.scale.numpy()
        return arrays, {}

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Features":
        out = {}
        for m in with_prefix(arrays, "codes_"):
            codes = array(arrays, f"codes_{m}", CODES, 2)
            scale = array(arrays, f"scale_{m}", FLOAT, 1, codes.shape[0])
            out[m] = Packed(torch.from_numpy(codes), torch.from_numpy(scale).float())
        return cls(out)


@dataclass
class Backward(Payload):
    """The gradient of each returned code (or, HE, of the fused sum ``z``) for one step."""

    kind: ClassVar[str] = jobs.BACKWARD
    grads: dict[str, np.ndarray] = field(default_factory=dict)

    def to_arrays(self) -> tuple[Arrays, dict]:
        return {f"grad_{m}": g for m, g in self.grads.items()}, {}

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Backward":
        return cls({m: array(arrays, f"grad_{m}", FLOAT, 2) for m in with_prefix(arrays, "grad_")})


@dataclass
class GetWeights(Payload):
    """Horizontal mode: send your branch weights; ``samples``/``totals`` weight the average."""

    kind: ClassVar[str] = jobs.GET_WEIGHTS
    samples: dict[str, int] = field(default_factory=dict)
    totals: dict[str, int] = field(default_factory=dict)

    def to_arrays(self) -> tuple[Arrays, dict]:
        return {}, {"samples": self.samples, "totals": self.totals}

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "GetWeights":
        samples, totals = meta.get("samples", {}), meta.get("totals", {})
        if not isinstance(samples, dict) or not isinstance(totals, dict):
            raise bad("meta 'samples'/'totals': expected objects")
        return cls({k: int(v) for k, v in samples.items()}, {k: int(v) for k, v in totals.items()})


@dataclass
class Weights(Payload):
    """Per modality, parameter name -> array (plaintext), or the encrypted shares (HE) with
    their layout; ``samples`` is the sender's training sample count."""

    kind: ClassVar[str] = jobs.WEIGHTS
    params: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    samples: int = 0
    encrypted: dict[str, list[bytes]] = field(default_factory=dict)
    layouts: dict[str, list] = field(default_factory=dict)

    def to_arrays(self) -> tuple[Arrays, dict]:
        arrays = weight_arrays(self.params, self.encrypted, "wct")
        meta = {"samples": self.samples, **({"he_layout": self.layouts} if self.layouts else {})}
        return arrays, meta

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Weights":
        params, enc = read_weights(arrays, "wct")
        layouts = meta.get("he_layout", {})
        return cls(params, int(number(meta, "samples", 0)), enc, layouts if isinstance(layouts, dict) else {})


@dataclass
class Commit(Payload):
    """Commit the round; carries the averaged weights (plaintext, or the encrypted sum in HE) and
    how many gradient steps were sent, which the station checks before committing."""

    kind: ClassVar[str] = jobs.COMMIT
    backward_steps: Optional[int] = None
    params: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    encrypted: dict[str, list[bytes]] = field(default_factory=dict)

    def to_arrays(self) -> tuple[Arrays, dict]:
        meta = {} if self.backward_steps is None else {"backward_steps": self.backward_steps}
        return weight_arrays(self.params, self.encrypted, "wsum"), meta

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Commit":
        params, enc = read_weights(arrays, "wsum")
        steps = number(meta, "backward_steps")
        return cls(None if steps is None else int(steps), params, enc)


@dataclass
class Committed(Payload):
    kind: ClassVar[str] = jobs.COMMITTED
    refused: Optional[str] = None

    def to_arrays(self) -> tuple[Arrays, dict]:
        return {}, ({"refused": self.refused} if self.refused else {})

    @classmethod
    def from_arrays(cls, arrays: Arrays, meta: dict) -> "Committed":
        return cls(str(meta["refused"]) if meta.get("refused") else None)


@dataclass
class Done(Payload):
    kind: ClassVar[str] = jobs.DONE


def weight_arrays(params: dict[str, dict[str, np.ndarray]], encrypted: dict[str, list[bytes]], prefix: str) -> Arrays:
    arrays = {f"w_{m}/{k}": np.asarray(v) for m, sd in params.items() for k, v in sd.items()}
    for m, cts in encrypted.items():
        arrays.update(blob_arrays(f"{prefix}_{m}", cts))
    return arrays


def read_weights(arrays: Arrays, prefix: str) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, list[bytes]]]:
    params: dict[str, dict[str, np.ndarray]] = {}
    for name, v in with_prefix(arrays, "w_").items():
        m, sep, k = name.partition("/")
        if not sep or not k or v.dtype.kind != "f":
            raise bad(f"array 'w_{name}': expected w_<modality>/<param> of floats")
        params.setdefault(m, {})[k] = v
    enc = {name[: -len("_data")]: blobs(arrays, f"{prefix}_{name[: -len('_data')]}") for name in with_prefix(arrays, f"{prefix}_") if name.endswith("_data")}
    return params, enc
