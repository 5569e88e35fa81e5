"""Chunking of payloads larger than the broker's comfortable message size.

Each chunk repeats the (sealed) header and adds ext['chunk'] = {id, index, count, total_len,
sha256}; the receiver reassembles, checks the whole digest, tolerates duplicated and resent
chunks, and forgets incomplete sets after a timeout so memory stays bounded.
"""

from __future__ import annotations

import copy
import hashlib
import time
from typing import Optional

from feddiff.protocol.message import EnvelopeError, Message


class ChunkFilter:
    name = "chunk"

    def __init__(self, max_chunk_bytes: int = 256 * 1024, max_total_bytes: int = 64 * 1024 * 1024, timeout_s: float = 60.0, max_pending: int = 64) -> None:
        self.max_chunk_bytes = max_chunk_bytes
        self.max_total_bytes = max_total_bytes
        self.timeout_s = timeout_s
        self.max_pending = max_pending
        self.pending: dict[tuple, dict] = {}

    def outbound(self, msg: Message) -> list[Message]:
        data = msg.payload
        if len(data) <= self.max_chunk_bytes:
            return [msg]
        digest = hashlib.sha256(data).hexdigest()
        count = -(-len(data) // self.max_chunk_bytes)
        out = []
        for i in range(count):
            part = copy.copy(msg)
            part.header = copy.deepcopy(msg.header)
            part.header.ext["chunk"] = {"id": f"{msg.header.sender}:{msg.header.seq}", "index": i, "count": count, "total_len": len(data), "sha256": digest}
            part.payload = data[i * self.max_chunk_bytes : (i + 1) * self.max_chunk_bytes]
            out.append(part)
        return out

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, v in self.pending.items() if now - v["t"] > self.timeout_s]:
            del self.pending[key]

    def inbound(self, msg: Message) -> Optional[Message]:
        info = msg.header.ext.get("chunk")
        if info is None:
            return msg
        try:
            cid, idx, count, total, digest = info["id"], info["index"], info["count"], info["total_len"], info["sha256"]
            ok = all(isinstance(v, int) and not isinstance(v, bool) for v in (idx, count, total)) and isinstance(cid, str) and isinstance(digest, str)
        except (TypeError, KeyError):
            ok = False
        if not ok or not 0 <= idx < count or count < 1:
            raise EnvelopeError("bad_chunk", "malformed chunk header")
        if total > self.max_total_bytes or total < 0 or count > total // 1 + 1:
            raise EnvelopeError("oversized", f"chunked message of {total} bytes")
        self._expire()
        key = (msg.header.sender, cid)
        entry = self.pending.get(key)
        if entry is None:
            if len(self.pending) >= self.max_pending:
                oldest = min(self.pending, key=lambda k: self.pending[k]["t"])
                del self.pending[oldest]
            entry = self.pending[key] = {"t": time.monotonic(), "count": count, "total": total, "sha": digest, "parts": {}, "header": msg.header}
        if (entry["count"], entry["total"], entry["sha"]) != (count, total, digest):
            raise EnvelopeError("bad_chunk", "inconsistent chunk set")
        entry["parts"][idx] = msg.payload
        if sum(len(p) for p in entry["parts"].values()) > total:
            del self.pending[key]
            raise EnvelopeError("bad_chunk", "chunks exceed declared length")
        if len(entry["parts"]) < count:
            return None
        del self.pending[key]
        data = b"".join(entry["parts"][i] for i in range(count))
        if len(data) != total or hashlib.sha256(data).hexdigest() != digest:
            raise EnvelopeError("bad_chunk", "reassembled digest mismatch")
        header = copy.deepcopy(entry["header"])
        header.ext.pop("chunk", None)
        return Message(msg.topic, header, data)
