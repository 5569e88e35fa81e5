"""Plain feature exchange: FORWARD to the stations of a batch, their codes back as per-modality
batch tensors, and each station's code gradients back as BACKWARD.

Which station answers for which sample is computed once per batch (``jobs.owners``) and kept
with the request, so assembling the replies and routing the gradients reuse it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator

import numpy as np
import torch

from feddiff.model.comm import dequantise
from feddiff.protocol import jobs
from feddiff.protocol.exchange import pipelined
from feddiff.protocol.messages import Backward, Features, Forward

from aggregator.link import Link, RoundFailed


@dataclass
class Pending:
    """A requested batch: per modality the owning stations' sample masks, and per station the
    union of its masks (the samples it was asked for)."""

    owners: dict[str, dict[str, np.ndarray]]
    masks: dict[str, np.ndarray]


def ownership(clients: dict, modalities: list[str], rows: np.ndarray, cols: np.ndarray) -> Pending:
    owners = {m: jobs.owners(clients, m, rows, cols) for m in modalities}
    masks: dict[str, np.ndarray] = {}
    for per_station in owners.values():
        for c, mask in per_station.items():
            masks[c] = masks.get(c, np.zeros(rows.shape[0], bool)) | mask
    return Pending(owners, masks)


class PlainFeatures:
    def __init__(self, link: Link) -> None:
        self.link = link
        self.modalities = jobs.modalities_of(link.clients)

    def request(self, rnd: int, step: int, batch: tuple, train: bool) -> Pending:
        rows, cols, dih = batch
        pending = ownership(self.link.clients, self.modalities, rows, cols)
        for c, mask in pending.masks.items():
            self.link.send(c, Forward(rows[mask], cols[mask], train, None if dih is None else dih[mask]), round=rnd, step=step)
        return pending

    def receive(self, rnd: int, step: int, batch: tuple, pending: Pending) -> tuple[dict[str, torch.Tensor], Pending]:
        """Every station's dequantised codes in per-modality batch tensors, in batch order."""
        replies = self.link.collect(Features, set(pending.masks), rnd, step)
        n = batch[0].shape[0]
        wire: dict[str, torch.Tensor] = {}
        for m in self.modalities:
            for c, own in pending.owners[m].items():
                packed = replies[c].packed.get(m)
                if packed is None or packed.codes.shape[0] != int(pending.masks[c].sum()):
                    raise RoundFailed("bad_reply", [c])
                codes = dequantise(packed)
                if m not in wire:
                    wire[m] = torch.zeros(n, codes.shape[1])
                pos = np.flatnonzero(own[pending.masks[c]])
                wire[m][torch.from_numpy(np.flatnonzero(own))] = codes[torch.from_numpy(pos)]
        return wire, pending

    def stream(self, rnd: int, batches: list[tuple], train: bool) -> Iterator[tuple[dict[str, torch.Tensor], Pending]]:
        return pipelined(batches, lambda step, b: self.request(rnd, step, b, train), lambda step, b, p: self.receive(rnd, step, b, p))

    def backward(self, rnd: int, step: int, pending: Pending, leaves: dict[str, torch.Tensor]) -> None:
        for c, mask in pending.masks.items():
            sel = torch.from_numpy(mask)
            grads = {m: leaves[m].grad[sel].numpy() for m in self.link.clients[c].modalities if m in leaves}
            self.link.send(c, Backward(grads), round=rnd, step=step)
