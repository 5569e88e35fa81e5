"""A station that holds the labels (plaintext and signed jobs): two more handlers on its node.

The aggregator keeps the head and the label-free loss terms; it sends the logits of each step
and gets back only d cross-entropy / d logits. That gradient is softmax minus one-hot: its
lowest entry IS the label, so without label DP every training label reaches the aggregator.
With ``train.label_dp_sigma`` > 0 each sample's row is clipped and noised (``feddiff.privacy``)
and the batch loss and accuracy are withheld (0), and the epsilon spent is published with the
metrics. The test predictions are scored here, where the test labels are.
"""

from __future__ import annotations

from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F

from feddiff.data.patches import labelled_pixels
from feddiff.data.scene import Scene
from pathlib import Path

from feddiff.config import Config
from feddiff.metrics import classification_metrics
from feddiff.privacy.label_dp import LabelPrivacy, noisy_mean_grad
from feddiff.protocol import jobs
from feddiff.protocol.label_messages import LABEL_DP, CeGrad, Logits, Metrics, Score
from feddiff.protocol.messages import Samples
from feddiff.runtime import Incoming, Route


class StationLabels:
    def __init__(self, scene: Scene, cfg: Config, state_dir: Path) -> None:
        self.scene = scene
        self.train = labelled_pixels(scene.train_labels)
        self.test = labelled_pixels(scene.test_labels)
        t = cfg.train
        self.privacy = LabelPrivacy(t.label_dp_sigma, t.label_dp_clip, t.label_dp_delta, state_dir, self.train[0].shape[0])

    def samples(self) -> tuple[Samples, Samples]:
        """The pixels that are samples (never their labels), for the aggregator's batches."""
        return Samples(self.train[0], self.train[1]), Samples(self.test[0], self.test[1])

    def routes(self, send: Callable[..., None]) -> dict[str, Route]:
        self.send = send
        return {jobs.LOGITS: Route(Logits, self.on_logits), jobs.SCORE: Route(Score, self.on_score)}

    def on_logits(self, msg: Incoming) -> None:
        """Cross-entropy and its gradient w.r.t. the logits (clipped and noised under label DP)."""
        p: Logits = msg.payload
        logits = torch.from_numpy(p.logits).float().requires_grad_(True)
        y = torch.from_numpy(self.train[2][p.idx]).long()
        ce = F.cross_entropy(logits, y)
        ce.backward()
        if self.privacy.on:
            pv = self.privacy
            grad = noisy_mean_grad(logits.grad, pv.sigma, pv.clip, pv.gen)
            pv.ledger.record(p.idx)
            self.send(CeGrad(grad.numpy(), 0.0, 0), round=msg.round, step=msg.step)
            return
        correct = int((logits.argmax(1) == y).sum())
        self.send(CeGrad(logits.grad.numpy(), ce.item(), correct), round=msg.round, step=msg.step)

    def on_score(self, msg: Incoming) -> None:
        pred = np.asarray(msg.payload.pred)
        metrics = classification_metrics(self.test[2], pred, self.scene.num_classes)
        self.send(Metrics({**metrics, LABEL_DP: self.privacy.summary()}), round=msg.round)
