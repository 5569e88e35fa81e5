"""The unit every filter and transport passes around: a topic, an envelope header, a payload.

Filters (compress, seal, chunk; Flower's "mods") wrap every message on the way out and unwrap it
on the way in. A filter never branches on what other filters exist: security adds filters, it
does not add code paths to training.
"""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

ENVELOPE_VERSION = 1


class EnvelopeError(ValueError):
    """A message was rejected. ``reason`` is a short stable tag counted in status (e.g. 'replay')."""

    def __init__(self, reason: str, detail: str = "") -> None:
        self.reason = reason
        super().__init__(f"rejected message: {reason}" + (f": {detail}" if detail else ""))


@dataclass
class Header:
    """Envelope header. ``payload_len``/``payload_sha256`` describe the bytes actually carried and
    are filled in by ``envelope.pack``; ``ext`` carries per-filter fields (chunk index, nonce,
    signature, ...) under the filter's name."""

    job: str
    round: int
    step: int
    sender: str
    seq: int
    content_type: str
    version: int = ENVELOPE_VERSION
    payload_len: int = 0
    payload_sha256: str = ""
    timestamp: float = 0.0
    ext: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Message:
    """``sha256()`` hashes the payload once however many steps ask (a filter that signs it,
    ``envelope.pack`` that describes it): the cache is keyed by the payload object itself, so a
    message whose payload was replaced is hashed afresh."""

    topic: str
    header: Header
    payload: bytes
    _digest: Optional[tuple[bytes, str]] = field(default=None, init=False, repr=False, compare=False)

    def sha256(self) -> str:
        """Hex SHA-256 of ``payload``."""
        if self._digest is None or self._digest[0] is not self.payload:
            self._digest = (self.payload, hashlib.sha256(self.payload).hexdigest())
        return self._digest[1]

    def with_header(self, header: Header) -> "Message":
        """The same payload (and its digest, if known) under another header."""
        out = Message(self.topic, header, self.payload)
        out._digest = self._digest
        return out


class Filter(Protocol):
    """One stage of the payload chain. ``inbound`` returns None when it swallowed the message
    (a chunk awaiting its siblings, a duplicate); it raises ``EnvelopeError`` to reject."""

    name: str

    def outbound(self, msg: Message) -> list[Message]: ...

    def inbound(self, msg: Message) -> Optional[Message]: ...


class FilterChain:
    """Applies filters in order on the way out and in reverse order on the way in."""

    def __init__(self, filters: list[Filter]) -> None:
        self.filters = list(filters)

    def outbound(self, msg: Message) -> list[Message]:
        msgs = [msg]
        for f in self.filters:
            msgs = [out for m in msgs for out in f.outbound(m)]
        return msgs

    def inbound(self, msg: Message) -> Optional[Message]:
        current: Optional[Message] = msg
        for f in reversed(self.filters):
            if current is None:
                return None
            current = f.inbound(current)
        return current
