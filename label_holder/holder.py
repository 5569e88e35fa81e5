"""The HE label holder's handlers: decrypt only the SUM of the stations' features, run the head.

The aggregator sends the homomorphic sum of the stations' encrypted features; the holder
decrypts that sum (never a single station's features), runs the additive head and the loss, and
returns the gradient of the sum, which is also each station's gradient. It commits its head
with the round and rolls back to the committed head when an attempt is rerun.
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
from feddiff.metrics import classification_metrics
from feddiff.model.losses import l2_penalty
from feddiff.model.optim import cosine_lr, load_optimizer_state, make_optimizer, set_lr
from feddiff.monitoring.feed import start_role_monitoring
from feddiff.protocol import jobs
from feddiff.protocol.label_messages import Fused, HeadGrad, Metrics, Predictions, Score
from feddiff.protocol.messages import Committed, Commit, Done, Hello, Job, Ready, Samples
from feddiff.runtime import Incoming, Node, Route
from feddiff.runtime.node import serve
from feddiff.state.layout import label_holder_store
from feddiff.state.snapshot import Committed as CommittedState

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
        self.node = node

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
        set_lr(self.optimizer, cosine_lr(self.cfg.train.lr, msg.round, self.cfg.train.epochs))
        self.node.send(Ready(), round=msg.round)

    def on_fused(self, msg: Incoming) -> None:
        from crypto.he import decrypt_batch
        from crypto.he_context import check_decrypted

        f: Fused = msg.payload
        z = torch.from_numpy(check_decrypted(decrypt_batch(self.secret, f.cts, f.shape))).float()
        if not f.train:
            self.head.eval()
            with torch.no_grad():
                pred = self.head(z).argmax(1).numpy()
            self.node.send(Predictions(pred), round=msg.round, step=msg.step)
            return
        if f.idx is None:
            raise ValueError("training FUSED without idx")
        z.requires_grad_(True)
        self.head.train()
        logits = self.head(z)
        y = torch.from_numpy(self.train[2][f.idx]).long()
        ce = F.cross_entropy(logits, y)
        loss = ce + self.cfg.train.l2 * l2_penalty(self.head.named_parameters())
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        correct = int((logits.argmax(1) == y).sum())
        self.node.send(HeadGrad(z.grad.numpy(), ce.item(), correct, loss.item()), round=msg.round, step=msg.step)

    def on_commit(self, msg: Incoming) -> None:
        self.store.commit({"round": msg.round, "head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()})
        self.committed.mark(msg.round)
        self.node.send(Committed(), round=msg.round)

    def on_score(self, msg: Incoming) -> None:
        pred = np.asarray(msg.payload.pred)
        self.node.send(Metrics(classification_metrics(self.test[2], pred, len(self.class_names))), round=msg.round)


def main(args: argparse.Namespace) -> int:
    from crypto.chain import party_security

    mon = start_role_monitoring(load_config(args.config), args.id, peer="aggregator")
    try:
        return serve(args, lambda cfg, state_dir: LabelHolderApp(cfg, args.id, state_dir), party_security, mon.observers)
    finally:
        mon.close()
