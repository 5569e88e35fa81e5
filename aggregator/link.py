"""The aggregator's end of the job's messages: typed sends and collects, hellos, restarts.

Every request goes out through ``send`` (stamped with the current attempt, counted per kind and
party for the commit check), every reply comes back through ``collect`` (matched by
``feddiff.protocol.exchange.Collector``, decoded into its typed message). A hello is handled
here whatever is awaited: it records the party, hands a label holder's hello to
``on_holder_hello``, resends a lost JOB, and fails the round when a party restarted.
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Callable, Optional

import numpy as np

from feddiff.config import Config
from feddiff.errors import FedDiffError
from feddiff.protocol import jobs, topics
from feddiff.protocol.exchange import Collector, Timeout
from feddiff.protocol.message import EnvelopeError
from feddiff.protocol.messages import Done, Hello, Job, Payload
from feddiff.runtime.observe import Observers

from aggregator.status import StatusBoard

log = logging.getLogger("feddiff.aggregator")


class RoundFailed(Exception):
    def __init__(self, reason: str, clients: list[str]) -> None:
        self.reason, self.clients = reason, clients
        super().__init__(f"{reason}: {', '.join(clients) or '-'}")


# what parties send back to the aggregator: only these may wait in the early-reply buffer
REPLY_KINDS = {jobs.READY, jobs.FEATURES, jobs.CE_GRAD, jobs.HEAD_GRAD, jobs.PREDICTIONS, jobs.METRICS, jobs.WEIGHTS, jobs.COMMITTED}


def require_finite(arrays: dict) -> None:
    """ValueError naming the first float array holding NaN or infinity (a gradient or logits
    of NaN would poison the model for every party)."""
    for name, a in arrays.items():
        if np.issubdtype(np.asarray(a).dtype, np.floating) and not np.all(np.isfinite(a)):
            raise ValueError(f"array {name!r} holds non-finite values")


def check_shape(sender: str, name: str, got: tuple, want: tuple) -> None:
    """ValueError unless ``got`` equals ``want`` (what the round asked ``sender`` for)."""
    if tuple(got) != tuple(want):
        raise ValueError(f"{name} from {sender}: shape {tuple(got)}, the round asked for {tuple(want)}")


def scene_shape(value, max_pixels: int) -> tuple:
    """A station's announced scene (rows, cols), or () if it announced none: two positive
    integers whose product stays within ``max_pixels`` (``federation.max_message_bytes``: a
    class map past it could not be sent anyway). ValueError naming what is wrong otherwise:
    the aggregator allocates per-pixel arrays of this shape for the map."""
    if value in ((), [], None):
        return ()
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        raise ValueError(f"shape {value!r}: expected [rows, cols]")
    if any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value):
        raise ValueError(f"shape {value!r}: rows and cols must be positive integers")
    if value[0] * value[1] > max_pixels:
        raise ValueError(f"shape {value!r}: {value[0] * value[1]} pixels exceed the job's limit of {max_pixels}")
    return (int(value[0]), int(value[1]))


class Link:
    def __init__(self, cfg: Config, channel, status: StatusBoard, observers: Optional[Observers] = None) -> None:
        self.cfg, self.fed, self.channel, self.status = cfg, cfg.federation, channel, status
        self.observers = observers or Observers()
        self.clients = dict(self.fed.clients)
        self.holder = self.fed.label_holder if self.fed.label_holder != "aggregator" else None
        self.parties = list(self.clients) + ([self.holder] if self.holder and self.holder not in self.clients else [])
        self.hellos: dict[str, dict] = {}
        self.scene_shape: tuple = ()
        self.stop_requested = False
        self.sent: Counter = Counter()  # (kind, party) -> messages sent this attempt
        self.on_holder_hello: Callable[[Hello], None] = lambda hello: None
        self.job_for: Callable[[str, int], Job] = lambda party, rnd: Job(rnd)
        self.collector = Collector(self._poll, self._on_hello, max_early_bytes=2 * self.fed.max_message_bytes, early_kinds=REPLY_KINDS)

    @property
    def attempt(self) -> int:
        return self.collector.attempt

    def new_attempt(self, attempt: int) -> None:
        self.collector.reset(attempt)
        self.hellos.clear()
        self.sent.clear()

    # -- out ---------------------------------------------------------------------------------
    def send(self, party: str, payload: Payload, *, round: int = 0, step: int = 0) -> None:
        arrays, meta = payload.to_arrays()
        self.channel.send(topics.downlink(self.fed.job, party), payload.kind, arrays, round=round, step=step, meta={"attempt": self.attempt, **meta})
        self.sent[(payload.kind, party)] += 1

    def finish(self, rnd: int) -> None:
        for c in self.parties:
            self.send(c, Done())
        self.channel.send(topics.broadcast(self.fed.job), jobs.DONE, {}, round=rnd, step=0, meta={})

    # -- in ----------------------------------------------------------------------------------
    def collect(self, payload: type[Payload], expected: set[str], rnd: int, step: int = 0, timeout: Optional[float] = None,
                check: Optional[Callable[[str, Payload], None]] = None) -> dict:
        """One ``payload`` reply per expected party, decoded and validated; RoundFailed on
        timeout, stop, restart, or a reply that does not decode, holds a non-finite float, or
        fails ``check`` (what the round asked for: shapes, sizes; it raises ValueError or a
        FedDiffError naming what is wrong). A bad reply fails the round naming its sender: it
        never raises out of the daemon."""
        try:
            got = self.collector.collect(payload.kind, set(expected), rnd, step, timeout or self.fed.round_timeout_s, lambda: self.stop_requested)
        except Timeout as exc:
            raise RoundFailed("timeout", exc.missing) from None
        except InterruptedError:
            raise RoundFailed("stopping", []) from None
        out = {}
        for sender, msg in got.items():
            try:
                out[sender] = payload.from_arrays(msg.arrays, msg.meta or {})
                require_finite(msg.arrays)
                if check is not None:
                    check(sender, out[sender])
            except (EnvelopeError, ValueError, FedDiffError) as exc:
                log.warning("bad %s from %s: %s", payload.kind, sender, exc)
                self.observers.emit("message_rejected", party=sender, kind=payload.kind, reason=getattr(exc, "reason", "bad_reply"))
                raise RoundFailed("bad_reply", [sender]) from None
        return out

    def _poll(self, timeout: float) -> Optional[tuple]:
        msg = self.channel.recv(timeout=timeout)
        stats = self.channel.stats
        self.status.update(bytes_sent=stats.bytes_sent, bytes_received=stats.bytes_received, rejected=dict(stats.rejected))
        self.observers.emit("bytes", sent=stats.bytes_sent, received=stats.bytes_received)
        if msg is None:
            return None
        sender = self._sender(msg)
        if sender is None:
            return None
        self.status.seen(sender)
        self.observers.emit("station_seen", party=sender)
        h = msg.header
        attempt = None if h.content_type == jobs.HELLO else (msg.meta or {}).get("attempt")
        return sender, h.content_type, h.round, h.step, attempt, msg

    def _sender(self, msg) -> Optional[str]:
        try:
            job, kind, client = topics.parse_topic(msg.topic)
        except ValueError:
            return None
        if job != self.fed.job or kind != "up" or client != msg.header.sender or client not in self.parties:
            log.warning("dropped message from %r on %s", msg.header.sender, msg.topic)
            self.observers.emit("message_rejected", party=msg.header.sender, kind=msg.header.content_type, reason="not_a_party")
            return None
        return client

    def _on_hello(self, sender: str, msg, kind: str, rnd: int, expected: set, got: dict) -> bool:
        try:
            hello = Hello.from_arrays(msg.arrays, msg.meta or {})
        except EnvelopeError as exc:
            log.warning("bad hello from %s: %s", sender, exc)
            return False
        shape = ()
        if sender in self.clients:
            try:
                shape = scene_shape(hello.meta.get("shape", ()), self.fed.max_message_bytes)
            except ValueError as exc:
                log.warning("refused hello from %s: %s", sender, exc)
                self.observers.emit("message_rejected", party=sender, kind=jobs.HELLO, reason="bad_payload")
                return False
        self.hellos[sender] = hello.meta
        if sender == self.holder:
            self.on_holder_hello(hello)
        if sender in self.clients:
            self.scene_shape = shape
        if kind == jobs.HELLO:
            return True
        if hello.fresh:
            raise RoundFailed("restarted", [sender])
        if kind == jobs.READY and sender in expected and sender not in got:
            self.send(sender, self.job_for(sender, rnd), round=rnd)  # idle and not READY: our JOB was lost (broker restart)
        return False

    def await_parties(self, missing: Optional[set[str]] = None) -> None:
        missing = set(self.parties) if missing is None else missing
        self.status.update(phase="waiting for stations", waiting_for=sorted(missing))
        log.info("waiting for stations: %s", ", ".join(sorted(missing)))
        while missing - set(self.hellos):
            try:
                self.collect(Hello, missing - set(self.hellos), 0, 0)
            except RoundFailed as exc:
                if exc.reason == "stopping":
                    raise
                log.warning("still waiting for stations: %s", ", ".join(exc.clients))
                self.status.update(last_error=f"waiting for {', '.join(exc.clients)}")
