"""Hook points for monitoring: every party reports what happens as named events with fields.

A monitoring server (metrics, health, dashboard) subscribes an ``Observer``; the node loop and the
aggregator's round loop call ``emit`` and never know who listens. Events (fields):

  station_seen (party)              message_rejected (party, kind, reason)
  bytes (sent, received)            round_started (round, attempt)
  round_committed (round, loss, train_acc, seconds)   round_failed (round, reason, parties)
  step (round, step, loss)          validation (oa)   handler_failed (party, kind)
  received (kind, round)            loop (rejected)  -- a node's message in; each turn of its loop
                                    with the channel's rejection totals by reason
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

log = logging.getLogger("feddiff.observe")


class Observer(Protocol):
    def on_event(self, event: str, fields: dict[str, Any]) -> None: ...


class Observers:
    """Fan-out to the subscribed observers; one that raises is logged and never stops the party."""

    def __init__(self, observers: list[Observer] | None = None) -> None:
        self.observers: list[Observer] = list(observers or [])

    def subscribe(self, observer: Observer) -> None:
        self.observers.append(observer)

    def emit(self, event: str, **fields: Any) -> None:
        for o in self.observers:
            try:
                o.on_event(event, fields)
            except Exception:  # noqa: BLE001 - monitoring must not take a party down
                log.exception("observer %r failed on %s", o, event)
