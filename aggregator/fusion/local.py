"""The FR-stream fusion head at the aggregator: labels here (``LocalLabels``) or at a station
(``StationLabels``, which asks the station for the cross-entropy gradient only: softmax minus
one-hot, which shows each label unless the station's label DP noises it).

Per step: codes in (``PlainFeatures``), head and loss here, code gradients out. Both give the
gradient of the same loss, so they train the same model.
"""

from __future__ import annotations

import logging
from typing import Iterator, Optional

import numpy as np
import torch

from feddiff.config import Config
from feddiff.data.sources import PixelSet
from feddiff.metrics import classification_metrics
from feddiff.model.losses import feddiff_loss, label_free_terms
from feddiff.model.net import build_head
from feddiff.model.optim import batches, cosine_lr, load_optimizer_state, make_optimizer, set_lr, step_generator
from feddiff.protocol.label_messages import LABEL_DP, CeGrad, Logits
from feddiff.protocol.messages import Hello
from feddiff.state.snapshot import Committed

from aggregator.fusion.base import Step, remote_score
from aggregator.fusion.plain import PlainFeatures
from aggregator.labels import Labels
from aggregator.link import Link, RoundFailed

log = logging.getLogger("feddiff.aggregator")


class LocalLabels:
    public_ctx: Optional[bytes] = None

    def __init__(self, cfg: Config, link: Link) -> None:
        self.cfg, self.link = cfg, link
        self.features = PlainFeatures(link)
        self.head: Optional[torch.nn.Module] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None

    def build(self, num_classes: int, stored: Optional[tuple[dict, dict]]) -> None:
        cfg = self.cfg
        self.head = build_head(self.features.modalities, num_classes, cfg.model, cfg.train.seed)
        self.optimizer = make_optimizer([self.head], cfg.train)
        if stored is not None and stored[0] is not None:
            self.head.load_state_dict(stored[0])
            load_optimizer_state(self.optimizer, stored[1], f"aggregator {cfg.federation.job}")
        self.committed = Committed(self.head, self.optimizer, keep=1)
        if self.link.holder is None and cfg.train.label_dp_sigma > 0:
            log.warning("train.label_dp_sigma is ignored: the aggregator holds the labels, so no label holder returns gradients to noise")

    def on_holder_hello(self, hello: Hello) -> None:
        pass

    def begin_round(self, rnd: int) -> None:
        t = self.cfg.train
        set_lr(self.optimizer, cosine_lr(t.lr, rnd, t.epochs))

    def steps(self, rnd: int, plan: list, train: PixelSet) -> Iterator[Step]:
        self.head.train()
        y_all = torch.from_numpy(train.labels).long()
        stream = self.features.stream(rnd, [(train.rows[idx], train.cols[idx], dih) for idx, dih in plan], True)
        for step, ((idx, _), (wire, pending)) in enumerate(zip(plan, stream)):
            self.link.status.update(phase="training", round=rnd, step=step, steps=len(plan))
            leaves = {m: w.clone().requires_grad_(True) for m, w in wire.items()}
            t = self.cfg.train
            logits, singles = self.head(leaves, t.mse_weight > 0, step_generator(t.seed, rnd, step))
            self.optimizer.zero_grad(set_to_none=True)
            parts, ok = self.loss(rnd, step, idx, logits, singles, y_all)
            self.optimizer.step()
            self.features.backward(rnd, step, pending, leaves)
            yield idx, parts, ok

    def loss(self, rnd: int, step: int, idx: np.ndarray, logits: torch.Tensor, singles: dict, y_all: torch.Tensor) -> tuple[dict, int]:
        """Backpropagates the loss into the head and the leaves; returns (loss parts, correct)."""
        t = self.cfg.train
        loss, parts = feddiff_loss(logits, singles, y_all[idx], self.head.named_parameters(), t.mse_weight, t.l2, t.label_smoothing)
        loss.backward()
        return parts, int((logits.argmax(1) == y_all[idx]).sum())

    @torch.no_grad()
    def predict(self, rows: np.ndarray, cols: np.ndarray, tag: int) -> np.ndarray:
        """Same path as training, without gradients; ``tag`` keeps eval steps apart from training."""
        self.head.eval()
        out = np.empty(rows.shape[0], dtype=np.int64)
        parts = list(batches(rows.shape[0], self.cfg.train.eval_batch, None))
        stream = self.features.stream(tag, [(rows[idx], cols[idx], None) for idx in parts], False)
        for i, (idx, (wire, _)) in enumerate(zip(parts, stream)):
            self.link.status.update(phase="evaluating", step=i)
            out[idx] = self.head(wire, False)[0].argmax(1).numpy()
        return out

    def score(self, pred: np.ndarray, labels: Labels, tag: int) -> dict:
        return classification_metrics(labels.test.labels, pred, len(labels.class_names))

    def state(self) -> tuple[dict, dict]:
        return self.head.state_dict(), self.optimizer.state_dict()

    def mark(self) -> None:
        self.committed.mark()

    def restore(self) -> None:
        self.committed.restore()


class StationLabels(LocalLabels):
    """A station holds the labels: it returns d CE / d logits; the label-free terms (MSE tying
    the single streams to the cross stream, L2) are computed here. Same gradient as local."""

    def loss(self, rnd: int, step: int, idx: np.ndarray, logits: torch.Tensor, singles: dict, y_all: torch.Tensor) -> tuple[dict, int]:
        t, holder = self.cfg.train, self.link.holder
        self.link.send(holder, Logits(logits.detach().numpy(), idx), round=rnd, step=step)
        reply: CeGrad = self.link.collect(CeGrad, {holder}, rnd, step)[holder]
        rest, mse, _ = label_free_terms(logits, singles, self.head.named_parameters(), t.mse_weight, t.l2)
        if reply.grad.shape != tuple(logits.shape):
            raise RoundFailed("bad_reply", [holder])
        torch.autograd.backward([logits, rest], [torch.from_numpy(reply.grad).float(), torch.ones(())])
        return {"ce": reply.ce, "mse": mse.item(), "total": reply.ce + rest.item()}, reply.correct

    def score(self, pred: np.ndarray, labels: Labels, tag: int) -> dict:
        metrics = remote_score(self.link, pred, tag)
        if LABEL_DP in metrics:
            self.link.status.update(label_dp=metrics[LABEL_DP])
        return metrics
