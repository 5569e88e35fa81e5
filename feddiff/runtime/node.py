"""One party's long-running loop: the plumbing every non-aggregator party shares.

The node connects, says hello (``fresh`` on the first one, then every ``IDLE_HELLO_S`` of
silence so a restarted aggregator finds it), drops messages of another attempt, decodes each
payload into its typed message, calls the handler the app registered for that kind, and
contains a handler's exception (logged; the aggregator reruns the round), so one bad request
never takes a party down. JOB starts an attempt: its ``attempt`` is adopted before the handler
runs and forgotten if the handler fails, so a party that could not join answers nothing.
"""

from __future__ import annotations

import argparse
import logging
import signal
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Optional, Protocol

from feddiff.config import Config, load_config
from feddiff.logs import configure_logging
from feddiff.model.ensemble import check_federable
from feddiff.protocol import jobs, topics
from feddiff.protocol.endpoint import fresh_seq, open_channel
from feddiff.protocol.message import EnvelopeError
from feddiff.protocol.messages import Hello, Payload
from feddiff.runtime.observe import Observers

log = logging.getLogger("feddiff.node")
IDLE_HELLO_S = 5.0


@dataclass
class Incoming:
    """A received message, decoded: what a handler gets."""

    kind: str
    round: int
    step: int
    attempt: int
    payload: Any


@dataclass
class Route:
    """How a kind is handled: the payload class that decodes it and the handler; a handler that
    returns True ends the loop (DONE)."""

    payload: type[Payload]
    handler: Callable[[Incoming], Optional[bool]]
    any_attempt: bool = False  # JOB and DONE: not tied to the current attempt


class App(Protocol):
    """What a party brings to the node: its hello, its handlers, and where its sequence resumes;
    ``attach`` hands it the node it sends through."""

    def attach(self, node: "Node") -> None: ...

    def hello(self, fresh: bool) -> Hello: ...

    def routes(self) -> dict[str, Route]: ...

    def persisted_seq(self) -> int: ...


def serve(args: argparse.Namespace, build: Callable[[Config, Path], App], security: Callable[[Config, str, Path], dict],
          observers: Optional[Observers] = None) -> int:
    """A party's process: config, state folder, logging, then the node loop until DONE or SIGTERM.
    ``security`` is ``crypto.chain.party_security`` (passed in: the core never imports crypto);
    ``observers`` is where a monitoring server subscribes (``feddiff.runtime.observe``)."""
    cfg = load_config(args.config)
    check_federable(cfg.model, args.config)
    state_dir = Path(args.state_dir) if args.state_dir else Path(cfg.resolve(cfg.federation.state_dir)) / args.id
    state_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(getattr(args, "verbose", False), str(state_dir / "edge.log.jsonl"), name=args.id)
    app = build(cfg, state_dir)
    node = Node(cfg, args.id, app, security(cfg, args.id, state_dir), observers)
    app.attach(node)
    signal.signal(signal.SIGTERM, lambda *_: node.stop_event.set())
    return node.run()


class Node:
    def __init__(self, cfg: Config, name: str, app: App, security: Optional[dict] = None, observers: Optional[Observers] = None) -> None:
        self.cfg, self.name, self.job, self.app = cfg, name, cfg.federation.job, app
        self.security = security or {}
        self.observers = observers or Observers()
        self.stop_event = threading.Event()
        self.attempt = -1
        self.channel = None
        self.table = app.routes()

    def connect(self) -> None:
        b = self.cfg.federation.broker
        subscriptions = [topics.downlink(self.job, self.name), topics.broadcast(self.job)]
        self.channel = open_channel(self.cfg, self.name, subscriptions, seq_start=fresh_seq(self.app.persisted_seq()), **self.security)
        log.info("%s connected to %s:%d", self.name, b.host, b.port)

    def send(self, payload: Payload, *, round: int = 0, step: int = 0) -> None:
        arrays, meta = payload.to_arrays()
        if payload.kind != jobs.HELLO:
            meta = {"attempt": self.attempt, **meta}
        self.channel.send(topics.uplink(self.job, self.name), payload.kind, arrays, round=round, step=step, meta=meta)
        self.observers.emit("bytes", sent=self.channel.stats.bytes_sent, received=self.channel.stats.bytes_received)

    def run(self) -> int:
        self.connect()
        self.send(self.app.hello(True))
        last_heard = time.monotonic()
        try:
            while not self.stop_event.is_set():
                msg = self.channel.recv(timeout=1.0)
                self.observers.emit("loop", rejected=self.channel.stats.rejected)
                if msg is None:
                    if time.monotonic() - last_heard > IDLE_HELLO_S:
                        self.send(self.app.hello(False))  # the aggregator may have (re)started after us
                        last_heard = time.monotonic()
                    continue
                last_heard = time.monotonic()
                if self.dispatch(msg):
                    break
        finally:
            self.channel.close()
        return 0

    def dispatch(self, msg) -> bool:
        """Decode and handle one message; True when the party is done."""
        kind, meta = msg.header.content_type, msg.meta or {}
        self.observers.emit("received", kind=kind, round=msg.header.round)
        route = self.table.get(kind)
        if route is None:
            log.debug("%s: no handler for %s", self.name, kind)
            return False
        attempt = meta.get("attempt")
        if not route.any_attempt and (attempt != self.attempt or self.attempt < 0):
            log.debug("%s: ignoring %s of attempt %s", self.name, kind, attempt)
            return False
        try:
            if kind == jobs.JOB and (isinstance(attempt, bool) or not isinstance(attempt, int)):
                raise EnvelopeError("bad_payload", f"meta 'attempt': expected an integer, got {attempt!r}")
            payload = route.payload.from_arrays(msg.arrays, meta)
        except EnvelopeError as exc:
            log.warning("%s: rejected %s: %s", self.name, kind, exc)
            self.observers.emit("message_rejected", party=self.name, kind=kind, reason=exc.reason)
            return False
        if kind == jobs.JOB:
            self.attempt = int(attempt)
        try:
            return bool(route.handler(Incoming(kind, msg.header.round, msg.header.step, self.attempt, payload)))
        except Exception:  # a bad request must not take the party down; the round will rerun
            if kind == jobs.JOB:
                self.attempt = -1
            log.exception("%s: failed to handle %s (round %d step %d)", self.name, kind, msg.header.round, msg.header.step)
            self.observers.emit("handler_failed", party=self.name, kind=kind)
            return False
