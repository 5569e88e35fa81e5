"""``feddiff edge``: the long-running agent of one base station.

It loads only its own modality (never labels unless it is the label holder), joins the job,
answers the aggregator's requests in order, and survives broker loss (the transport reconnects
and re-subscribes; a round broken by the outage is rolled back and rerun by the aggregator).
"""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import numpy as np

from feddiff.config import Config, load_config
from feddiff.data.loader import load_scene
from feddiff.errors import ConfigError
from feddiff.logs import configure_logging
from feddiff.model.ensemble import check_federable
from feddiff.protocol import jobs, topics
from feddiff.protocol.endpoint import fresh_seq, open_channel

from edge_client.station import Station


def party_security(cfg: Config, name: str, state_dir: Path) -> dict:
    if cfg.federation.security == "none" and not cfg.federation.keys_dir:
        return {}
    from crypto.chain import party_security as secure

    return secure(cfg, name, state_dir)

log = logging.getLogger("feddiff.edge")
IDLE_HELLO_S = 5.0


@dataclass
class ForwardRequest:
    """A FORWARD with its weight-independent inputs (patches, frozen diffusion features) computed."""

    key: tuple
    inputs: dict
    n: int
    train: bool


class EdgeAgent:
    def __init__(self, cfg: Config, name: str, state_dir: Path, progress: bool = True) -> None:
        if name not in cfg.federation.clients:
            raise ConfigError(f"{cfg.source}: federation.clients: no client named {name!r} (have: {', '.join(cfg.federation.clients)})")
        self.cfg = cfg
        self.name = name
        self.job = cfg.federation.job
        self.progress = progress
        spec = cfg.federation.clients[name]
        scene = load_scene(cfg, modalities=list(spec.modalities), with_labels=cfg.federation.label_holder == name)
        self.station = Station(cfg, name, scene, state_dir)
        self.stop_event = threading.Event()
        self.is_label_holder = cfg.federation.label_holder == name
        self.channel = None
        self.attempt = -1
        self.deferred: Optional[tuple[tuple, ForwardRequest]] = None  # (BACKWARD key it waits for, request)

    def connect(self) -> None:
        fed = self.cfg.federation
        self.channel = open_channel(
            self.cfg,
            self.name,
            [topics.downlink(self.job, self.name), topics.broadcast(self.job)],
            seq_start=fresh_seq(int(self.station.meta.get("seq", 0))),
            **party_security(self.cfg, self.name, self.station.state_dir),
        )
        log.info("station %s connected to %s:%d", self.name, fed.broker.host, fed.broker.port)

    def send(self, kind: str, arrays: Optional[dict] = None, *, round: int = 0, step: int = 0, meta: Optional[dict] = None) -> None:
        self.channel.send(topics.uplink(self.job, self.name), kind, arrays or {}, round=round, step=step, meta=meta or {})

    def hello(self, fresh: bool = False) -> None:
        """``fresh`` marks the first hello of this process: a station that restarted mid-round
        lost its pending graph, so the aggregator reruns the round. Later hellos only say
        "still here, idle" so that a restarted aggregator finds its stations."""
        s = self.station
        arrays = {}
        if self.is_label_holder:
            from feddiff.data.patches import labelled_pixels

            r, c, _ = labelled_pixels(s.scene.train_labels)
            tr, tc, _ = labelled_pixels(s.scene.test_labels)
            arrays = {"train_rows": r.astype(np.int32), "train_cols": c.astype(np.int32), "test_rows": tr.astype(np.int32), "test_cols": tc.astype(np.int32)}
        self.send(
            jobs.HELLO,
            arrays,
            meta={
                "classes": s.scene.class_names,
                "client": self.name,
                "modalities": s.modalities,
                "bands": {m: int(s.scene.modalities[m].shape[2]) for m in s.modalities},
                "shape": list(s.scene.shape),
                "committed_round": s.committed_round,
                "fresh": fresh,
            },
        )

    def run(self) -> int:
        self.connect()
        self.hello(fresh=True)
        last_heard = time.monotonic()
        while not self.stop_event.is_set():
            msg = self.channel.recv(timeout=1.0)
            if msg is None:
                if time.monotonic() - last_heard > IDLE_HELLO_S:
                    self.hello()  # the aggregator may have (re)started after us
                    last_heard = time.monotonic()
                continue
            last_heard = time.monotonic()
            try:
                if self.handle(msg):
                    break
            except Exception:  # a bad request must not take the station down; the round will rerun
                log.exception("station %s: failed to handle %s (round %d step %d)", self.name, msg.header.content_type, msg.header.round, msg.header.step)
        self.channel.close()
        return 0

    def handle(self, msg) -> bool:
        kind, meta, arrays = msg.header.content_type, msg.meta or {}, msg.arrays
        if kind == jobs.DONE:
            self.station.write_meta(bytes_sent=self.channel.stats.bytes_sent, bytes_received=self.channel.stats.bytes_received)
            log.info("station %s: job done", self.name)
            return True
        if kind == jobs.JOB:
            self.on_job(meta, arrays)
            return False
        if not self.station.ready or meta.get("attempt") != self.attempt:
            log.debug("station %s: ignoring %s of attempt %s", self.name, kind, meta.get("attempt"))
            return False
        rnd, step = msg.header.round, msg.header.step
        key = (rnd, step, self.attempt)
        if kind == jobs.FORWARD:
            train = bool(meta.get("train"))
            dih = arrays.get("dihedral") if train else None
            own = {m: arrays[f"own_{m}"] for m in self.station.modalities if f"own_{m}" in arrays} or None
            request = ForwardRequest(key, self.station.inputs(arrays["rows"], arrays["cols"], dih, own), arrays["rows"].shape[0], train)
            previous = (rnd, step - 1, self.attempt)
            if train and self.station.awaits_gradient(previous):
                # the aggregator asks for step s+1 before step s's gradient has arrived, so that the
                # frozen features above were computed meanwhile; the trainable part needs the
                # updated weights, so the answer waits for that gradient
                self.deferred = (previous, request)
                return False
            self.answer(request)
        elif kind == jobs.BACKWARD:
            self.station.backward(key, arrays)
            if self.deferred is not None and self.deferred[0] == key:
                request, self.deferred = self.deferred[1], None
                self.answer(request)
        elif kind == jobs.GET_WEIGHTS:
            n = int(meta.get("samples", {}).get(self.name, 0))
            if self.station.he:  # only ciphertexts under the group key leave in HE mode
                arrays, extra = self.station.encrypted_weights(n, {m: int(t) for m, t in meta.get("totals", {}).items()})
                self.send(jobs.WEIGHTS, arrays, round=rnd, meta={"attempt": self.attempt, "samples": n, **extra})
            else:
                self.send(jobs.WEIGHTS, self.station.weights(), round=rnd, meta={"attempt": self.attempt, "samples": n})
        elif kind == jobs.LOGITS and self.is_label_holder:
            self.on_logits(rnd, step, arrays)
        elif kind == jobs.SCORE and self.is_label_holder:
            from feddiff.metrics import classification_metrics
            from feddiff.data.patches import labelled_pixels

            y = labelled_pixels(self.station.scene.test_labels)[2]
            m = classification_metrics(y, arrays["pred"], self.station.scene.num_classes)
            self.send(jobs.METRICS, round=rnd, meta={"attempt": self.attempt, **m})
        elif kind == jobs.COMMIT:
            expected = meta.get("backward_steps")
            if expected is not None and int(expected) != self.station.applied_steps:
                # a BACKWARD was lost in transit: committing would make a round with a step
                # missing permanent, so refuse and let the aggregator rerun the round
                why = f"{self.station.applied_steps} of {int(expected)} gradient steps arrived"
                log.warning("station %s: not committing round %d: %s", self.name, rnd, why)
                self.send(jobs.COMMITTED, round=rnd, meta={"attempt": self.attempt, "refused": why})
                return False
            self.station.commit(rnd, arrays, self.channel.seq)
            hist = self.station.meta.get("bytes_by_round", {})
            hist[str(rnd)] = [self.channel.stats.bytes_sent, self.channel.stats.bytes_received]
            self.station.write_meta(bytes_sent=self.channel.stats.bytes_sent, bytes_received=self.channel.stats.bytes_received, bytes_by_round=hist)
            self.send(jobs.COMMITTED, round=rnd, meta={"attempt": self.attempt})
            log.info("station %s committed round %d", self.name, rnd)
        return False

    def answer(self, request: ForwardRequest) -> None:
        rnd, step, _ = request.key
        feats = self.station.forward_inputs(request.key, request.inputs, request.n, request.train)
        self.send(jobs.FEATURES, feats, round=rnd, step=step, meta={"attempt": self.attempt})

    def on_logits(self, rnd: int, step: int, arrays: dict) -> None:
        """Label holder: cross-entropy and its gradient w.r.t. the logits; labels never leave."""
        import torch
        import torch.nn.functional as F

        from feddiff.data.patches import labelled_pixels

        y_all = labelled_pixels(self.station.scene.train_labels)[2]
        logits = torch.from_numpy(arrays["logits"]).float().requires_grad_(True)
        y = torch.from_numpy(y_all[arrays["idx"]]).long()
        ce = F.cross_entropy(logits, y)
        ce.backward()
        correct = int((logits.argmax(1) == y).sum())
        self.send(jobs.CE_GRAD, {"grad_logits": logits.grad.numpy()}, round=rnd, step=step, meta={"attempt": self.attempt, "ce": ce.item(), "correct": correct})

    def on_job(self, meta: dict, arrays: dict) -> None:
        rnd, attempt = int(meta["round"]), int(meta["attempt"])
        if self.station.he and self.station.public_ctx is None:
            from crypto.he import load_public
            from feddiff.protocol.arrays import arrays_to_blobs

            self.station.public_ctx = load_public(arrays_to_blobs(arrays, "ctx")[0])
        if not self.station.ready:
            log.info("station %s: pretraining its denoiser(s) locally", self.name)
            self.station.prepare(arrays["train_rows"], arrays["train_cols"], self.progress)
        self.deferred = None  # a request of the abandoned attempt
        self.station.rollback_to(rnd)
        self.station.begin_round(rnd)
        self.attempt = attempt
        self.send(jobs.READY, round=rnd, meta={"attempt": attempt})


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    check_federable(cfg.model, args.config)
    state_dir = Path(args.state_dir) if args.state_dir else Path(cfg.resolve(cfg.federation.state_dir)) / args.id
    state_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(getattr(args, "verbose", False), str(state_dir / "edge.log.jsonl"), name=args.id)
    if args.id == cfg.federation.label_holder and args.id not in cfg.federation.clients:
        from edge_client.label_holder import LabelHolder

        agent = LabelHolder(cfg, args.id, state_dir)
    else:
        agent = EdgeAgent(cfg, args.id, state_dir, progress=sys.stderr.isatty())
    signal.signal(signal.SIGTERM, lambda *_: agent.stop_event.set())
    return agent.run()
