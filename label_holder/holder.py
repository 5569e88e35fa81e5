"""The HE label holder's handlers: decrypt only the SUM of the stations' features, run the head.

The aggregator sends the homomorphic sum of the stations' encrypted features; the holder
decrypts that sum (never a single station's features), runs the additive head and the loss, and
returns the gradient of the sum, which is also each station's gradient, sealed to each station
(``crypto.relay_box``) so the aggregator relays bytes it cannot read; with label DP on
(``train.label_dp_sigma``) the head step and the returned rows are one noisy release
(``feddiff.privacy``). Evaluation predictions, the metrics and the map stay here
(``label_holder.evaluation``). It commits its head with the round and rolls back to the
committed head when an attempt is rerun.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from feddiff.config import Config, load_config
from feddiff.data.loader import load_labels
from feddiff.data.patches import labelled_pixels
from feddiff.model.losses import l2_penalty
from feddiff.model.optim import cosine_lr, load_optimizer_state, make_optimizer, set_lr
from feddiff.monitoring.feed import start_role_monitoring
from feddiff.protocol import jobs
from feddiff.privacy.label_dp import LabelPrivacy, noisy_head_step
from feddiff.protocol.label_messages import LABEL_DP, Fused, Metrics, Predicted, Score, SealedHeadGrad
from feddiff.protocol.messages import Committed, Commit, Done, Hello, Job, Ready, Samples
from feddiff.runtime import Incoming, Node, Route
from feddiff.runtime.node import serve
from feddiff.state.layout import label_holder_store
from feddiff.state.snapshot import Committed as CommittedState

from label_holder.evaluation import HeldPredictions

log = logging.getLogger("feddiff.labels")


def additive_head(dim: int, hidden: int, num_classes: int, seed: int) -> nn.Module:
    """Classifier on the fused (summed) features: the additive-fusion counterpart of the FR
    streams, since a ciphertext sum is the only interaction CKKS gives without relinearisation."""
    with torch.random.fork_rng():
        torch.manual_seed(seed + 11)
        return nn.Sequential(nn.SiLU(), nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, num_classes))


def holder_context(cfg: Config, name: str):
    """(secret context, signed public blob): the holder's persisted CKKS key from its key
    bundle, made once (0600) if missing, and the public context with the holder's signature
    that stations verify against the directory before they encrypt anything."""
    from crypto.chain import keys_dir
    from crypto.he_context import bundle_context, ensure_holder_context
    from crypto.keys import load_party, party_dir

    d = keys_dir(cfg)
    secret, public, sig = ensure_holder_context(party_dir(d, name), load_party(d, name))
    return secret, bundle_context(public, sig)


class LabelHolderApp:
    def __init__(self, cfg: Config, name: str, state_dir: Path) -> None:
        self.cfg, self.name = cfg, name
        train, test, self.class_names = load_labels(cfg)
        self.train, self.test = labelled_pixels(train), labelled_pixels(test)
        t = cfg.train
        self.privacy = LabelPrivacy(t.label_dp_sigma, t.label_dp_clip, t.label_dp_delta, state_dir, self.train[0].shape[0])
        self.held = HeldPredictions(train.shape, self.test, self.class_names, state_dir)
        self.relay = None  # the GradientSealer, from the node's security hooks
        torch.set_num_threads(cfg.train.threads)
        self.head = additive_head(cfg.model.he_dim, cfg.model.head_channels, len(self.class_names), cfg.train.seed)
        self.optimizer = make_optimizer([self.head], cfg.train)
        self.secret, self.public = holder_context(cfg, name)
        self.store = label_holder_store(state_dir)
        self.committed = CommittedState(self.head, self.optimizer)  # round -1: the fresh head
        doc = self.store.load()
        if doc is not None:
            self.head.load_state_dict(doc["head"])
            load_optimizer_state(self.optimizer, doc["optimizer"], "label holder")
            self.committed.mark(int(doc["round"]))
        self.node: Node

    def attach(self, node: Node) -> None:
        from crypto.chain import take_relay_box

        self.node = node
        self.relay = take_relay_box(node.security)
        log.info("label holder %s: %s", self.name, self.privacy.log_line())

    def persisted_seq(self) -> int:
        return 0

    def hello(self, fresh: bool) -> Hello:
        meta = {"client": self.name, "role": "labels", "classes": self.class_names, "fresh": fresh, "shape": []}
        return Hello(meta, Samples(self.train[0], self.train[1]), Samples(self.test[0], self.test[1]), self.public)

    def routes(self) -> dict[str, Route]:
        return {
            jobs.DONE: Route(Done, lambda msg: True, any_attempt=True),
            jobs.JOB: Route(Job, self.on_job, any_attempt=True),
            jobs.FUSED: Route(Fused, self.on_fused),
            jobs.COMMIT: Route(Commit, self.on_commit),
            jobs.SCORE: Route(Score, self.on_score),
        }

    def on_job(self, msg: Incoming) -> None:
        self.committed.restore(msg.round - 1)
        self.held.clear(msg.round)
        set_lr(self.optimizer, cosine_lr(self.cfg.train.lr, msg.round, self.cfg.train.epochs))
        self.node.send(Ready(), round=msg.round)

    def on_fused(self, msg: Incoming) -> None:
        from crypto.he import decrypt_batch
        from crypto.he_context import check_decrypted

        f: Fused = msg.payload
        z = torch.from_numpy(check_decrypted(decrypt_batch(self.secret, f.cts, f.shape))).float()
        if not f.train:
            self.predict(msg, f, z)
            return
        if f.idx is None or not f.to:
            raise ValueError("training FUSED without idx or stations to return the gradient to")
        if f.idx.size and (int(f.idx.min()) < 0 or int(f.idx.max()) >= self.train[2].shape[0]):
            raise ValueError(f"training FUSED names samples outside the {self.train[2].shape[0]} training samples")
        unknown = sorted(set(f.to) - set(self.cfg.federation.clients))
        if unknown:
            raise ValueError(f"training FUSED asks to seal the gradient for {', '.join(unknown)}, not stations of this job")
        if self.relay is None:
            raise ValueError("no relay box: an HE label holder needs its provisioned keys to seal gradients")
        grad_z, stats = self.train_step(z, torch.from_numpy(self.train[2][f.idx]).long(), f.idx)
        boxes = {s: self.relay.seal(grad_z, s, msg.round, msg.step, msg.attempt) for s in f.to}
        self.node.send(SealedHeadGrad(boxes, **stats), round=msg.round, step=msg.step)

    def train_step(self, z: torch.Tensor, y: torch.Tensor, idx: np.ndarray) -> tuple[np.ndarray, dict]:
        """One head step; returns the gradient to release and the statistics to publish (none
        under label DP: the loss and accuracy of a batch depend on its labels too)."""
        self.head.train()
        self.optimizer.zero_grad(set_to_none=True)
        l2 = self.cfg.train.l2 * l2_penalty(self.head.named_parameters())
        if self.privacy.on:
            p = self.privacy
            grads, grad_z, logits = noisy_head_step(self.head, z, y, p.sigma, p.clip, p.gen, self.cfg.train.label_smoothing)
            if l2.requires_grad:
                l2.backward()
            for k, param in self.head.named_parameters():
                param.grad = grads[k] if param.grad is None else param.grad + grads[k]
            self.optimizer.step()
            p.ledger.record(idx)
            log.debug("step ce %.4f (kept here under label DP)", F.cross_entropy(logits, y).item())
            return grad_z.numpy(), {}
        z.requires_grad_(True)
        logits = self.head(z)
        ce = F.cross_entropy(logits, y, label_smoothing=self.cfg.train.label_smoothing)
        loss = ce + l2
        loss.backward()
        self.optimizer.step()
        correct = int((logits.argmax(1) == y).sum())
        return z.grad.numpy(), {"ce": ce.item(), "correct": correct, "total": loss.item()}

    def predict(self, msg: Incoming, f: Fused, z: torch.Tensor) -> None:
        """Predictions stay here; the aggregator learns only how many were made."""
        if f.rows is None or f.cols is None:
            raise ValueError("evaluation FUSED without the pixels it is for")
        self.head.eval()
        with torch.no_grad():
            pred = self.head(z).argmax(1).numpy()
        self.held.keep(msg.round, f.rows, f.cols, pred)
        self.node.send(Predicted(int(pred.shape[0])), round=msg.round, step=msg.step)

    def on_commit(self, msg: Incoming) -> None:
        self.store.commit({"round": msg.round, "head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()})
        self.committed.mark(msg.round)
        self.node.send(Committed(), round=msg.round)
        log.info("round %d committed; %s", msg.round, self.privacy.log_line())

    def on_score(self, msg: Incoming) -> None:
        """Scores the predictions kept for this evaluation, never predictions sent to it."""
        if np.asarray(msg.payload.pred).size:
            raise ValueError("SCORE with predictions refused: the HE label holder scores only what it predicted itself")
        metrics = self.held.metrics(msg.round)
        privacy = self.privacy.summary()
        self.held.write_report(self.cfg.federation.job, metrics, privacy)
        log.info("evaluation %d: OA %.4f; %s", msg.round, metrics["oa"], self.privacy.log_line())
        self.node.send(Metrics({**metrics, LABEL_DP: privacy}), round=msg.round)


def main(args: argparse.Namespace) -> int:
    from crypto.chain import party_security

    mon = start_role_monitoring(load_config(args.config), args.id, peer="aggregator")
    try:
        return serve(args, lambda cfg, state_dir: LabelHolderApp(cfg, args.id, state_dir), party_security, mon.observers)
    finally:
        mon.close()
