"""Payload filters every message passes: compression and duplicate suppression.

Sealing (``crypto``) and chunking (``chunking``) are filters of the same shape. A sender's chain,
in outbound order, is [CompressFilter, <seal filters>, DedupFilter, ChunkFilter]; inbound the
``FilterChain`` runs it reversed, so reassembly comes first, then duplicates are dropped before
the (stateful, strict) replay guard could mistake a QoS-1 redelivery for an attack, then the
seal is opened, then the payload inflated.

Every filter here returns new ``Message``/``Header`` objects instead of editing the ones it was
given, and keeps ``payload_len``/``payload_sha256`` describing the payload it hands on.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import threading
import zlib
from collections import OrderedDict
from typing import Any, Optional

from feddiff.protocol.envelope import describe_payload
from feddiff.protocol.message import EnvelopeError, Message

log = logging.getLogger("feddiff.protocol")


def _with_payload(msg: Message, payload: bytes, ext: dict[str, Any]) -> Message:
    header = dataclasses.replace(msg.header, ext=ext)
    describe_payload(header, payload)
    return Message(msg.topic, header, payload)


#: Largest envelope a channel accepts by default (``federation.max_message_bytes``).
DEFAULT_MAX_MESSAGE_BYTES = 64 * 1024 * 1024
#: Inflated-size budgets of content types that never carry bulk arrays (jobs.py): a bomb sent
#: as one of them is refused at its declared size, long before the general limit.
CONTROL_BUDGETS: dict[str, int] = {t: 1024 * 1024 for t in ("ready", "committed", "done", "get_weights", "metrics")}


class CompressFilter:
    """zlib at ``level``; records {alg, raw_len} in header.ext['compress'].

    Why bounded inflation: a few KiB of zeros inflate to GiB (0.5 MB of zlib is 512 MiB of
    zeros). Inbound refuses a declared size above the budget of the message's content type
    (``budgets``, else ``max_bytes``: the channel's ``max_message_bytes``, see ``for_limit``)
    before inflating, and never produces more than the declared size ('oversized'). Outbound
    refuses to send what a receiver would refuse. Payloads under ``min_bytes``, or that zlib
    would not shrink, go out as they are, with no 'compress' entry (random floats and
    ciphertexts do not compress)."""

    name = "compress"

    def __init__(
        self,
        level: int = 1,
        max_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        min_bytes: int = 64,
        budgets: Optional[dict[str, int]] = None,
    ) -> None:
        if not -1 <= level <= 9:
            raise ValueError(f"zlib level must be in -1..9, got {level}")
        self.level, self.max_bytes, self.min_bytes = level, max_bytes, min_bytes
        self.budgets = dict(CONTROL_BUDGETS if budgets is None else budgets)

    @classmethod
    def for_limit(cls, max_message_bytes: int, level: int = 1) -> "CompressFilter":
        """The filter a channel with ``max_message_bytes`` needs: nothing inflates beyond it."""
        return cls(level=level, max_bytes=max_message_bytes)

    def limit(self, content_type: str) -> int:
        """Most bytes a payload of ``content_type`` may inflate to."""
        return min(self.budgets.get(content_type, self.max_bytes), self.max_bytes)

    def outbound(self, msg: Message) -> list[Message]:
        raw = bytes(msg.payload)
        if len(raw) > self.limit(msg.header.content_type):
            raise ValueError(f"{msg.header.content_type} payload of {len(raw)} bytes exceeds its limit {self.limit(msg.header.content_type)}")
        if len(raw) < self.min_bytes:
            return [msg]
        packed = zlib.compress(raw, self.level)
        if len(packed) >= len(raw):
            return [msg]
        ext = {**msg.header.ext, self.name: {"alg": "zlib", "raw_len": len(raw)}}
        return [_with_payload(msg, packed, ext)]

    def inbound(self, msg: Message) -> Optional[Message]:
        info = msg.header.ext.get(self.name)
        if info is None:
            return msg
        if not isinstance(info, dict) or set(info) != {"alg", "raw_len"} or info.get("alg") != "zlib":
            raise EnvelopeError("bad_header", "unknown compression parameters")
        raw_len = info["raw_len"]
        if not isinstance(raw_len, int) or isinstance(raw_len, bool) or raw_len < 0:
            raise EnvelopeError("bad_header", "compress.raw_len must be a non-negative integer")
        limit = self.limit(msg.header.content_type)
        if raw_len > limit:
            raise EnvelopeError("oversized", f"{msg.header.content_type} declared {raw_len} bytes inflated > limit {limit}")
        d = zlib.decompressobj()
        try:
            raw = d.decompress(bytes(msg.payload), raw_len + 1)
        except zlib.error:
            raise EnvelopeError("bad_payload", "corrupt compressed payload") from None
        if len(raw) > raw_len or d.unconsumed_tail:
            raise EnvelopeError("oversized", f"payload inflates beyond its declared {raw_len} bytes")
        if not d.eof or d.unused_data or len(raw) != raw_len:
            raise EnvelopeError("bad_payload", "compressed stream truncated or followed by garbage")
        ext = {k: v for k, v in msg.header.ext.items() if k != self.name}
        return _with_payload(msg, raw, ext)


@dataclasses.dataclass
class _SenderWindow:
    floor: int = -1  # every seq <= floor has been forgotten and counts as already seen
    seen: "OrderedDict[tuple[int, str], None]" = dataclasses.field(default_factory=OrderedDict)


class DedupFilter:
    """Swallows (returns None for) messages already delivered: QoS 1 means at least once.

    Per sender it remembers the last ``window`` (seq, payload digest) pairs, plus a floor: the
    highest seq it has forgotten. A message is a duplicate if its pair was seen, or if its seq is
    at or below the floor (older than anything remembered; logged as a warning, because a sender
    that restarted its counter from zero would look like this: senders must keep ``seq``
    increasing, see ``endpoint.fresh_seq``).

    Why the digest is part of the key: this filter runs before the seal is verified, so a forged
    message reusing a real sequence number must not make the real one look like a duplicate.

    ``to_dict``/``from_dict`` persist the windows, so a restarted receiver still recognises what
    the broker redelivers from before its restart. Memory is bounded by ``window`` x
    ``max_senders`` (least recently heard senders are forgotten first)."""

    name = "dedup"

    def __init__(self, window: int = 512, max_senders: int = 4096) -> None:
        if window < 1 or max_senders < 1:
            raise ValueError("window and max_senders must be >= 1")
        self.window, self.max_senders = window, max_senders
        self._senders: OrderedDict[str, _SenderWindow] = OrderedDict()
        self._lock = threading.Lock()
        self.duplicates = 0
        self.stale = 0

    def outbound(self, msg: Message) -> list[Message]:
        return [msg]

    def inbound(self, msg: Message) -> Optional[Message]:
        sender, seq = msg.header.sender, msg.header.seq
        digest = hashlib.sha256(msg.payload).hexdigest()[:32]
        with self._lock:
            w = self._senders.get(sender)
            if w is None:
                w = self._senders[sender] = _SenderWindow()
                while len(self._senders) > self.max_senders:
                    self._senders.popitem(last=False)
            else:
                self._senders.move_to_end(sender)
            if seq <= w.floor:
                self.stale += 1
                log.warning("dropping message %s#%d: older than the last %d remembered from this sender", sender, seq, self.window,
                            extra={"event": "dedup_stale", "sender": sender, "seq": seq})
                return None
            key = (seq, digest)
            if key in w.seen:
                self.duplicates += 1
                log.debug("dropping duplicate %s#%d", sender, seq)
                return None
            w.seen[key] = None
            while len(w.seen) > self.window:
                (old_seq, _), _ = w.seen.popitem(last=False)
                w.floor = max(w.floor, old_seq)
        return msg

    def high_water_marks(self) -> dict[str, int]:
        """Highest seq seen per sender (for status pages and tests)."""
        with self._lock:
            return {s: max([k[0] for k in w.seen] + [w.floor]) for s, w in self._senders.items()}

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state; restore with ``DedupFilter.from_dict``."""
        with self._lock:
            return {
                "version": 1,
                "window": self.window,
                "senders": {s: {"floor": w.floor, "seen": [[q, d] for q, d in w.seen]} for s, w in self._senders.items()},
            }

    @classmethod
    def from_dict(cls, data: dict[str, Any], window: Optional[int] = None, max_senders: int = 4096) -> "DedupFilter":
        """A filter remembering what ``data`` (from ``to_dict``) remembered; ValueError if malformed."""
        try:
            if data.get("version") != 1 or not isinstance(data["senders"], dict):
                raise ValueError("unsupported version")
            f = cls(window=window or int(data["window"]), max_senders=max_senders)
            for sender, sw in data["senders"].items():
                floor = sw["floor"]
                if not isinstance(sender, str) or not isinstance(floor, int) or isinstance(floor, bool):
                    raise ValueError(f"bad entry for {sender!r}")
                w = _SenderWindow(floor=floor)
                for q, d in sw["seen"]:
                    if not isinstance(q, int) or isinstance(q, bool) or not isinstance(d, str):
                        raise ValueError(f"bad seen entry for {sender!r}")
                    w.seen[(q, d)] = None
                while len(w.seen) > f.window:
                    (old_seq, _), _ = w.seen.popitem(last=False)
                    w.floor = max(w.floor, old_seq)
                f._senders[sender] = w
            while len(f._senders) > f.max_senders:
                f._senders.popitem(last=False)
            return f
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed dedup state: {type(exc).__name__}: {exc}") from None
