"""The round loop: attempts, commit, rollback, retries, evaluation. Knows only the interfaces.

A round is all-or-nothing: JOB puts every party at the round (after a one-off local
pretraining, hence READY's generous timeout), the fusion strategy runs the steps, averaging
(horizontal mode) computes each station's COMMIT, and every party must answer COMMITTED. On a
timeout, a restarted party or a refused commit, everyone rolls back to the last committed round
and the round runs again (bounded retries, then the job pauses until the missing party says
hello). Events for monitoring go to ``link.observers`` (see ``feddiff.runtime.observe``).
"""

from __future__ import annotations

import logging
import time
import numpy as np
import torch

from feddiff.config import Config
from feddiff.model.optim import plan_samples, stage2_plan
from feddiff.protocol import jobs
from feddiff.protocol.messages import Commit, Committed, Hello, Job, Ready, Samples

from aggregator.averaging import make_averaging
from aggregator.fusion import make_fusion
from aggregator.labels import Labels, labels_from_hello
from aggregator.link import Link, RoundFailed
from aggregator.state import JobState, StateStore

log = logging.getLogger("feddiff.aggregator")


class Rounds:
    def __init__(self, cfg: Config, link: Link, labels: Labels, store: StateStore) -> None:
        self.cfg, self.link, self.labels, self.store = cfg, link, labels, store
        torch.set_num_threads(cfg.train.threads)
        self.fusion = make_fusion(cfg, link)
        self.averaging = make_averaging(cfg, link)
        state, head, opt = store.load(cfg.federation.job)
        self.stored = (head, opt) if head is not None else None
        self.built = False
        if labels.class_names or cfg.federation.security == "he":
            self._build(len(labels.class_names))
        if state is not None:
            log.info("resuming job %s at round %d", state.job, state.round)
        self.state = state or JobState(job=cfg.federation.job)
        link.status.update(round=self.state.round)
        link.on_holder_hello = self._holder_hello
        link.job_for = self._job_for

    def _build(self, num_classes: int) -> None:
        self.fusion.build(num_classes, self.stored)
        self.built = True

    def _holder_hello(self, hello: Hello) -> None:
        """A remote label holder tells us which pixels are samples (never their labels)."""
        self.fusion.on_holder_hello(hello)
        self.labels = labels_from_hello(hello)
        if not self.built:
            self._build(len(self.labels.class_names))

    def _job_for(self, party: str, rnd: int) -> Job:
        if party not in self.link.clients:
            return Job(rnd)
        return Job(rnd, Samples(self.labels.train.rows, self.labels.train.cols), self.fusion.public_ctx)

    # -- one round -----------------------------------------------------------------------------
    def start_round(self, rnd: int) -> None:
        self.state.attempt += 1
        self.link.new_attempt(self.state.attempt)
        self.link.observers.emit("round_started", round=rnd, attempt=self.state.attempt)
        for c in self.link.parties:
            self.link.send(c, self._job_for(c, rnd), round=rnd)
        pretrain_budget = self.cfg.federation.round_timeout_s + 30 + 0.5 * self.cfg.train.pretrain_steps
        self.link.collect(Ready, set(self.link.parties), rnd, 0, timeout=pretrain_budget)

    def train_round(self, rnd: int) -> dict:
        t = self.cfg.train
        self.fusion.begin_round(rnd)
        train = self.labels.train
        plan = stage2_plan(t, len(train), rnd)
        sums = {"total": 0.0, "ce": 0.0, "mse": 0.0, "l2": 0.0}
        correct = 0
        for step, (idx, parts, ok) in enumerate(self.fusion.steps(rnd, plan, train)):
            correct += ok
            for k in sums:
                sums[k] += parts.get(k, 0.0) * idx.shape[0]
            self.link.observers.emit("step", round=rnd, step=step, loss=parts.get("total", 0.0))
        seen = plan_samples(plan)
        return {"round": rnd, "steps": len(plan), "train_acc": correct / seen, **{k: v / seen for k, v in sums.items()}}

    def commit_round(self, rnd: int, row: dict, commits: dict) -> None:
        link = self.link
        for c in link.parties:
            payload = commits.get(c) or Commit()
            if c in link.clients:
                # BACKWARD is never answered, so a lost one would go unnoticed: each station checks
                # it applied as many gradient steps as were sent, and refuses the commit if not
                payload.backward_steps = link.sent[(jobs.BACKWARD, c)]
            link.send(c, payload, round=rnd)
        replies = link.collect(Committed, set(link.parties), rnd)
        refused = sorted(c for c, m in replies.items() if m.refused)
        if refused:
            raise RoundFailed("lost_backward", refused)
        self.state.round = rnd + 1
        self.state.history.append(row)
        self.state.ledger.append({"round": rnd, "attempt": self.state.attempt, "steps_applied": row["steps"]})
        self.commit_state()
        self.fusion.mark()

    def commit_state(self) -> None:
        self.state.seq = self.link.channel.seq
        self.store.commit(self.state, *self.fusion.state())

    def run_round(self, rnd: int) -> None:
        t0 = time.perf_counter()
        self.start_round(rnd)
        row = self.train_round(rnd)
        commits = self.averaging.average(rnd, self.labels.train)
        row["seconds"] = time.perf_counter() - t0
        self.commit_round(rnd, row, commits)
        log.info(
            "round %d/%d committed: loss %.4f train acc %.3f (%.1fs)", rnd + 1, self.cfg.train.epochs, row["total"], row["train_acc"], row["seconds"],
            extra={"round": rnd, "loss": row["total"], "train_acc": row["train_acc"], "event": "round_committed"},
        )
        self.link.observers.emit("round_committed", round=rnd, loss=row["total"], train_acc=row["train_acc"], seconds=row["seconds"])
        self.link.status.update(round=rnd + 1, last_round_seconds=row["seconds"], history=self.state.history[-5:])

    # -- the job -------------------------------------------------------------------------------
    def train(self) -> None:
        retries = 0
        link = self.link
        link.await_parties()
        while self.state.round < self.cfg.train.epochs and not link.stop_requested:
            rnd = self.state.round
            try:
                self.run_round(rnd)
                retries = 0
            except RoundFailed as exc:
                if exc.reason == "stopping":
                    return
                self.fusion.restore()
                retries += 1
                msg = f"round {rnd} attempt {self.state.attempt} failed ({exc}); rolling back to committed round {rnd - 1}"
                link.status.update(last_error=msg, retries=retries)  # first: whoever reads the log line finds it in status
                log.warning(msg, extra={"event": "round_failed", "round": rnd, "reason": exc.reason, "clients": exc.clients})
                link.observers.emit("round_failed", round=rnd, reason=exc.reason, parties=exc.clients)
                if exc.reason == "restarted":
                    if set(link.clients) - set(link.hellos):
                        link.await_parties(set(link.clients) - set(link.hellos))
                elif retries > self.cfg.federation.max_retries:
                    log.error("job paused: %s did not answer after %d retries; waiting for them to reconnect", ", ".join(exc.clients), retries - 1)
                    link.status.update(phase="paused", last_error=f"paused: waiting for {', '.join(exc.clients)}")
                    link.hellos.clear()
                    link.await_parties(set(exc.clients))
                    retries = 0

    def evaluate(self) -> dict:
        epochs = self.cfg.train.epochs
        while True:
            try:
                self.start_round(epochs)
                pred = self.fusion.predict(self.labels.test.rows, self.labels.test.cols, tag=epochs)
                metrics = self.fusion.score(pred, self.labels, epochs)
                self.link.observers.emit("validation", oa=metrics["oa"])
                return metrics
            except RoundFailed as exc:
                if exc.reason == "stopping":
                    raise
                log.warning("evaluation interrupted (%s); starting it again", exc)
                if exc.reason in ("restarted", "timeout"):
                    self.link.await_parties(set(self.link.clients) - set(self.link.hellos))

    def classify_scene(self, shape: tuple[int, int]) -> np.ndarray:
        h, w = shape
        class_map = np.zeros((h, w), dtype=np.uint8)
        rows, cols = np.repeat(np.arange(h), w), np.tile(np.arange(w), h)
        class_map[rows, cols] = self.fusion.predict(rows, cols, tag=self.cfg.train.epochs + 1) + 1
        return class_map
