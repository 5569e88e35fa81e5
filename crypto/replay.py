"""ReplayGuard: each sender's sequence numbers must strictly increase, across restarts too.

Why both a counter and a time window: the counter stops a recorded message from being replayed
while the receiver remembers the sender; the window bounds what can be replayed if the state file
is lost. Why persist: an aggregator that restarts mid-job would otherwise accept every message
recorded before the restart.

Why a journal beside the snapshot: a message is accepted only once its sequence number is on
disk, so the write is on every message's path. Replacing the whole state file each time (temp
file, fsync, rename) cost 0.75 ms a message, most of a signed job's overhead; appending one line
to ``<state>.journal`` and ``fdatasync``-ing it costs about a third of that. The snapshot
(``<state>``, JSON, replaced atomically) absorbs the journal at start-up and every
``compact_every`` records. A crash mid-append leaves at most a torn last line, written for a
message that was never accepted; it is dropped when the state is next loaded.

Place it *before* SealFilter in the outbound list (see ``crypto.security_filters``): inbound runs
reversed, so only authenticated messages advance a counter. Senders must therefore keep their
``seq`` increasing for the whole job (persist it, or seed it from a clock) or they will be
rejected after their own restart.
"""

from __future__ import annotations

import errno
import json
import logging
import math
import os
import time
from pathlib import Path
from typing import Callable, Optional

from crypto.keys import write_secret
from feddiff.errors import FedDiffError
from feddiff.protocol.message import EnvelopeError, Message

log = logging.getLogger(__name__)


class ReplayStateError(FedDiffError):
    """The replay state file exists but cannot be trusted; refuse to start rather than forget."""


class ReplayGuard:
    """Filter rejecting replays ('replay') and out-of-window timestamps ('stale')."""

    name = "replay"

    def __init__(self, state_path: Optional[Path], window_s: float, clock: Callable[[], float] = time.time, compact_every: int = 1024) -> None:
        self.state_path = Path(state_path) if state_path is not None else None
        self.journal_path = self.state_path.with_name(self.state_path.name + ".journal") if self.state_path else None
        self.window_s = float(window_s)
        self.clock = clock
        self.compact_every = max(1, int(compact_every))
        self._fd: Optional[int] = None
        self._journal_lines = 0
        self._needs_compaction = False
        self._last: dict[str, int] = self._load()
        if self.journal_path is not None and self.journal_path.exists():
            try:
                self._compact()  # fold the previous run's journal in, dropping any torn tail
            except OSError as e:  # read-only for now: the first accept retries and fails closed
                log.warning("cannot compact replay state %s: %s", self.state_path, e.strerror)
                self._needs_compaction = True

    def _unreadable(self, what: Path) -> ReplayStateError:
        return ReplayStateError(
            f"replay state {what} is unreadable; fix or remove it deliberately (removing it re-opens replays within the time window)"
        )

    def _load(self) -> dict[str, int]:
        last: dict[str, int] = {}
        if self.state_path is not None and self.state_path.exists():
            try:
                data = json.loads(self.state_path.read_text("utf-8"))
                last = data["last_seq"]
                if not isinstance(last, dict) or not all(_is_record(k, v) for k, v in last.items()):
                    raise ValueError("bad last_seq")
            except (OSError, ValueError, KeyError, TypeError):
                raise self._unreadable(self.state_path) from None
        last = dict(last)
        for sender, seq in self._journal_records():
            last[sender] = max(seq, last.get(sender, seq))
        return last

    def _journal_records(self) -> list[tuple[str, int]]:
        if self.journal_path is None or not self.journal_path.exists():
            return []
        try:
            raw = self.journal_path.read_bytes()
        except OSError:
            raise self._unreadable(self.journal_path) from None
        complete = raw[: raw.rfind(b"\n") + 1]  # a torn last line was never acknowledged
        if len(complete) < len(raw):
            log.warning("replay journal %s: dropping a torn last record (%d bytes)", self.journal_path, len(raw) - len(complete))
        records = []
        for line in complete.splitlines():
            try:
                sender, seq = json.loads(line)
                if not _is_record(sender, seq):
                    raise ValueError("bad record")
            except (ValueError, TypeError):
                raise self._unreadable(self.journal_path) from None
            records.append((sender, seq))
        return records

    def _compact(self) -> None:
        """Write the snapshot atomically, then empty the journal (in that order: a crash between
        the two replays records the snapshot already holds, which ``max`` makes harmless)."""
        assert self.state_path is not None and self.journal_path is not None
        write_secret(self.state_path, json.dumps({"version": 1, "last_seq": self._last}, sort_keys=True).encode())
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.fsync(self._fd)
        else:
            self.journal_path.unlink(missing_ok=True)
        _fsync_dir(self.state_path.parent)
        self._journal_lines = 0
        self._needs_compaction = False

    def _append(self, sender: str, seq: int) -> None:
        assert self.state_path is not None and self.journal_path is not None
        if self._needs_compaction or self._journal_lines >= self.compact_every:
            self._compact()
        if self._fd is None:
            self.journal_path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            _fsync_dir(self.journal_path.parent)  # the journal's own name must survive a crash
        line = json.dumps([sender, seq]).encode() + b"\n"
        try:
            if os.write(self._fd, line) != len(line):
                raise OSError(errno.EIO, "short write")
            os.fdatasync(self._fd)
        except OSError:
            self._needs_compaction = True  # the journal may end in a partial line: rewrite first
            raise
        self._journal_lines += 1

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

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
        try:
            if self.state_path is not None:
                self._append(sender, seq)
        except OSError as e:
            # Fail closed: accepting without a durable record would re-open the replay after a
            # restart. Nothing counts as recorded (a partial line is dropped or compacted away),
            # so a retransmission is judged afresh.
            log.error("cannot persist replay state %s: %s", self.state_path, e.strerror)
            raise EnvelopeError("replay_state", "cannot persist replay state") from None
        self._last[sender] = seq
        return msg


def _is_record(sender: object, seq: object) -> bool:
    return isinstance(sender, str) and isinstance(seq, int) and not isinstance(seq, bool)


def _fsync_dir(folder: Path) -> None:
    """Make a created or renamed entry durable (POSIX needs the directory itself synced)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return  # not every filesystem lets a directory be opened; the data itself is synced
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
