"""The interface the round loop knows: a fusion strategy trains, predicts and scores.

``begin_round`` sets the round's learning rate (where the head lives here); ``steps`` runs one
round's training steps and yields (batch indices, loss parts, correct) per step; ``predict``
classifies pixels; ``score`` turns test predictions into metrics (only a label holder can);
``state``/``mark``/``restore`` give the round loop what to commit and roll back.
Implementations: ``LocalLabels`` and ``StationLabels`` (``local``: labels at the aggregator or
at a station) and ``HeThirdParty`` (``he``: a third party with the CKKS secret key). To add
one: implement this protocol and select it in ``aggregator.fusion.make_fusion``.
"""

from __future__ import annotations

from typing import Iterator, Optional, Protocol

import numpy as np

from feddiff.data.sources import PixelSet
from feddiff.protocol.label_messages import Metrics, Score
from feddiff.protocol.messages import Hello

from aggregator.labels import Labels
from aggregator.link import Link

Step = tuple[np.ndarray, dict, int]


class Fusion(Protocol):
    public_ctx: Optional[bytes]  # what stations encrypt with (HE), sent in their JOB

    def build(self, num_classes: int, stored: Optional[tuple[dict, dict]]) -> None: ...

    def on_holder_hello(self, hello: Hello) -> None: ...

    def begin_round(self, rnd: int) -> None: ...

    def steps(self, rnd: int, plan: list, train: PixelSet) -> Iterator[Step]: ...

    def predict(self, rows: np.ndarray, cols: np.ndarray, tag: int) -> np.ndarray: ...

    def score(self, pred: np.ndarray, labels: Labels, tag: int) -> dict: ...

    def state(self) -> tuple[dict, dict]: ...

    def mark(self) -> None: ...

    def restore(self) -> None: ...


def remote_score(link: Link, pred: np.ndarray, tag: int) -> dict:
    """The label holder scores the test predictions; the labels never leave it."""
    link.send(link.holder, Score(pred), round=tag)
    return link.collect(Metrics, {link.holder}, tag)[link.holder].metrics
