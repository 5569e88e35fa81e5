"""HE fusion: the aggregator only adds ciphertexts; a third party with the secret key holds the
labels and the (additive) head.

Per step: FORWARD of the whole batch to every involved station with ``own_<m>`` masks where a
station does not answer for all of it (it encrypts zeros there), the homomorphic sum of their
FEATURES as FUSED to the label holder, its HEAD_GRAD as every station's BACKWARD (the gradient
of a sum is each addend's). Nothing here can decrypt anything.
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
from feddiff.protocol.label_messages import Encrypted, Fused, HeadGrad, Predictions
from feddiff.protocol.messages import Backward, Forward, Hello

from aggregator.fusion.base import Step, remote_score
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


def check_predictions(sender: str, pred: np.ndarray, n: int) -> None:
    """ValueError unless ``pred`` is one non-negative class index per requested sample."""
    check_shape(sender, "predictions", pred.shape, (n,))
    if n and int(pred.min()) < 0:
        raise ValueError(f"predictions from {sender}: negative class index {int(pred.min())}")


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
            self.link.send(holder, Fused(fused.cts, fused.shape, True, idx), round=rnd, step=step)
            reply: HeadGrad = self.link.collect(HeadGrad, {holder}, rnd, step, check=lambda who, r: check_shape(who, "grad_z", r.grad.shape, fused.shape))[holder]
            for c in pending.masks:
                self.link.send(c, Backward({"z": reply.grad}), round=rnd, step=step)
            yield idx, {"total": reply.total, "ce": reply.ce}, reply.correct

    def predict(self, rows: np.ndarray, cols: np.ndarray, tag: int) -> np.ndarray:
        holder = self.link.holder
        out = np.empty(rows.shape[0], dtype=np.int64)
        parts = list(batches(rows.shape[0], self.cfg.train.eval_batch, None))
        stream = self.stream(tag, [(rows[idx], cols[idx], None) for idx in parts], False)
        for i, (idx, (fused, _)) in enumerate(zip(parts, stream)):
            self.link.status.update(phase="evaluating", step=i)
            self.link.send(holder, Fused(fused.cts, fused.shape, False), round=tag, step=i)
            out[idx] = self.link.collect(Predictions, {holder}, tag, i, check=lambda who, r: check_predictions(who, r.pred, idx.size))[holder].pred
        return out

    def score(self, pred: np.ndarray, labels: Labels, tag: int) -> dict:
        return remote_score(self.link, pred, tag)

    def state(self) -> tuple[dict, dict]:
        return {}, {}

    def mark(self) -> None:
        pass

    def restore(self) -> None:
        pass
