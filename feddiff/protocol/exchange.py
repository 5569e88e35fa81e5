"""Request/reply matching of a job, both sides: the one place that knows how replies pair up.

Aggregator side: ``Collector`` waits for one reply of a kind from each expected party for a
(round, step) of the current attempt, keeping replies that arrive before they are awaited
(pipelined requests) in a bounded early buffer; ``pipelined`` requests batch s+1 before batch s
is handed out. Party side: ``Deferral`` holds a pipelined FORWARD until the gradient it depends
on has been applied, so the pipelined result is exactly the unpipelined one.
"""

from __future__ import annotations

import time
from typing import Any, Callable, Iterator, Optional

MAX_AHEAD = 2  # early replies are kept for the awaited step and the next ones (pipeline depth 1, plus slack)
DEFAULT_EARLY_BYTES = 128 << 20  # per sender: a few pipelined replies of the largest allowed message


def size_of(msg: Any) -> int:
    """Payload bytes a received message pins in memory (its decoded arrays)."""
    arrays = getattr(msg, "arrays", None) or {}
    return sum(int(getattr(a, "nbytes", 0)) for a in arrays.values())


class Timeout(Exception):
    def __init__(self, missing: list[str]) -> None:
        self.missing = missing
        super().__init__(", ".join(missing))


class Collector:
    """``poll(timeout)`` gives (sender, kind, round, step, attempt, message) or None; ``on_other``
    sees every message not tied to an attempt (hellos) as (sender, message, awaited kind, round,
    expected, got so far) and may raise, or return True to count it as the awaited reply.

    The early buffer keeps only what a pipelined round can legitimately send ahead: replies of
    ``early_kinds`` (default: any) for the awaited round, from the awaited step up to
    ``MAX_AHEAD`` steps later, one per (kind, round, step, sender) and at most
    ``max_early_bytes`` per sender. Anything else is dropped, so an authenticated party cannot
    pin memory by answering rounds and steps nobody asked for."""

    def __init__(self, poll: Callable[[float], Optional[tuple]], on_other: Callable[[str, Any, str, int, set, dict], bool],
                 max_early_bytes: int = DEFAULT_EARLY_BYTES, early_kinds: Optional[set[str]] = None) -> None:
        self.poll, self.on_other = poll, on_other
        self.max_early_bytes, self.early_kinds = max_early_bytes, early_kinds
        self.attempt = 0
        self.early: dict[tuple, Any] = {}
        self.early_bytes: dict[str, int] = {}
        self.dropped = 0

    def reset(self, attempt: int) -> None:
        self.attempt = attempt
        self.early.clear()
        self.early_bytes.clear()

    def _take(self, key: tuple) -> Any:
        msg = self.early.pop(key)
        self.early_bytes[key[3]] -= size_of(msg)
        return msg

    def _keep(self, key: tuple, msg: Any, rnd: int, step: int) -> None:
        kind, r, s, sender = key
        size = size_of(msg)
        if key in self.early:  # a resent reply replaces the first one
            self._take(key)
        wanted = r == rnd and step <= s <= step + MAX_AHEAD and (self.early_kinds is None or kind in self.early_kinds)
        if not wanted or self.early_bytes.get(sender, 0) + size > self.max_early_bytes:
            self.dropped += 1
            return
        self.early[key] = msg
        self.early_bytes[sender] = self.early_bytes.get(sender, 0) + size

    def collect(self, kind: str, expected: set[str], rnd: int, step: int, timeout: float, stopped: Callable[[], bool] = lambda: False) -> dict:
        deadline = time.monotonic() + timeout
        got: dict = {c: self._take((kind, rnd, step, c)) for c in expected if (kind, rnd, step, c) in self.early}
        while expected - set(got):
            if stopped():
                raise InterruptedError("stopping")
            left = deadline - time.monotonic()
            if left <= 0:
                raise Timeout(sorted(expected - set(got)))
            item = self.poll(min(left, 1.0))
            if item is None:
                continue
            sender, k, r, s, attempt, msg = item
            if attempt is None:  # not tied to an attempt (hello)
                if self.on_other(sender, msg, kind, rnd, expected, got):
                    got[sender] = msg
                continue
            if attempt != self.attempt:
                continue
            if k == kind and r == rnd and s == step:
                got[sender] = msg
            else:  # pipelined requests: an answer can come before it is awaited
                self._keep((k, r, s, sender), msg, rnd, step)
        return got


def pipelined(batches: list, request: Callable[[int, Any], Any], receive: Callable[[int, Any, Any], Any]) -> Iterator:
    """``receive(step, batch, pending)`` for each batch, in order, where ``pending`` is what
    ``request(step, batch)`` returned. The next batch is requested before the current one is
    handed out, so the parties work on it while the caller runs its part of the step."""
    if not batches:
        return
    pending = request(0, batches[0])
    for step, batch in enumerate(batches):
        got = receive(step, batch, pending)
        if step + 1 < len(batches):
            pending = request(step + 1, batches[step + 1])
        yield got


class Deferral:
    """Party side of ``pipelined``: a request that must wait for the gradient of the step before."""

    def __init__(self) -> None:
        self.held: Optional[tuple[tuple, Any]] = None

    def hold(self, waits_for: tuple, request: Any) -> None:
        self.held = (waits_for, request)

    def release(self, applied: tuple) -> Optional[Any]:
        """The held request if it waited for ``applied``, else None."""
        if self.held is not None and self.held[0] == applied:
            request, self.held = self.held[1], None
            return request
        return None

    def clear(self) -> None:
        self.held = None
