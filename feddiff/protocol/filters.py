"""Payload filters every message passes: compression and duplicate suppression.

Sealing (``crypto``) and chunking (``chunking``) are filters of the same shape; the
``FilterChain`` runs the outbound order reversed on the way in. Reassembly must come first
inbound (the seal covers the whole message), so ``ChunkFilter`` keeps state before anything is
authenticated; ``DedupFilter`` belongs after the seal is verified. Both key their state by
(topic, sender) after ``check_topic_sender``, so pre-authentication state can only be touched
by the party the broker authenticated for the topic.

Every filter here returns new ``Message``/``Header`` objects instead of editing the ones it was
given. ``payload_len``/``payload_sha256`` describe the bytes on the wire only (``pack`` fills them,
``unpack`` checks them); inside the chain ``Message.sha256`` is the digest, computed once per
payload.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import zlib
from collections import OrderedDict
from typing import Any, Optional

from feddiff.protocol import topics
from feddiff.protocol.message import EnvelopeError, Message

log = logging.getLogger("feddiff.protocol")


def _with_payload(msg: Message, payload: bytes, ext: dict[str, Any]) -> Message:
    """A new payload: the header's wire description (length, sha256) is cleared, ``pack`` fills
    it in once for the bytes that go out, and ``Message.sha256`` hashes the new bytes on demand."""
    header = dataclasses.replace(msg.header, ext=ext, payload_len=0, payload_sha256="")
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


def check_topic_sender(topic: str, sender: str) -> None:
    """An uplink or presence topic has one writer: refuse a header naming anyone else.

    Why here, before any state: the broker ACL lets a party write only its own uplink, so once
    this holds, whatever a filter remembers under (topic, sender) was put there by the party the
    broker authenticated for that topic, and a station cannot act on another station's state by
    writing a forged ``sender`` into a header on its own uplink."""
    try:
        _job, kind, client = topics.parse_topic(topic)
    except ValueError:
        return  # a topic outside the scheme the application subscribed to itself
    if kind in ("up", "presence") and client != sender:
        raise EnvelopeError("wrong_topic", f"{sender!r} sent on {topic!r}")


@dataclasses.dataclass
class _SenderWindow:
    floor: int = -1  # every seq <= floor has been forgotten and counts as already seen
    seen: "OrderedDict[tuple[int, str], None]" = dataclasses.field(default_factory=OrderedDict)


class DedupFilter:
    """Swallows (returns None for) messages already delivered: QoS 1 means at least once.

    Per (topic, sender) it remembers the last ``window`` (seq, payload digest) pairs, plus a
    floor: the highest seq it has forgotten. A message is a duplicate if its pair was seen, or if
    its seq is at or below the floor (older than anything remembered; logged as a warning,
    because a sender that restarted its counter from zero would look like this: senders must
    keep ``seq`` increasing, see ``endpoint.fresh_seq``).

    Why (topic, sender) and ``check_topic_sender`` first: where this runs before the seal is
    checked (or in ``none`` mode) the header is not authenticated, so state is keyed by what
    the broker did authenticate, the topic. Why the
    digest is part of the key: a forged message reusing a real sequence number must not make
    the real one look like a duplicate. Memory is bounded by ``window`` per key and by
    ``max_senders`` keys and ``max_entries`` pairs in all (least recently heard keys are
    forgotten first), whatever names arrive.

    ``to_dict``/``from_dict`` persist the windows, so a restarted receiver still recognises what
    the broker redelivers from before its restart."""

    name = "dedup"

    def __init__(self, window: int = 512, max_senders: int = 256, max_entries: int = 65536) -> None:
        if window < 1 or max_senders < 1 or max_entries < window:
            raise ValueError("window and max_senders must be >= 1, max_entries >= window")
        self.window, self.max_senders, self.max_entries = window, max_senders, max_entries
        self._windows: OrderedDict[tuple[str, str], _SenderWindow] = OrderedDict()
        self._lock = threading.Lock()
        self.remembered = 0  # (seq, digest) pairs held over all windows
        self.duplicates = 0
        self.stale = 0

    def outbound(self, msg: Message) -> list[Message]:
        return [msg]

    def inbound(self, msg: Message) -> Optional[Message]:
        sender, seq = msg.header.sender, msg.header.seq
        check_topic_sender(msg.topic, sender)
        key = (msg.topic, sender)
        digest = msg.sha256()[:32]
        with self._lock:
            w = self._windows.get(key)
            if w is None:
                w = self._windows[key] = _SenderWindow()
            self._windows.move_to_end(key)
            if seq <= w.floor:
                self.stale += 1
                log.warning("dropping message %s#%d: older than the last %d remembered from this sender", sender, seq, self.window,
                            extra={"event": "dedup_stale", "sender": sender, "seq": seq})
                return None
            if (seq, digest) in w.seen:
                self.duplicates += 1
                log.debug("dropping duplicate %s#%d", sender, seq)
                return None
            w.seen[(seq, digest)] = None
            self.remembered += 1 - self._trim(w)
            self._forget_beyond_limits(keep=key)
        return msg

    def _trim(self, w: _SenderWindow) -> int:
        dropped = 0
        while len(w.seen) > self.window:
            (old_seq, _), _ = w.seen.popitem(last=False)
            w.floor = max(w.floor, old_seq)
            dropped += 1
        return dropped

    def _forget_beyond_limits(self, keep: tuple[str, str]) -> None:
        while len(self._windows) > 1 and (len(self._windows) > self.max_senders or self.remembered > self.max_entries):
            key = next(iter(self._windows))
            if key == keep:
                break
            self.remembered -= len(self._windows.pop(key).seen)

    def high_water_marks(self) -> dict[str, int]:
        """Highest seq seen per sender, over its topics (for status pages and tests)."""
        with self._lock:
            out: dict[str, int] = {}
            for (_, s), w in self._windows.items():
                out[s] = max([out.get(s, -1), w.floor] + [k[0] for k in w.seen])
            return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-able state; restore with ``DedupFilter.from_dict``."""
        with self._lock:
            return {
                "version": 2,
                "window": self.window,
                "windows": [{"topic": t, "sender": s, "floor": w.floor, "seen": [[q, d] for q, d in w.seen]}
                            for (t, s), w in self._windows.items()],
            }

    @classmethod
    def from_dict(cls, data: dict[str, Any], window: Optional[int] = None, max_senders: int = 256) -> "DedupFilter":
        """A filter remembering what ``data`` (from ``to_dict``) remembered; ValueError if malformed."""
        try:
            if data.get("version") != 2 or not isinstance(data["windows"], list):
                raise ValueError("unsupported version")
            f = cls(window=window or int(data["window"]), max_senders=max_senders)
            for entry in data["windows"]:
                topic, sender, floor = entry["topic"], entry["sender"], entry["floor"]
                if not isinstance(topic, str) or not isinstance(sender, str) or not _is_int(floor):
                    raise ValueError(f"bad entry for {sender!r}")
                w = _SenderWindow(floor=floor)
                for q, d in entry["seen"]:
                    if not _is_int(q) or not isinstance(d, str):
                        raise ValueError(f"bad seen entry for {sender!r}")
                    w.seen[(q, d)] = None
                f._trim(w)
                f._windows[(topic, sender)] = w
                f.remembered += len(w.seen)
                f._forget_beyond_limits(keep=(topic, sender))
            return f
        except (KeyError, TypeError, AttributeError) as exc:
            raise ValueError(f"malformed dedup state: {type(exc).__name__}: {exc}") from None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)
