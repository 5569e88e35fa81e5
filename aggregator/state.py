"""The aggregator's durable job state, committed atomically after every round.

What is on disk is always a whole committed round: the head's weights, its optimiser, the
metrics so far, the round/step ledger and the channel's sequence number. A crash at any moment
leaves either the previous round or the new one, never a mixture.
"""

from __future__ import annotations

import json
import os
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

import torch

from feddiff.errors import FedDiffError
from feddiff.model.checkpoint import atomic_torch_save


@dataclass
class JobState:
    job: str
    round: int = 0  # the next round to run; rounds < round are committed
    attempt: int = 0
    seq: int = 0
    history: list[dict] = field(default_factory=list)
    ledger: list[dict] = field(default_factory=list)  # one row per committed round: steps applied
    finished: bool = False
    final: dict = field(default_factory=dict)


class StateStore:
    def __init__(self, state_dir: Path) -> None:
        self.dir = Path(state_dir)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / "aggregator_state.pt"

    def load(self, job: str) -> tuple[Optional[JobState], Optional[dict], Optional[dict]]:
        """(state, head state_dict, optimiser state) or (None, None, None) for a new job."""
        if not self.path.exists():
            return None, None, None
        try:
            ck = torch.load(self.path, weights_only=True)
        except Exception as exc:
            raise FedDiffError(f"{self.path}: unreadable aggregator state ({type(exc).__name__}); move it away to start over") from None
        state = JobState(**json.loads(ck["state"]))
        if state.job != job:
            raise FedDiffError(f"{self.path}: state belongs to job {state.job!r}, not {job!r}")
        return state, ck["head"], ck["optimizer"]

    def commit(self, state: JobState, head: dict, optimizer: dict) -> None:
        atomic_torch_save({"state": json.dumps(asdict(state)), "head": head, "optimizer": optimizer}, self.path)


def write_json_atomic(path: Path, doc: dict) -> None:
    """Temp file + rename, like the state: a full disk leaves the previous file and one line."""
    path = Path(path)
    text = json.dumps(doc, indent=2, default=str)
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except OSError as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        raise FedDiffError(f"{path}: cannot write ({exc.strerror or exc}); the previous file is unchanged") from None
