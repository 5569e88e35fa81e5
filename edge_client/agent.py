"""``feddiff edge``: a base station as a set of handlers on the party runtime.

It loads only its own modality (never labels unless it is the label holder), joins the job,
answers the aggregator's requests in order, and survives broker loss (the transport reconnects
and re-subscribes; a round broken by the outage is rolled back and rerun by the aggregator).
Connection, hello, attempt filtering and error containment are the runtime's
(``feddiff.runtime.node``); this module only says what each message kind does here.
"""

from __future__ import annotations

import argparse
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

from feddiff.config import Config, load_config
from feddiff.data.loader import load_scene
from feddiff.errors import ConfigError
from feddiff.monitoring.feed import start_role_monitoring
from feddiff.protocol import jobs
from feddiff.protocol.exchange import Deferral
from feddiff.protocol.label_messages import SealedBackward
from feddiff.protocol.messages import Backward, Commit, Committed, Done, Forward, GetWeights, Hello, Job, Ready
from feddiff.runtime import Incoming, Node, Route
from feddiff.runtime.node import serve

from edge_client.station import Station
from edge_client.station_labels import StationLabels

log = logging.getLogger("feddiff.edge")


@dataclass
class ForwardRequest:
    """A FORWARD with its weight-independent inputs (patches, frozen diffusion features) computed."""

    key: tuple
    inputs: dict
    n: int
    train: bool


class StationApp:
    def __init__(self, cfg: Config, name: str, state_dir: Path, progress: bool = True) -> None:
        if name not in cfg.federation.clients:
            raise ConfigError(f"{cfg.source}: federation.clients: no client named {name!r} (have: {', '.join(cfg.federation.clients)})")
        self.cfg, self.name, self.progress = cfg, name, progress
        holder = cfg.federation.label_holder == name
        scene = load_scene(cfg, modalities=list(cfg.federation.clients[name].modalities), with_labels=holder)
        self.station = Station(cfg, name, scene, state_dir)
        self.labels = StationLabels(scene, cfg, state_dir) if holder else None
        self.relay = None  # HE: the GradientOpener for the label holder's sealed gradients
        self.deferral = Deferral()
        self.node: Node  # set by attach

    def attach(self, node: Node) -> None:
        """Takes the relay box (HE) out of the node's security hooks: the opener comes with the
        keys, like the seal filters, never from a role."""
        from crypto.chain import take_relay_box

        self.node = node
        self.relay = take_relay_box(node.security)

    def persisted_seq(self) -> int:
        return int(self.station.meta.get("seq", 0))

    def hello(self, fresh: bool) -> Hello:
        """``fresh`` marks the first hello of this process: a station that restarted mid-round
        lost its pending graph, so the aggregator reruns the round."""
        s = self.station
        meta = {"classes": s.scene.class_names, "client": self.name, "modalities": s.modalities,
                "bands": {m: int(s.scene.modalities[m].shape[2]) for m in s.modalities}, "shape": list(s.scene.shape),
                "committed_round": s.committed_round, "fresh": fresh}
        hello = Hello(meta)
        if self.labels is not None:
            hello.train, hello.test = self.labels.samples()
        return hello

    def routes(self) -> dict[str, Route]:
        table = {
            jobs.DONE: Route(Done, self.on_done, any_attempt=True),
            jobs.JOB: Route(Job, self.on_job, any_attempt=True),
            jobs.FORWARD: Route(Forward, self.on_forward),
            jobs.BACKWARD: Route(SealedBackward, self.on_sealed_backward) if self.cfg.federation.security == "he" else Route(Backward, self.on_backward),
            jobs.GET_WEIGHTS: Route(GetWeights, self.on_get_weights),
            jobs.COMMIT: Route(Commit, self.on_commit),
        }
        if self.labels is not None:
            table.update(self.labels.routes(lambda payload, **kw: self.node.send(payload, **kw)))
        return table

    # -- handlers ---------------------------------------------------------------------------------
    def on_done(self, msg: Incoming) -> bool:
        stats = self.node.channel.stats
        self.station.write_meta(bytes_sent=stats.bytes_sent, bytes_received=stats.bytes_received)
        log.info("station %s: job done", self.name)
        return True

    def on_job(self, msg: Incoming) -> None:
        job: Job = msg.payload
        self.station.uplink.join(job)
        if not self.station.ready:
            if job.train is None:
                raise ValueError("JOB without training samples: cannot pretrain")
            log.info("station %s: pretraining its denoiser(s) locally", self.name)
            self.station.prepare(job.train.rows, job.train.cols, self.progress)
        self.deferral.clear()  # a request of the abandoned attempt
        self.station.rollback_to(job.round)
        self.station.begin_round(job.round)
        self.node.send(Ready(), round=job.round)

    def on_forward(self, msg: Incoming) -> None:
        f: Forward = msg.payload
        key = (msg.round, msg.step, msg.attempt)
        dih = f.dihedral if f.train else None
        request = ForwardRequest(key, self.station.inputs(f.rows, f.cols, dih, f.own), f.rows.shape[0], f.train)
        previous = (msg.round, msg.step - 1, msg.attempt)
        if f.train and self.station.awaits_gradient(previous):
            # the aggregator asks for step s+1 before step s's gradient has arrived, so that the
            # frozen features above were computed meanwhile; the trainable part needs the
            # updated weights, so the answer waits for that gradient
            self.deferral.hold(previous, request)
            return
        self.answer(request)

    def on_backward(self, msg: Incoming) -> None:
        self.apply_gradient((msg.round, msg.step, msg.attempt), msg.payload.grads)

    def on_sealed_backward(self, msg: Incoming) -> None:
        """HE: the label holder's gradient, sealed to this station and relayed unopened. A box
        for another station, step or attempt, or not signed by our label holder, is refused with
        one line and changes nothing (the round times out and reruns)."""
        from crypto.relay_box import RelayBoxError

        key = (msg.round, msg.step, msg.attempt)
        try:
            if self.relay is None:
                raise RelayBoxError("no relay box opener: HE mode needs this station's provisioned keys")
            grad = self.relay.open(msg.payload.box, msg.round, msg.step, msg.attempt)
            held = self.station.pending.get(key, {}).get("z")
            if held is not None and tuple(grad.shape) != tuple(held.shape):
                raise RelayBoxError(f"relayed gradient has shape {tuple(grad.shape)}, the features sent were {tuple(held.shape)}")
        except RelayBoxError as exc:
            log.warning("station %s: refused the relayed gradient of round %d step %d: %s", self.name, msg.round, msg.step, exc)
            self.node.observers.emit("message_rejected", party=self.name, kind=jobs.BACKWARD, reason="relay_box")
            return
        self.apply_gradient(key, {"z": grad})

    def apply_gradient(self, key: tuple, grads: dict) -> None:
        self.station.backward(key, grads)
        request = self.deferral.release(key)
        if request is not None:
            self.answer(request)

    def answer(self, request: ForwardRequest) -> None:
        rnd, step, _ = request.key
        self.node.send(self.station.forward_inputs(request.key, request.inputs, request.n, request.train), round=rnd, step=step)

    def on_get_weights(self, msg: Incoming) -> None:
        g: GetWeights = msg.payload
        self.node.send(self.station.weights(int(g.samples.get(self.name, 0)), g.totals), round=msg.round)

    def on_commit(self, msg: Incoming) -> None:
        c: Commit = msg.payload
        rnd, applied = msg.round, self.station.applied_steps
        if c.backward_steps is not None and c.backward_steps != applied:
            # a BACKWARD was lost in transit: committing would make a round with a step
            # missing permanent, so refuse and let the aggregator rerun the round
            why = f"{applied} of {c.backward_steps} gradient steps arrived"
            log.warning("station %s: not committing round %d: %s", self.name, rnd, why)
            self.node.send(Committed(why), round=rnd)
            return
        stats = self.node.channel.stats
        self.station.commit(rnd, c, self.node.channel.seq)
        hist = self.station.meta.get("bytes_by_round", {})
        hist[str(rnd)] = [stats.bytes_sent, stats.bytes_received]
        self.station.write_meta(bytes_sent=stats.bytes_sent, bytes_received=stats.bytes_received, bytes_by_round=hist)
        self.node.send(Committed(), round=rnd)
        log.info("station %s committed round %d", self.name, rnd)


def main(args: argparse.Namespace) -> int:
    from crypto.chain import party_security

    mon = start_role_monitoring(load_config(args.config), args.id, peer="aggregator")
    try:
        return serve(args, lambda cfg, state_dir: StationApp(cfg, args.id, state_dir, progress=sys.stderr.isatty()), party_security, mon.observers)
    finally:
        mon.close()
