"""The aggregator's durable job state, committed atomically after every round.

What is on disk is always a whole committed round: the head's weights, its optimiser, the
metrics so far, the round/step ledger and the channel's sequence number. A crash at any moment
leaves either the previous round or the new one, never a mixture.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional

from feddiff.errors import FedDiffError
from feddiff.state.layout import aggregator_store


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
    """The job state, head and optimiser as one committed document (``feddiff.state``)."""

    def __init__(self, state_dir: Path) -> None:
        self.store = aggregator_store(state_dir)
        self.path = self.store.path

    def load(self, job: str) -> tuple[Optional[JobState], Optional[dict], Optional[dict]]:
        """(state, head state_dict, optimiser state) or (None, None, None) for a new job."""
        ck = self.store.load()
        if ck is None:
            return None, None, None
        state = JobState(**json.loads(ck["state"]))
        if state.job != job:
            raise FedDiffError(f"{self.path}: state belongs to job {state.job!r}, not {job!r}")
        return state, ck["head"], ck["optimizer"]

    def commit(self, state: JobState, head: dict, optimizer: dict) -> None:
        self.store.commit({"state": json.dumps(asdict(state)), "head": head, "optimizer": optimizer})
