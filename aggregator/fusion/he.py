"""HE fusion: the aggregator only adds ciphertexts; a third party with the secret key holds the
labels and the (additive) head.

Per step: FORWARD of the whole batch to every involved station with ``own_<m>`` masks where a
station does not answer for all of it (it encrypts zeros there), the homomorphic sum of their
FEATURES as FUSED to the label holder, and its HEAD_GRAD's relay boxes, one per station, as each
station's BACKWARD (the gradient of a sum is each addend's; each box is sealed by the holder to
its station). In evaluation the holder keeps the predictions and scores them itself; this side
learns how many were made and the metrics the holder publishes. Nothing here can decrypt
anything, and nothing label-dependent arrives here per sample.
"""

from __future__ import annotations

import logging
from typing import Iterator, Optional

import numpy as np

from feddiff.config import Config
from feddiff.data.sources import PixelSet
from feddiff.model.optim import batches
from feddiff.protocol import jobs
from feddiff.protocol.exchange import pipelined
from feddiff.protocol.label_messages import LABEL_DP, Encrypted, Fused, Metrics, Predicted, Score, SealedBackward, SealedHeadGrad
from feddiff.protocol.messages import Forward, Hello

from aggregator.fusion.base import Step
from aggregator.fusion.plain import Pending, ownership
from aggregator.labels import Labels
from aggregator.link import Link, check_shape

log = logging.getLogger("feddiff.aggregator")


def own_masks(clients: dict, pending: Pending, n: int) -> dict[str, dict[str, np.ndarray]]:
    """Per station, the ``own`` masks of the modalities it does not answer for in full (regions,
    or a second station of a modality), so the ciphertext sum holds exactly one contribution per
    modality and sample."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for m, owned in pending.owners.items():
        for c in (c for c, s in clients.items() if m in s.modalities):
            mask = owned.get(c, np.zeros(n, bool))
            if not mask.all():
                out.setdefault(c, {})[m] = mask
    return out


NOT_HERE = -1  # a prediction the label holder kept: this side never learns it


def check_boxes(sender: str, reply: SealedHeadGrad, stations: set[str]) -> None:
    """ValueError unless the reply holds exactly one relay box per station of the step."""
    if set(reply.boxes) != stations:
        raise ValueError(f"head gradient from {sender}: boxes for {sorted(reply.boxes)}, expected {sorted(stations)}")


def check_predicted(sender: str, reply: Predicted, n: int) -> None:
    if reply.n != n:
        raise ValueError(f"predictions from {sender}: {reply.n} made, {n} requested")


def contributors(pending: Pending, n: int) -> np.ndarray:
    """Per sample, how many distinct stations put features into its ciphertext sum."""
    per_station: dict[str, np.ndarray] = {}
    for owned in pending.owners.values():
        for c, mask in owned.items():
            per_station[c] = per_station.get(c, np.zeros(n, bool)) | mask
    return sum((m.astype(np.int64) for m in per_station.values()), np.zeros(n, np.int64))


class HeThirdParty:
    def __init__(self, cfg: Config, link: Link) -> None:
        self.cfg, self.link = cfg, link
        self.modalities = jobs.modalities_of(link.clients)
        self.public_ctx: Optional[bytes] = None
        self.context = None

    def build(self, num_classes: int, stored: Optional[tuple[dict, dict]]) -> None:
        pass  # the head lives with the label holder

    def begin_round(self, rnd: int) -> None:
        pass  # so does its learning rate schedule

    def on_holder_hello(self, hello: Hello) -> None:
        """The label holder's signed public CKKS context: verified against the job's directory
        (signed by the configured holder, parameters pinned) before we add under it, and then
        relayed unchanged (signature included) in every station's JOB. A bad one is refused
        with one line; the holder's next hello may bring a good one."""
        if self.context is not None or hello.public_ctx is None:
            return
        from crypto.chain import verified_he_context
        from crypto.he import HEError

        try:
            self.context = verified_he_context(self.cfg, "aggregator", hello.public_ctx)
        except HEError as exc:
            log.error("refused the label holder's CKKS context: %s", exc)
            self.link.status.update(last_error=f"HE context refused: {exc}")
            return
        self.public_ctx = hello.public_ctx
        self.link.status.update(he_context_private=bool(self.context.is_private()))
        log.info("HE public context of label holder %s verified", self.cfg.federation.label_holder)

    def request(self, rnd: int, step: int, batch: tuple, train: bool) -> Pending:
        from crypto.he_context import check_contributors

        rows, cols, dih = batch
        pending = ownership(self.link.clients, self.modalities, rows, cols)
        own = own_masks(self.link.clients, pending, rows.shape[0])
        check_contributors(contributors(pending, rows.shape[0]), allow_single=self.cfg.federation.he_allow_single_contributor)
        for c in pending.masks:
            self.link.send(c, Forward(rows, cols, train, dih, own.get(c, {})), round=rnd, step=step)
        return pending

    def receive(self, rnd: int, step: int, batch: tuple, pending: Pending) -> tuple[Encrypted, Pending]:
        from crypto.he import add_ciphertexts, check_batch

        want = (batch[0].shape[0], self.cfg.model.he_dim)

        def check(sender: str, reply: Encrypted) -> None:
            check_shape(sender, "encrypted features", reply.shape, want)
            check_batch(self.context, reply.cts, want)

        replies = self.link.collect(Encrypted, set(pending.masks), rnd, step, check=check)
        total = None
        for c in pending.masks:
            total = replies[c] if total is None else Encrypted(add_ciphertexts(self.context, total.cts, replies[c].cts), total.shape)
        return total, pending

    def stream(self, rnd: int, batches_: list[tuple], train: bool) -> Iterator[tuple[Encrypted, Pending]]:
        return pipelined(batches_, lambda step, b: self.request(rnd, step, b, train), lambda step, b, p: self.receive(rnd, step, b, p))

    def steps(self, rnd: int, plan: list, train: PixelSet) -> Iterator[Step]:
        holder = self.link.holder
        stream = self.stream(rnd, [(train.rows[idx], train.cols[idx], dih) for idx, dih in plan], True)
        for step, ((idx, _), (fused, pending)) in enumerate(zip(plan, stream)):
            self.link.status.update(phase="training", round=rnd, step=step, steps=len(plan))
            stations = set(pending.masks)
            self.link.send(holder, Fused(fused.cts, fused.shape, True, idx, sorted(stations)), round=rnd, step=step)
            reply = self.link.collect(SealedHeadGrad, {holder}, rnd, step, check=lambda who, r: check_boxes(who, r, stations))[holder]
            for c in pending.masks:
                self.link.send(c, SealedBackward(reply.boxes[c]), round=rnd, step=step)
            parts = {k: v for k, v in (("total", reply.total), ("ce", reply.ce)) if v is not None}
            yield idx, parts, reply.correct or 0

    def predict(self, rows: np.ndarray, cols: np.ndarray, tag: int) -> np.ndarray:
        """Has the label holder classify the pixels and keep the classes: returns ``NOT_HERE``
        for each (the holder scores the test pixels and draws the map itself)."""
        holder = self.link.holder
        parts = list(batches(rows.shape[0], self.cfg.train.eval_batch, None))
        stream = self.stream(tag, [(rows[idx], cols[idx], None) for idx in parts], False)
        for i, (idx, (fused, _)) in enumerate(zip(parts, stream)):
            self.link.status.update(phase="evaluating", step=i)
            self.link.send(holder, Fused(fused.cts, fused.shape, False, rows=rows[idx], cols=cols[idx]), round=tag, step=i)
            self.link.collect(Predicted, {holder}, tag, i, check=lambda who, r: check_predicted(who, r, idx.size))
        return np.full(rows.shape[0], NOT_HERE, dtype=np.int64)

    def score(self, pred: np.ndarray, labels: Labels, tag: int) -> dict:
        """The metrics the label holder publishes for the predictions it kept (it is sent none)."""
        holder = self.link.holder
        self.link.send(holder, Score(np.zeros(0, np.int64)), round=tag)
        metrics = self.link.collect(Metrics, {holder}, tag)[holder].metrics
        if LABEL_DP in metrics:
            self.link.status.update(label_dp=metrics[LABEL_DP])
        return metrics

    def state(self) -> tuple[dict, dict]:
        return {}, {}

    def mark(self) -> None:
        pass

    def restore(self) -> None:
        pass
