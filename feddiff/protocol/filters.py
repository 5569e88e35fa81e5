"""Payload filters that every message passes: compression and duplicate suppression.

Sealing (``crypto``) and chunking (``chunking``) are filters of the same shape; the chain a
sender uses is [CompressFilter, <seal filters>, DedupFilter, ChunkFilter].
"""

from __future__ import annotations

import copy
import zlib
from collections import OrderedDict
from typing import Optional

from feddiff.protocol.message import EnvelopeError, Message


class CompressFilter:
    """zlib; inflating is bounded so a small bomb cannot exhaust memory."""

    name = "compress"

    def __init__(self, level: int = 1, max_bytes: int = 512 * 1024 * 1024) -> None:
        self.level, self.max_bytes = level, max_bytes

    def outbound(self, msg: Message) -> list[Message]:
        out = copy.copy(msg)
        out.header = copy.deepcopy(msg.header)
        out.header.ext["compress"] = {"alg": "zlib", "raw_len": len(msg.payload)}
        out.payload = zlib.compress(msg.payload, self.level)
        return [out]

    def inbound(self, msg: Message) -> Optional[Message]:
        info = msg.header.ext.pop("compress", None)
        if info is None:
            return msg
        if not isinstance(info, dict) or info.get("alg") != "zlib":
            raise EnvelopeError("bad_header", "unknown compression")
        d = zlib.decompressobj()
        try:
            raw = d.decompress(msg.payload, self.max_bytes)
        except zlib.error:
            raise EnvelopeError("bad_payload", "corrupt compressed payload") from None
        if d.unconsumed_tail:
            raise EnvelopeError("oversized", f"inflates beyond {self.max_bytes} bytes")
        msg.payload = raw
        return msg


class DedupFilter:
    """Swallows exact repeats of (sender, seq, digest): QoS 1 may deliver a message twice.
    Keying on the digest too means a forged message cannot pre-empt a real one's sequence
    number. Bounded memory: remembers the last ``capacity`` messages."""

    name = "dedup"

    def __init__(self, capacity: int = 4096) -> None:
        self.capacity = capacity
        self.seen: OrderedDict[tuple, None] = OrderedDict()
        self.duplicates = 0

    def outbound(self, msg: Message) -> list[Message]:
        return [msg]

    def inbound(self, msg: Message) -> Optional[Message]:
        import hashlib

        key = (msg.header.sender, msg.header.seq, hashlib.sha256(msg.payload).hexdigest())
        if key in self.seen:
            self.duplicates += 1
            return None
        self.seen[key] = None
        while len(self.seen) > self.capacity:
            self.seen.popitem(last=False)
        return msg
