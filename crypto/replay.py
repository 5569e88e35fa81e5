"""ReplayGuard: each sender's sequence numbers must strictly increase, across restarts too.

Why both a counter and a time window: the counter stops a recorded message from being replayed
while the receiver remembers the sender; the window bounds what can be replayed if the state file
is lost. Why persist: an aggregator that restarts mid-job would otherwise accept every message
recorded before the restart. The file is replaced atomically (temp file, fsync, os.replace) so
a crash leaves the old or the new state, never a torn one.

Place it *before* SealFilter in the outbound list (see ``crypto.security_filters``): inbound runs
reversed, so only authenticated messages advance a counter. Senders must therefore keep their
``seq`` increasing for the whole job (persist it, or seed it from a clock) or they will be
rejected after their own restart.
"""

from __future__ import annotations

import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Optional

from feddiff.errors import FedDiffError
from feddiff.protocol.message import EnvelopeError, Message

log = logging.getLogger(__name__)


class ReplayStateError(FedDiffError):
    """The replay state file exists but cannot be trusted; refuse to start rather than forget."""


class ReplayGuard:
    """Filter rejecting replays ('replay') and out-of-window timestamps ('stale')."""

    name = "replay"

    def __init__(self, state_path: Optional[Path], window_s: float, clock: Callable[[], float] = time.time) -> None:
        self.state_path = Path(state_path) if state_path is not None else None
        self.window_s = float(window_s)
        self.clock = clock
        self._last: dict[str, int] = self._load()

    def _load(self) -> dict[str, int]:
        if self.state_path is None or not self.state_path.exists():
            return {}
        try:
            data = json.loads(self.state_path.read_text("utf-8"))
            last = data["last_seq"]
            if not isinstance(last, dict) or not all(
                isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool) for k, v in last.items()
            ):
                raise ValueError("bad last_seq")
        except (OSError, ValueError, KeyError, TypeError):
            raise ReplayStateError(
                f"replay state {self.state_path} is unreadable; fix or remove it deliberately (removing it re-opens replays within the time window)"
            ) from None
        return dict(last)

    def _persist(self) -> None:
        if self.state_path is None:
            return
        self.state_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.state_path.with_name(f".{self.state_path.name}.tmp{os.getpid()}")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"version": 1, "last_seq": self._last}, f, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.state_path)

    def last_seq(self, sender: str) -> Optional[int]:
        return self._last.get(sender)

    def outbound(self, msg: Message) -> list[Message]:
        return [msg]

    def inbound(self, msg: Message) -> Optional[Message]:
        try:
            h = msg.header
            sender, seq, ts = h.sender, h.seq, h.timestamp
        except AttributeError:
            raise EnvelopeError("malformed", "header fields") from None
        if not isinstance(sender, str) or isinstance(seq, bool) or not isinstance(seq, int):
            raise EnvelopeError("malformed", "sender/seq")
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or abs(self.clock() - ts) > self.window_s:
            raise EnvelopeError("stale", f"timestamp outside the {self.window_s:g}s window")
        previous = self._last.get(sender)
        if previous is not None and seq <= previous:
            log.warning("replay from %r: seq %d <= %d", sender, seq, previous)
            raise EnvelopeError("replay", f"{sender!r} seq {seq} <= {previous}")
        self._last[sender] = seq
        try:
            self._persist()
        except OSError as e:
            # Fail closed: accepting without a durable record would re-open the replay after a
            # restart. Roll back so a retransmission is judged afresh.
            if previous is None:
                del self._last[sender]
            else:
                self._last[sender] = previous
            log.error("cannot persist replay state %s: %s", self.state_path, e.strerror)
            raise EnvelopeError("replay_state", "cannot persist replay state") from None
        return msg
