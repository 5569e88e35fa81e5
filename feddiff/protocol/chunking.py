"""Chunking of payloads larger than a broker comfortably carries in one message.

Why chunk at all: one multi-MB MQTT message blocks a connection, is resent whole after a
disconnect, and runs into ``message_size_limit`` on brokers run by someone else. Each chunk is a
full envelope that repeats the (already sealed) header and adds::

    ext['chunk'] = {id: "<sender>:<seq>", index, count, total_len, sha256 (of the whole payload)}

The receiver buffers chunks per (topic, sender, id), tolerates duplicates (QoS 1) and any arrival
order (a lost chunk resent later), checks the whole digest, and forgets incomplete sets after
``timeout_s`` of silence. Memory is bounded: a set may not exceed ``max_total_bytes``, at most
``max_pending`` sets are buffered, and all buffered bytes stay under ``max_buffered_bytes``.

Why per-sender quotas: reassembly runs before the seal can be checked, so anything buffered is
unauthenticated. ``check_topic_sender`` ties the header's sender to the topic (which the broker
ACL ties to one party); each (topic, sender) may hold ``per_sender_pending`` sets and
``per_sender_bytes`` bytes, beyond which its own oldest set goes; and when the shared limits
are reached, the sender holding the most yields first. A flood of tiny sets from one station
thus evicts that station's own sets, never another's half-received message.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import re
import time
from collections import OrderedDict
from typing import Any, Callable, Optional

from feddiff.protocol.filters import check_topic_sender
from feddiff.protocol.message import EnvelopeError, Header, Message

log = logging.getLogger("feddiff.protocol")

_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_CHUNK_KEYS = frozenset({"id", "index", "count", "total_len", "sha256"})


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _fingerprint(h: Header) -> tuple:
    """What every chunk of one message must agree on (all but the chunk index and framing)."""
    ext = {k: v for k, v in h.ext.items() if k != "chunk"}
    chunk = {k: v for k, v in h.ext["chunk"].items() if k != "index"}
    rest = json.dumps([ext, chunk], sort_keys=True, default=repr)
    return (h.job, h.round, h.step, h.sender, h.seq, h.content_type, h.version, h.timestamp, rest)


@dataclasses.dataclass
class _Pending:
    header: Header
    fingerprint: tuple
    count: int
    total: int
    sha256: str
    touched: float
    parts: dict[int, bytes] = dataclasses.field(default_factory=dict)
    size: int = 0


class ChunkFilter:
    name = "chunk"

    def __init__(
        self,
        max_chunk_bytes: int = 256 * 1024,
        max_total_bytes: int = 64 * 1024 * 1024,
        timeout_s: float = 60.0,
        max_pending: int = 64,
        max_buffered_bytes: Optional[int] = None,
        clock: Callable[[], float] = time.monotonic,
        per_sender_pending: Optional[int] = None,
        per_sender_bytes: Optional[int] = None,
    ) -> None:
        if max_chunk_bytes < 1:
            raise ValueError("max_chunk_bytes must be >= 1")
        self.max_chunk_bytes = max_chunk_bytes
        self.max_total_bytes = max_total_bytes
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        # one whole message must always fit, or it could never be reassembled
        self.max_buffered_bytes = max(max_buffered_bytes if max_buffered_bytes is not None else 2 * max_total_bytes, max_total_bytes)
        self.per_sender_pending = per_sender_pending or max(1, max_pending // 4)
        self.per_sender_bytes = max(per_sender_bytes or self.max_buffered_bytes // 2, max_total_bytes)
        self.clock = clock
        self.pending: OrderedDict[tuple, _Pending] = OrderedDict()
        self._done: OrderedDict[tuple, None] = OrderedDict()  # recently completed sets: late duplicates
        self.expired = 0
        self.duplicates = 0

    # ------------------------------------------------------------------ outbound

    def outbound(self, msg: Message) -> list[Message]:
        data = bytes(msg.payload)
        if len(data) <= self.max_chunk_bytes:
            return [msg]
        if len(data) > self.max_total_bytes:
            raise ValueError(f"payload of {len(data)} bytes exceeds max_total_bytes {self.max_total_bytes}")
        digest = msg.sha256()
        count = -(-len(data) // self.max_chunk_bytes)
        cid = f"{msg.header.sender}:{msg.header.seq}"
        # one timestamp for all chunks: the receiver checks that siblings agree on the header
        timestamp = msg.header.timestamp or time.time()
        out = []
        for i in range(count):
            part = data[i * self.max_chunk_bytes : (i + 1) * self.max_chunk_bytes]
            ext = {**msg.header.ext, "chunk": {"id": cid, "index": i, "count": count, "total_len": len(data), "sha256": digest}}
            header = dataclasses.replace(msg.header, ext=ext, timestamp=timestamp, payload_len=0, payload_sha256="")
            out.append(Message(msg.topic, header, part))
        return out

    # ------------------------------------------------------------------ inbound

    def expire(self) -> int:
        """Forget sets silent for longer than ``timeout_s``; returns how many were dropped."""
        now = self.clock()
        stale = [k for k, p in self.pending.items() if now - p.touched > self.timeout_s]
        for key in stale:
            p = self.pending.pop(key)
            log.warning("dropping incomplete chunked message %s from %s: %d of %d chunks after %.0fs",
                        key[2], key[1], len(p.parts), p.count, self.timeout_s,
                        extra={"event": "chunk_expired", "sender": key[1]})
        self.expired += len(stale)
        return len(stale)

    @property
    def buffered_bytes(self) -> int:
        return sum(p.size for p in self.pending.values())

    def _parse(self, info: Any) -> tuple[str, int, int, int, str]:
        if not isinstance(info, dict) or set(info) != _CHUNK_KEYS:
            raise EnvelopeError("bad_chunk", "malformed chunk header")
        cid, idx, count, total, digest = (info[k] for k in ("id", "index", "count", "total_len", "sha256"))
        if not isinstance(cid, str) or not 0 < len(cid) <= 200 or not isinstance(digest, str) or not _HEX64.match(digest):
            raise EnvelopeError("bad_chunk", "malformed chunk id or digest")
        if not (_is_count(idx) and _is_count(count) and _is_count(total)) or not idx < count:
            raise EnvelopeError("bad_chunk", "chunk index/count out of range")
        if total > self.max_total_bytes:
            raise EnvelopeError("oversized", f"chunked message of {total} bytes > limit {self.max_total_bytes}")
        if count > max(total, 1):
            raise EnvelopeError("oversized", f"{count} chunks cannot make {total} bytes")
        return cid, idx, count, total, digest

    def _drop(self, key: tuple, why: str) -> None:
        self.pending.pop(key)
        self.expired += 1
        log.warning("dropping incomplete chunked message %s from %s: %s", key[2], key[1], why,
                    extra={"event": "chunk_evicted", "sender": key[1]})

    def _load(self, sender: tuple) -> tuple[int, int]:
        """(sets, bytes) buffered for one (topic, sender)."""
        own = [p for k, p in self.pending.items() if k[:2] == sender]
        return len(own), sum(p.size for p in own)

    def _make_room(self, incoming: int, keep: tuple, new_set: bool) -> None:
        """Make ``incoming`` more bytes (and, for a new set, one more set) fit: first within the
        sender's own quota, by dropping its own oldest other sets; then within the shared
        limits, by dropping the oldest set of whichever sender holds the most."""
        sender = keep[:2]
        while True:
            sets, size = self._load(sender)
            if not ((new_set and sets >= self.per_sender_pending) or size + incoming > self.per_sender_bytes):
                break
            own = [k for k in self.pending if k[:2] == sender and k != keep]
            if not own:
                break
            self._drop(own[0], "over its sender's quota")
        while (new_set and len(self.pending) >= self.max_pending) or self.buffered_bytes + incoming > self.max_buffered_bytes:
            others = [k for k in self.pending if k != keep]
            if not others:
                break
            heaviest = max({k[:2] for k in others}, key=lambda s: (self._load(s)[0] + (s == sender), self._load(s)[1]))
            self._drop(next(k for k in others if k[:2] == heaviest), "buffer limits reached")

    def inbound(self, msg: Message) -> Optional[Message]:
        check_topic_sender(msg.topic, msg.header.sender)
        info = msg.header.ext.get("chunk")
        if info is None:
            return msg
        cid, idx, count, total, digest = self._parse(info)
        self.expire()
        key = (msg.topic, msg.header.sender, cid)
        if key in self._done:
            self.duplicates += 1
            return None
        fp = _fingerprint(msg.header)
        entry = self.pending.get(key)
        if entry is not None and entry.fingerprint != fp:
            raise EnvelopeError("bad_chunk", f"chunk {idx} of {cid} does not match its siblings")
        if entry is not None and idx in entry.parts:
            entry.touched = self.clock()
            self.duplicates += 1
            return None
        if (entry.size if entry else 0) + len(msg.payload) > total:
            self.pending.pop(key, None)
            raise EnvelopeError("oversized", f"chunks of {cid} exceed the declared {total} bytes")
        self._make_room(len(msg.payload), keep=key, new_set=entry is None)
        if entry is None:
            entry = self.pending[key] = _Pending(msg.header, fp, count, total, digest, self.clock())
        entry.touched = self.clock()
        self.pending.move_to_end(key)
        entry.parts[idx] = bytes(msg.payload)
        entry.size += len(msg.payload)
        if len(entry.parts) < count:
            return None
        del self.pending[key]
        whole = Message(msg.topic, entry.header, b"".join(entry.parts[i] for i in range(count)))
        if len(whole.payload) != total or whole.sha256() != digest:
            raise EnvelopeError("bad_chunk", f"reassembled {cid} does not match its sha256")
        self._done[key] = None
        while len(self._done) > 4 * self.max_pending:
            self._done.popitem(last=False)
        ext = {k: v for k, v in entry.header.ext.items() if k != "chunk"}
        return whole.with_header(dataclasses.replace(entry.header, ext=ext, payload_len=total, payload_sha256=digest))
