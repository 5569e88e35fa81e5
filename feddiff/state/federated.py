"""A finished federated job's model parts, read through the parties' stores.

No party held the whole model during training: each station kept its denoiser(s) and branch,
the aggregator its head. Export assembles the deployable classifier from exactly what each
party committed, through the same stores that wrote it.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from feddiff.errors import FedDiffError
from feddiff.state.layout import PRETRAINED, aggregator_store, station_store

log = logging.getLogger("feddiff.state")


@dataclass
class StationParts:
    """One modality's parts as its station committed them."""

    stats: dict  # BandStats.to_dict()
    unet: dict  # denoiser state_dict
    branch: dict  # trainable branch state_dict (communication module and FR layers)


def station_parts(party_dir: Path, modalities: list[str]) -> dict[str, StationParts]:
    """Per modality, the station's stage-1 state and its latest committed round."""
    store = station_store(party_dir)
    if not store.has_doc(PRETRAINED):
        raise FedDiffError(f"{store.doc_path(PRETRAINED)}: not found (did the federated job finish?)")
    pre = store.load_doc(PRETRAINED)
    rnd = store.latest()
    if rnd is None:
        raise FedDiffError(f"{party_dir}: no round_<r>.pt (the station never committed a round)")
    doc = store.load_round(rnd)
    log.info("station %s: round %d", Path(party_dir).name, rnd)
    return {m: StationParts(pre["stats"][m], pre["unet"][m], doc["branches"][m]) for m in modalities}


def aggregator_head(party_dir: Path) -> dict:
    """The fusion head's state_dict as the aggregator last committed it."""
    store = aggregator_store(party_dir)
    doc = store.load()
    if doc is None:
        raise FedDiffError(f"{store.path}: not found (did the federated job finish?)")
    return doc["head"]
