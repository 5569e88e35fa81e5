"""Where each party's store lives inside a job's ``state_dir``: the one place naming the files.

Roles open their stores through these functions and export reads a finished job through
``feddiff.state.federated``, so a change of file layout is made here and nowhere else.
"""

from __future__ import annotations

from pathlib import Path

from feddiff.state.rounds import RoundStore
from feddiff.state.snapshot import SnapshotStore

STATION_META = "station.json"
PRETRAINED = "pretrained"  # a station's stage-1 state: band statistics and denoisers
AGGREGATOR_STATE = "aggregator_state.pt"
LABEL_HOLDER_STATE = "label_holder.pt"


def station_store(party_dir: Path) -> RoundStore:
    return RoundStore(party_dir, STATION_META)


def aggregator_store(party_dir: Path) -> SnapshotStore:
    return SnapshotStore(Path(party_dir) / AGGREGATOR_STATE)


def label_holder_store(party_dir: Path) -> SnapshotStore:
    return SnapshotStore(Path(party_dir) / LABEL_HOLDER_STATE)
