"""One committed document per party (aggregator, label holder) and the in-memory rollback point.

``SnapshotStore`` keeps only the last committed round on disk: the aggregator's head and job
state, the label holder's head. ``Committed`` is the copy in memory that a failed round attempt
rolls back to without touching the disk.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Optional

import torch

from feddiff.state.atomic import atomic_torch_save, load_torch


class SnapshotStore:
    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    def load(self) -> Optional[dict]:
        """The committed document, or None before the first commit."""
        return load_torch(self.path, "state") if self.path.exists() else None

    def commit(self, doc: dict) -> None:
        atomic_torch_save(doc, self.path)


class Committed:
    """Module weights and optimiser state as of the last commits, for rollback of an attempt.

    Keeps the last ``keep`` committed rounds: a party that committed round r while the
    aggregator crashed before committing it must be able to run round r again from r - 1."""

    def __init__(self, module: torch.nn.Module, optimizer: torch.optim.Optimizer, keep: int = 3) -> None:
        self.module, self.optimizer, self.keep = module, optimizer, keep
        self.saved: dict[int, tuple[dict, dict]] = {}
        self.mark(-1)

    def mark(self, rnd: int = -1) -> None:
        """The current state is what round ``rnd`` committed."""
        self.saved[rnd] = (copy.deepcopy(self.module.state_dict()), copy.deepcopy(self.optimizer.state_dict()))
        self.saved = {r: v for r, v in self.saved.items() if r >= rnd - self.keep + 1}

    def restore(self, rnd: Optional[int] = None) -> None:
        """Back to round ``rnd``'s commit, or to the latest one when it is not kept."""
        head, opt = self.saved.get(rnd) or self.saved[max(self.saved)]
        self.module.load_state_dict(head)
        self.optimizer.load_state_dict(opt)
