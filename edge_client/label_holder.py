"""The third-party label holder of HE mode: the only party with the CKKS secret key.

It holds the labels and the classifier head. The aggregator sends it the homomorphic SUM of the
stations' encrypted features; it decrypts only that sum (never a single station's features),
runs the head and the loss, and returns the gradient of the sum, which is also each station's
gradient. Run with ``feddiff edge --config job.yaml --id <federation.label_holder>`` when that
id is not a station.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from feddiff.config import Config
from feddiff.data.loader import load_labels
from feddiff.data.patches import labelled_pixels
from feddiff.metrics import classification_metrics
from feddiff.model.checkpoint import atomic_torch_save
from feddiff.model.losses import l2_penalty
from feddiff.model.train import cosine_lr, load_optimizer_state, make_optimizer, set_lr
from feddiff.protocol import jobs, topics
from feddiff.protocol.arrays import arrays_to_blobs, blobs_to_arrays
from feddiff.protocol.endpoint import fresh_seq, open_channel

from edge_client.agent import party_security

log = logging.getLogger("feddiff.labels")
IDLE_HELLO_S = 5.0


def additive_head(dim: int, hidden: int, num_classes: int, seed: int) -> nn.Module:
    """Classifier on the fused (summed) features: the additive-fusion counterpart of the FR
    streams, since a ciphertext sum is the only interaction CKKS gives without relinearisation."""
    with torch.random.fork_rng():
        torch.manual_seed(seed + 11)
        return nn.Sequential(nn.SiLU(), nn.Linear(dim, hidden), nn.SiLU(), nn.Linear(hidden, num_classes))


class LabelHolder:
    def __init__(self, cfg: Config, name: str, state_dir: Path) -> None:
        from crypto.he import make_secret_context, public_bytes

        self.cfg, self.name, self.job = cfg, name, cfg.federation.job
        self.state_dir = Path(state_dir)
        train, test, self.class_names = load_labels(cfg)
        self.train = labelled_pixels(train)
        self.test = labelled_pixels(test)
        torch.set_num_threads(cfg.train.threads)
        self.head = additive_head(cfg.model.he_dim, cfg.model.head_channels, len(self.class_names), cfg.train.seed)
        self.optimizer = make_optimizer([self.head], cfg.train)
        self.secret = make_secret_context()
        self.public = public_bytes(self.secret)
        self.stop_event = threading.Event()
        self.attempt = -1
        self.committed: dict[int, tuple] = {}
        self._load_committed()

    def _path(self) -> Path:
        return self.state_dir / "label_holder.pt"

    def _load_committed(self) -> None:
        if self._path().exists():
            ck = torch.load(self._path(), weights_only=True)
            self.committed = {int(ck["round"]): (ck["head"], ck["optimizer"])}
        self.committed.setdefault(-1, (copy.deepcopy(self.head.state_dict()), copy.deepcopy(self.optimizer.state_dict())))

    def send(self, kind: str, arrays: dict | None = None, *, round: int = 0, step: int = 0, meta: dict | None = None) -> None:
        self.channel.send(topics.uplink(self.job, self.name), kind, arrays or {}, round=round, step=step, meta=meta or {})

    def hello(self, fresh: bool = False) -> None:
        r, c, _ = self.train
        tr, tc, _ = self.test
        arrays = {"train_rows": r.astype(np.int32), "train_cols": c.astype(np.int32), "test_rows": tr.astype(np.int32), "test_cols": tc.astype(np.int32)}
        arrays.update(blobs_to_arrays("ctx", [self.public]))
        self.send(jobs.HELLO, arrays, meta={"client": self.name, "role": "labels", "classes": self.class_names, "fresh": fresh, "shape": []})

    def run(self) -> int:
        self.channel = open_channel(
            self.cfg, self.name, [topics.downlink(self.job, self.name), topics.broadcast(self.job)],
            seq_start=fresh_seq(0), **party_security(self.cfg, self.name, self.state_dir),
        )
        self.hello(fresh=True)
        last = time.monotonic()
        while not self.stop_event.is_set():
            msg = self.channel.recv(1.0)
            if msg is None:
                if time.monotonic() - last > IDLE_HELLO_S:
                    self.hello()
                    last = time.monotonic()
                continue
            last = time.monotonic()
            if self.handle(msg):
                break
        self.channel.close()
        return 0

    def handle(self, msg) -> bool:
        return _handle(self, msg)


def _handle(self: LabelHolder, msg) -> bool:
    kind, meta, arrays, rnd, step = msg.header.content_type, msg.meta or {}, msg.arrays, msg.header.round, msg.header.step
    if kind == jobs.DONE:
        return True
    if kind == jobs.JOB:
        self.attempt = int(meta["attempt"])
        head, opt = self.committed.get(rnd - 1) or self.committed[max(self.committed)]
        self.head.load_state_dict(head)
        load_optimizer_state(self.optimizer, opt, "label holder")
        set_lr(self.optimizer, cosine_lr(self.cfg.train.lr, rnd, self.cfg.train.epochs))
        self.send(jobs.READY, round=rnd, meta={"attempt": self.attempt})
        return False
    if meta.get("attempt") != self.attempt:
        return False
    if kind == jobs.FUSED:
        from crypto.he import decrypt_batch

        shape = tuple(int(v) for v in arrays["shape"])
        z = torch.from_numpy(decrypt_batch(self.secret, arrays_to_blobs(arrays, "ct"), shape)).float()
        if meta.get("train"):
            z.requires_grad_(True)
            self.head.train()
            logits = self.head(z)
            y = torch.from_numpy(self.train[2][arrays["idx"]]).long()
            ce = F.cross_entropy(logits, y)
            loss = ce + self.cfg.train.l2 * l2_penalty(self.head.named_parameters())
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            correct = int((logits.argmax(1) == y).sum())
            self.send(jobs.HEAD_GRAD, {"grad_z": z.grad.numpy()}, round=rnd, step=step, meta={"attempt": self.attempt, "ce": ce.item(), "total": loss.item(), "correct": correct})
        else:
            self.head.eval()
            with torch.no_grad():
                pred = self.head(z).argmax(1).numpy()
            self.send(jobs.PREDICTIONS, {"pred": pred.astype(np.int64)}, round=rnd, step=step, meta={"attempt": self.attempt})
    elif kind == jobs.COMMIT:
        self.committed = {rnd: (copy.deepcopy(self.head.state_dict()), copy.deepcopy(self.optimizer.state_dict())), **{k: v for k, v in self.committed.items() if k >= rnd - 2}}
        atomic_torch_save({"round": rnd, "head": self.head.state_dict(), "optimizer": self.optimizer.state_dict()}, self._path())
        self.send(jobs.COMMITTED, round=rnd, meta={"attempt": self.attempt})
    elif kind == jobs.SCORE:
        m = classification_metrics(self.test[2], arrays["pred"], len(self.class_names))
        self.send(jobs.METRICS, round=rnd, meta={"attempt": self.attempt, **m})
    return False
