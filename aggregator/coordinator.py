"""Drives a federated FedDiff job round by round: the aggregator's side of ``feddiff.protocol.jobs``.

The aggregator holds the fusion head (decoders, gated FR streams, classifiers) and, as label
holder, the labels. Per step it asks each station for the packed codes of a batch, runs the
bilateral interaction and the loss, and returns to each station the gradient of its own codes.
A round is all-or-nothing: on a timeout or a restarted station, everyone rolls back to the last
committed round and the round runs again (bounded retries, then the job pauses until the
missing station says hello).
"""

from __future__ import annotations

import copy
import json
import logging
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional

import numpy as np
import torch

from feddiff.config import Config
from feddiff.metrics import classification_metrics
from feddiff.model.losses import feddiff_loss
from feddiff.model.net import build_head
from feddiff.data.sources import PixelSet
from feddiff.model.train import batches, cosine_lr, epoch_plan, epoch_rng, load_optimizer_state, make_optimizer, set_lr
from feddiff.protocol import jobs, topics

from aggregator.state import JobState, StateStore
from aggregator.status import StatusBoard

log = logging.getLogger("feddiff.aggregator")
MAX_EARLY = 256  # replies kept for a later collect; more than any pipeline depth needs


def json_key(value: object) -> Optional[str]:
    """A hashable, order-preserving key for a JSON value (None stays None)."""
    return None if value is None else json.dumps(value, separators=(",", ":"))


class RoundFailed(Exception):
    def __init__(self, reason: str, clients: list[str]) -> None:
        self.reason, self.clients = reason, clients
        super().__init__(f"{reason}: {', '.join(clients) or '-'}")


@dataclass
class Labels:
    train: PixelSet
    test: PixelSet
    class_names: list[str]


class Coordinator:
    def __init__(self, cfg: Config, channel, labels: Labels, store: StateStore, status: StatusBoard) -> None:
        self.cfg = cfg
        self.fed = cfg.federation
        self.channel = channel
        self.labels = labels
        self.store = store
        self.status = status
        self.clients = dict(self.fed.clients)
        self.modalities = jobs.modalities_of(self.clients)
        self.he = self.fed.security == "he"
        self.holder = self.fed.label_holder if self.fed.label_holder != "aggregator" else None
        self.parties = list(self.clients) + ([self.holder] if self.holder and self.holder not in self.clients else [])
        self.public_ctx = None
        self.ctx_arrays: dict = {}
        self.group_ctx: dict = {}  # HE: modality -> PUBLIC context of its horizontal group (sums only)
        if self.he and (self.holder is None or self.holder in self.clients):
            from feddiff.errors import ConfigError

            raise ConfigError(f"{cfg.source}: federation.security 'he' needs a third-party label_holder (not the aggregator or a station)")
        if self.he:
            self._load_group_contexts()
        torch.set_num_threads(cfg.train.threads)
        state, self._stored_head, self._stored_opt = store.load(self.fed.job)
        self.head: Optional[torch.nn.Module] = None
        self.optimizer: Optional[torch.optim.Optimizer] = None
        if labels.class_names or self.he:
            self._build_head(len(labels.class_names))
        if state is not None:
            log.info("resuming job %s at round %d", state.job, state.round)
        self.state = state or JobState(job=self.fed.job)
        status.update(round=self.state.round)
        self.hellos: dict[str, dict] = {}
        self.scene_shape: tuple = ()
        self.stop_requested = False
        self.early: dict[tuple, object] = {}  # (kind, round, step, sender) -> reply of this attempt not yet awaited

    def _load_group_contexts(self) -> None:
        """HE with horizontal groups: the public CKKS context of each group, enough to add the
        members' encrypted weight shares and never to read them (``load_public`` refuses a secret)."""
        from crypto.he_groups import aggregator_contexts

        self.group_ctx = aggregator_contexts(self.cfg)
        if self.group_ctx:
            private = any(ctx.is_private() for ctx in self.group_ctx.values())
            self.status.update(he_group_context_private=private)
            log.info("HE group contexts for %s (secret key held here: %s)", ", ".join(sorted(self.group_ctx)), private)

    # -- messaging --------------------------------------------------------------------------------
    def send(self, client: str, kind: str, arrays: Optional[dict] = None, *, round: int = 0, step: int = 0, meta: Optional[dict] = None) -> None:
        meta = {"attempt": self.state.attempt, **(meta or {})}
        self.channel.send(topics.downlink(self.fed.job, client), kind, arrays or {}, round=round, step=step, meta=meta)

    def _sender(self, msg) -> Optional[str]:
        try:
            job, kind, client = topics.parse_topic(msg.topic)
        except Exception:
            return None
        if job != self.fed.job or kind != "up" or client != msg.header.sender or client not in self.parties:
            log.warning("dropped message from %r on %s", msg.header.sender, msg.topic)
            return None
        return client

    def collect(self, kind: str, expected: set[str], rnd: int, step: int, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        got: dict = {c: self.early.pop((kind, rnd, step, c)) for c in expected if (kind, rnd, step, c) in self.early}
        while expected - set(got):
            if self.stop_requested:
                raise RoundFailed("stopping", [])
            left = deadline - time.monotonic()
            if left <= 0:
                raise RoundFailed("timeout", sorted(expected - set(got)))
            msg = self.channel.recv(timeout=min(left, 1.0))
            self.status.update(bytes_sent=self.channel.stats.bytes_sent, bytes_received=self.channel.stats.bytes_received, rejected=dict(self.channel.stats.rejected))
            if msg is None:
                continue
            sender = self._sender(msg)
            if sender is None:
                continue
            self.status.seen(sender)
            meta = msg.meta or {}
            if msg.header.content_type == jobs.HELLO:
                self.hellos[sender] = meta
                if sender == self.holder:
                    self._labels_from_holder(msg.arrays, meta)
                if sender in self.clients:
                    self.scene_shape = tuple(meta.get("shape", ()))
                if kind != jobs.HELLO:
                    if meta.get("fresh"):
                        raise RoundFailed("restarted", [sender])
                    if kind == jobs.READY and sender in expected and sender not in got:
                        self._send_job(sender, rnd)  # idle and not READY: our JOB was lost (broker restart)
                    continue
                got[sender] = msg
                continue
            if meta.get("attempt") != self.state.attempt:
                continue
            if msg.header.content_type == kind and msg.header.round == rnd and msg.header.step == step:
                got[sender] = msg
            elif len(self.early) < MAX_EARLY:  # pipelined requests: an answer can come before it is awaited
                self.early[(msg.header.content_type, msg.header.round, msg.header.step, sender)] = msg
        return got

    # -- rounds ------------------------------------------------------------------------------------
    def _snapshot(self) -> None:
        if self.head is None:
            return
        self.committed = (copy.deepcopy(self.head.state_dict()), copy.deepcopy(self.optimizer.state_dict()))

    def _restore(self) -> None:
        if self.head is None:
            return
        self.head.load_state_dict(self.committed[0])
        self.optimizer.load_state_dict(self.committed[1])

    def _build_head(self, num_classes: int) -> None:
        """The head needs the class count, which a remote label holder tells us in its hello.
        In HE mode the head lives with the label holder: the aggregator only adds ciphertexts."""
        cfg = self.cfg
        self.head = torch.nn.Module() if self.he else build_head(self.modalities, num_classes, cfg.model, cfg.train.seed)
        self.optimizer = make_optimizer([self.head], cfg.train)
        if self._stored_head is not None:
            self.head.load_state_dict(self._stored_head)
            load_optimizer_state(self.optimizer, self._stored_opt, f"aggregator {self.fed.job}")
        self._snapshot()

    def _labels_from_holder(self, arrays: dict, meta: dict) -> None:
        """HE mode: the label holder tells us which pixels are samples (never their labels) and
        gives the public CKKS context that stations encrypt with and we add under."""
        if self.he and self.public_ctx is None:
            from crypto.he import load_public
            from feddiff.protocol.arrays import arrays_to_blobs

            self.ctx_arrays = {k: v for k, v in arrays.items() if k.startswith("ctx_")}
            self.public_ctx = load_public(arrays_to_blobs(arrays, "ctx")[0])
            self.status.update(he_context_private=bool(self.public_ctx.is_private()))
            log.info("HE public context received (secret key held here: %s)", self.public_ctx.is_private())
        n_tr, n_te = arrays["train_rows"].shape[0], arrays["test_rows"].shape[0]
        self.labels = Labels(
            PixelSet(arrays["train_rows"].astype(np.int64), arrays["train_cols"].astype(np.int64), np.full(n_tr, -1)),
            PixelSet(arrays["test_rows"].astype(np.int64), arrays["test_cols"].astype(np.int64), np.full(n_te, -1)),
            list(meta.get("classes", [])),
        )
        if self.head is None:
            self._build_head(len(self.labels.class_names))

    def await_clients(self, missing: Optional[set[str]] = None) -> None:
        missing = set(self.parties) if missing is None else missing
        self.status.update(phase="waiting for stations", waiting_for=sorted(missing))
        log.info("waiting for stations: %s", ", ".join(sorted(missing)))
        while missing - set(self.hellos):
            try:
                self.collect(jobs.HELLO, missing - set(self.hellos), 0, 0, timeout=self.fed.round_timeout_s)
            except RoundFailed as exc:
                if exc.reason == "stopping":
                    raise
                log.warning("still waiting for stations: %s", ", ".join(exc.clients))
                self.status.update(last_error=f"waiting for {', '.join(exc.clients)}")

    def _send_job(self, party: str, rnd: int) -> None:
        arrays = {"train_rows": self.labels.train.rows.astype(np.int32), "train_cols": self.labels.train.cols.astype(np.int32), **self.ctx_arrays}
        self.send(party, jobs.JOB, arrays if party in self.clients else {}, round=rnd, meta={"round": rnd})

    def start_round(self, rnd: int) -> None:
        """JOB tells every station which round to be at (rolling back if needed); READY follows
        after a station's one-off local pretraining, hence the generous timeout."""
        self.state.attempt += 1
        self.hellos.clear()
        self.early.clear()
        for c in self.parties:
            self._send_job(c, rnd)
        pretrain_budget = self.fed.round_timeout_s + 30 + 0.5 * self.cfg.train.pretrain_steps
        self.collect(jobs.READY, set(self.parties), rnd, 0, timeout=pretrain_budget)

    def _requests(self, rows: np.ndarray, cols: np.ndarray) -> dict[str, np.ndarray]:
        """Per involved station, the mask of samples it answers for (union over its modalities)."""
        masks: dict[str, np.ndarray] = {}
        for m in self.modalities:
            for c, mask in jobs.owners(self.clients, m, rows, cols).items():
                masks[c] = masks.get(c, np.zeros(rows.shape[0], bool)) | mask
        return masks

    def _assemble(self, replies: dict, masks: dict[str, np.ndarray], rows: np.ndarray, cols: np.ndarray) -> dict[str, torch.Tensor]:
        """Put every station's dequantised codes into per-modality batch tensors, in batch order."""
        wire: dict[str, torch.Tensor] = {}
        for m in self.modalities:
            for c, own in jobs.owners(self.clients, m, rows, cols).items():
                arr = replies[c].arrays
                codes = torch.from_numpy(np.asarray(arr[f"codes_{m}"])).float() * torch.from_numpy(np.asarray(arr[f"scale_{m}"])).float()[:, None]
                if m not in wire:
                    wire[m] = torch.zeros(rows.shape[0], codes.shape[1])
                pos = np.flatnonzero(own[masks[c]])
                wire[m][torch.from_numpy(np.flatnonzero(own))] = codes[torch.from_numpy(pos)]
        return wire

    def request_features(self, rnd: int, step: int, rows: np.ndarray, cols: np.ndarray, dih: Optional[np.ndarray], train: bool) -> dict[str, np.ndarray]:
        """FORWARD to every station involved in the batch; returns their sample masks."""
        masks = self._requests(rows, cols)
        for c, mask in masks.items():
            arrays = {"rows": rows[mask].astype(np.int32), "cols": cols[mask].astype(np.int32)}
            if dih is not None:
                arrays["dihedral"] = dih[mask].astype(np.uint8)
            self.send(c, jobs.FORWARD, arrays, round=rnd, step=step, meta={"train": train})
        return masks

    def pipelined(self, rnd: int, batches: list[tuple], request: Callable, receive: Callable) -> Iterator:
        """``receive``'s result for each (rows, cols, dihedral) batch, in order. The next batch is
        requested before the current one is handed out, so the stations work on it while this
        side runs the head: in evaluation they answer at once, in training they compute its
        frozen diffusion features and answer once the current step's gradient has been applied
        (see the edge agent), so the result is exactly the unpipelined one."""
        if not batches:
            return
        pending = request(rnd, 0, *batches[0])
        for step, batch in enumerate(batches):
            got = receive(rnd, step, batch, pending)
            if step + 1 < len(batches):
                pending = request(rnd, step + 1, *batches[step + 1])
            yield got

    def feature_stream(self, rnd: int, batches: list[tuple], train: bool) -> Iterator[tuple[dict[str, torch.Tensor], dict[str, np.ndarray]]]:
        """(features, masks) per batch: packed codes assembled into per-modality tensors."""

        def receive(rnd: int, step: int, batch: tuple, masks: dict) -> tuple:
            replies = self.collect(jobs.FEATURES, set(masks), rnd, step, self.fed.round_timeout_s)
            return self._assemble(replies, masks, batch[0], batch[1]), masks

        return self.pipelined(rnd, batches, lambda rnd, step, rows, cols, dih: self.request_features(rnd, step, rows, cols, dih, train), receive)

    def train_round(self, rnd: int) -> dict:
        t = self.cfg.train
        set_lr(self.optimizer, cosine_lr(t.lr, rnd, t.epochs))
        self.head.train()
        plan = epoch_plan(len(self.labels.train), t.batch_size, epoch_rng(t.seed, rnd), t.augment)
        self.backward_sent = {}  # station -> BACKWARDs sent this attempt; checked at COMMIT
        sums = {"total": 0.0, "ce": 0.0, "mse": 0.0, "l2": 0.0}
        correct = 0
        for idx, parts, ok in (self.he_steps if self.he else self.plain_steps)(rnd, plan):
            correct += ok
            for k in sums:
                sums[k] += parts.get(k, 0.0) * idx.shape[0]
        n = len(self.labels.train)
        return {"round": rnd, "steps": len(plan), "train_acc": correct / n, **{k: v / n for k, v in sums.items()}}

    def plain_steps(self, rnd: int, plan: list) -> Iterator[tuple[np.ndarray, dict, int]]:
        """(batch, loss parts, correct) per step: codes in, head and loss here, code gradients out."""
        t = self.cfg.train
        y_all = torch.from_numpy(self.labels.train.labels).long()
        train = self.labels.train
        stream = self.feature_stream(rnd, [(train.rows[idx], train.cols[idx], dih) for idx, dih in plan], True)
        for step, ((idx, _), (wire, masks)) in enumerate(zip(plan, stream)):
            self.status.update(phase="training", round=rnd, step=step, steps=len(plan))
            leaves = {m: w.clone().requires_grad_(True) for m, w in wire.items()}
            logits, singles = self.head(leaves)
            self.optimizer.zero_grad(set_to_none=True)
            if self.holder is None:
                loss, parts = feddiff_loss(logits, singles, y_all[idx], self.head.named_parameters(), t.mse_weight, t.l2)
                loss.backward()
                ok = int((logits.argmax(1) == y_all[idx]).sum())
            else:
                parts, ok = self.remote_ce_backward(rnd, step, idx, logits, singles)
            self.optimizer.step()
            for c, mask in masks.items():
                grads = {f"grad_{m}": leaves[m].grad[torch.from_numpy(mask)].numpy() for m in self.clients[c].modalities if m in leaves}
                self.send(c, jobs.BACKWARD, grads, round=rnd, step=step)
                self.backward_sent[c] = self.backward_sent.get(c, 0) + 1
            yield idx, parts, ok

    def he_steps(self, rnd: int, plan: list) -> Iterator[tuple[np.ndarray, dict, int]]:
        """HE mode: the encrypted fused features go to the label holder, which runs the head and
        returns the gradient of the (encrypted-summed) features for every station."""
        train = self.labels.train
        stream = self.encrypted_stream(rnd, [(train.rows[idx], train.cols[idx], dih) for idx, dih in plan], True)
        for step, ((idx, _), (fused, masks)) in enumerate(zip(plan, stream)):
            self.status.update(phase="training", round=rnd, step=step, steps=len(plan))
            self.send(self.holder, jobs.FUSED, {**fused, "idx": idx.astype(np.int64)}, round=rnd, step=step, meta={"train": True})
            reply = self.collect(jobs.HEAD_GRAD, {self.holder}, rnd, step, self.fed.round_timeout_s)[self.holder]
            for c in masks:
                self.send(c, jobs.BACKWARD, {"grad_z": reply.arrays["grad_z"]}, round=rnd, step=step)
                self.backward_sent[c] = self.backward_sent.get(c, 0) + 1
            yield idx, {k: reply.meta[k] for k in ("total", "ce")}, int(reply.meta.get("correct", 0))

    def remote_ce_backward(self, rnd: int, step: int, idx: np.ndarray, logits: torch.Tensor, singles: dict) -> tuple[dict, int]:
        """A station holds the labels: it returns d CE / d logits; the label-free terms (MSE tying
        the single streams to the cross stream, L2) are computed here. Same gradient as local."""
        t = self.cfg.train
        self.send(self.holder, jobs.LOGITS, {"logits": logits.detach().numpy(), "idx": idx.astype(np.int64)}, round=rnd, step=step)
        reply = self.collect(jobs.CE_GRAD, {self.holder}, rnd, step, self.fed.round_timeout_s)[self.holder]
        mse = sum((torch.nn.functional.mse_loss(s, logits.detach()) for s in singles.values()), torch.zeros(()))
        from feddiff.model.losses import l2_penalty

        rest = t.mse_weight * mse + (t.l2 * l2_penalty(self.head.named_parameters()) if t.l2 > 0 else torch.zeros(()))
        torch.autograd.backward([logits, rest], [torch.from_numpy(reply.arrays["grad_logits"]).float(), torch.ones(())])
        ce = float(reply.meta["ce"])
        return {"ce": ce, "mse": mse.item(), "total": ce + rest.item()}, int(reply.meta.get("correct", 0))

    def _ownership(self, rows: np.ndarray, cols: np.ndarray) -> dict[str, dict[str, np.ndarray]]:
        """HE mode: per station, ``own_<m>`` masks of the batch rows it answers for, sent only where
        it is not the whole batch (regions, or a second station of a modality). A station encrypts
        zeros elsewhere, so the ciphertext sum holds exactly one contribution per modality and sample."""
        out: dict[str, dict[str, np.ndarray]] = {}
        for m in self.modalities:
            owned = jobs.owners(self.clients, m, rows, cols)
            for c in (c for c, s in self.clients.items() if m in s.modalities):
                mask = owned.get(c, np.zeros(rows.shape[0], bool))
                if not mask.all():
                    out.setdefault(c, {})[f"own_{m}"] = mask.astype(np.uint8)
        return out

    def request_encrypted(self, rnd: int, step: int, rows: np.ndarray, cols: np.ndarray, dih: Optional[np.ndarray], train: bool) -> dict[str, np.ndarray]:
        """HE mode: FORWARD of the whole batch to every involved station, with ownership masks."""
        masks = self._requests(rows, cols)
        own = self._ownership(rows, cols)
        for c in masks:
            arrays = {"rows": rows.astype(np.int32), "cols": cols.astype(np.int32), **own.get(c, {})}
            if dih is not None:
                arrays["dihedral"] = dih.astype(np.uint8)
            self.send(c, jobs.FORWARD, arrays, round=rnd, step=step, meta={"train": train})
        return masks

    def encrypted_stream(self, rnd: int, batches: list[tuple], train: bool) -> Iterator[tuple[dict[str, np.ndarray], dict[str, np.ndarray]]]:
        """HE mode, per batch: (the homomorphic sum of the stations' ciphertexts as FUSED arrays,
        masks). Nothing here can decrypt the sum; it goes on to the label holder."""
        from crypto.he import add_ciphertexts
        from feddiff.protocol.arrays import arrays_to_blobs, blobs_to_arrays

        def receive(rnd: int, step: int, batch: tuple, masks: dict) -> tuple:
            replies = self.collect(jobs.FEATURES, set(masks), rnd, step, self.fed.round_timeout_s)
            cts = None
            for c in masks:
                mine = arrays_to_blobs(replies[c].arrays, "ct")
                cts = mine if cts is None else add_ciphertexts(self.public_ctx, cts, mine)
            return {**blobs_to_arrays("ct", cts), "shape": replies[next(iter(masks))].arrays["shape"]}, masks

        return self.pipelined(rnd, batches, lambda rnd, step, rows, cols, dih: self.request_encrypted(rnd, step, rows, cols, dih, train), receive)

    def average_weights(self, rnd: int) -> dict[str, dict]:
        """Horizontal mode: FedAvg of each modality's branch weights over the stations holding
        it, weighted by their training samples. Returns per-station COMMIT arrays."""
        groups = {m: cs for m, cs in jobs.horizontal_groups(self.clients).items() if len(cs) > 1}
        if not groups:
            return {}
        members = sorted({c for cs in groups.values() for c in cs})
        samples = {c: int(self._requests(self.labels.train.rows, self.labels.train.cols).get(c, np.zeros(1, bool)).sum()) for c in members}
        totals = {m: max(sum(samples[c] for c in cs), 1) for m, cs in groups.items()}
        for c in members:
            mine = {m: t for m, t in totals.items() if c in groups[m]}
            self.send(c, jobs.GET_WEIGHTS, round=rnd, meta={"samples": samples, "totals": mine})
        replies = self.collect(jobs.WEIGHTS, set(members), rnd, 0, self.fed.round_timeout_s)
        if self.he:
            return self._sum_encrypted(groups, replies)
        out: dict[str, dict] = {c: {} for c in members}
        for m, cs in groups.items():
            total = totals[m]
            keys = [k for k in replies[cs[0]].arrays if k.startswith(f"w_{m}/")]
            for k in keys:
                avg = sum(np.asarray(replies[c].arrays[k], dtype=np.float64) * (samples[c] / total) for c in cs)
                for c in cs:
                    out[c][k] = avg.astype(np.asarray(replies[c].arrays[k]).dtype)
        return out

    def _sum_encrypted(self, groups: dict[str, list[str]], replies: dict) -> dict[str, dict]:
        """HE mode: each member sent ``wct_<m>`` = Enc(w_i * n_i / N) under its group key; the sum
        is the FedAvg, computed here with the group's public context and returned, still
        encrypted, as ``wsum_<m>`` in every member's COMMIT. Nothing here can decrypt it."""
        from crypto.he_groups import sum_shares
        from feddiff.protocol.arrays import arrays_to_blobs, blobs_to_arrays

        out: dict[str, dict] = {c: {} for cs in groups.values() for c in cs}
        for m, cs in groups.items():
            layouts = {json_key(replies[c].meta.get("he_layout", {}).get(m)) for c in cs}
            if len(layouts) != 1 or None in layouts:
                raise RoundFailed("weights_mismatch", cs)  # different branch shapes cannot be averaged
            total = sum_shares(self.group_ctx[m], [arrays_to_blobs(replies[c].arrays, f"wct_{m}") for c in cs])
            for c in cs:
                out[c].update(blobs_to_arrays(f"wsum_{m}", total))
        return out

    def commit_round(self, rnd: int, row: dict, averaged: dict[str, dict]) -> None:
        sent = getattr(self, "backward_sent", {})
        for c in self.parties:
            # BACKWARD is never answered, so a lost one would go unnoticed: each station checks
            # it applied as many gradient steps as were sent, and refuses the commit if not
            meta = {"backward_steps": sent.get(c, 0)} if c in self.clients else None
            self.send(c, jobs.COMMIT, averaged.get(c, {}), round=rnd, meta=meta)
        replies = self.collect(jobs.COMMITTED, set(self.parties), rnd, 0, self.fed.round_timeout_s)
        refused = sorted(c for c, m in replies.items() if (m.meta or {}).get("refused"))
        if refused:
            raise RoundFailed("lost_backward", refused)
        self.state.round = rnd + 1
        self.state.history.append(row)
        self.state.ledger.append({"round": rnd, "attempt": self.state.attempt, "steps_applied": row["steps"]})
        self.state.seq = self.channel.seq
        self.store.commit(self.state, self.head.state_dict(), self.optimizer.state_dict())
        self._snapshot()

    def run_round(self, rnd: int) -> None:
        t0 = time.perf_counter()
        self.start_round(rnd)
        row = self.train_round(rnd)
        averaged = self.average_weights(rnd)
        row["seconds"] = time.perf_counter() - t0
        self.commit_round(rnd, row, averaged)
        log.info(
            "round %d/%d committed: loss %.4f train acc %.3f (%.1fs)", rnd + 1, self.cfg.train.epochs, row["total"], row["train_acc"], row["seconds"],
            extra={"round": rnd, "loss": row["total"], "train_acc": row["train_acc"], "event": "round_committed"},
        )
        self.status.update(round=rnd + 1, last_round_seconds=row["seconds"], history=self.state.history[-5:])

    def train(self) -> None:
        retries = 0
        self.await_clients()
        while self.state.round < self.cfg.train.epochs and not self.stop_requested:
            rnd = self.state.round
            try:
                self.run_round(rnd)
                retries = 0
            except RoundFailed as exc:
                if exc.reason == "stopping":
                    return
                self._restore()
                retries += 1
                msg = f"round {rnd} attempt {self.state.attempt} failed ({exc}); rolling back to committed round {rnd - 1}"
                log.warning(msg, extra={"event": "round_failed", "round": rnd, "reason": exc.reason, "clients": exc.clients})
                self.status.update(last_error=msg, retries=retries)
                if exc.reason == "restarted":
                    self.await_clients(set(self.clients) - set(self.hellos)) if set(self.clients) - set(self.hellos) else None
                elif retries > self.fed.max_retries:
                    log.error("job paused: %s did not answer after %d retries; waiting for them to reconnect", ", ".join(exc.clients), retries - 1)
                    self.status.update(phase="paused", last_error=f"paused: waiting for {', '.join(exc.clients)}")
                    self.hellos.clear()
                    self.await_clients(set(exc.clients))
                    retries = 0

    # -- evaluation -------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, rows: np.ndarray, cols: np.ndarray, tag: int) -> np.ndarray:
        """Same path as training, without gradients; ``tag`` keeps eval steps apart from training."""
        self.head.eval()
        out = np.empty(rows.shape[0], dtype=np.int64)
        parts = list(batches(rows.shape[0], self.cfg.train.eval_batch, None))
        if self.he:
            stream = self.encrypted_stream(tag, [(rows[idx], cols[idx], None) for idx in parts], False)
            for i, (idx, (fused, _)) in enumerate(zip(parts, stream)):
                self.status.update(phase="evaluating", step=i)
                self.send(self.holder, jobs.FUSED, fused, round=tag, step=i, meta={"train": False})
                out[idx] = self.collect(jobs.PREDICTIONS, {self.holder}, tag, i, self.fed.round_timeout_s)[self.holder].arrays["pred"]
            return out
        stream = self.feature_stream(tag, [(rows[idx], cols[idx], None) for idx in parts], False)
        for i, (idx, (wire, _)) in enumerate(zip(parts, stream)):
            self.status.update(phase="evaluating", step=i)
            out[idx] = self.head(wire)[0].argmax(1).numpy()
        return out

    def evaluate(self) -> dict:
        while True:
            try:
                self.start_round(self.cfg.train.epochs)
                pred = self.predict(self.labels.test.rows, self.labels.test.cols, tag=self.cfg.train.epochs)
                if self.holder is not None:  # only the label holder can score
                    self.send(self.holder, jobs.SCORE, {"pred": pred}, round=self.cfg.train.epochs)
                    reply = self.collect(jobs.METRICS, {self.holder}, self.cfg.train.epochs, 0, self.fed.round_timeout_s)
                    return {k: reply[self.holder].meta[k] for k in ("oa", "aa", "kappa", "per_class", "confusion")}
                return classification_metrics(self.labels.test.labels, pred, len(self.labels.class_names))
            except RoundFailed as exc:
                if exc.reason == "stopping":
                    raise
                log.warning("evaluation interrupted (%s); starting it again", exc)
                if exc.reason == "restarted" or exc.reason == "timeout":
                    self.await_clients(set(self.clients) - set(self.hellos))

    def classify_scene(self, shape: tuple[int, int]) -> np.ndarray:
        h, w = shape
        class_map = np.zeros((h, w), dtype=np.uint8)
        rows = np.repeat(np.arange(h), w)
        cols = np.tile(np.arange(w), h)
        class_map[rows, cols] = self.predict(rows, cols, tag=self.cfg.train.epochs + 1) + 1
        return class_map

    def finish(self) -> None:
        for c in self.parties:
            self.send(c, jobs.DONE)
        self.channel.send(topics.broadcast(self.fed.job), jobs.DONE, {}, round=self.state.round, step=0, meta={})
