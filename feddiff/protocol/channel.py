"""A party's end of the job: numbered envelopes through the filter chain over a transport.

Rejected messages are logged with their reason and counted, never raised: a tampered or
replayed message must not take a station or the aggregator down.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from feddiff.protocol.arrays import decode_arrays, encode_arrays
from feddiff.protocol.envelope import pack, unpack
from feddiff.protocol.message import EnvelopeError, FilterChain, Header, Message

log = logging.getLogger("feddiff.protocol")


@dataclass
class ChannelStats:
    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    rejected: Counter = field(default_factory=Counter)


@dataclass
class Received:
    topic: str
    header: Header
    arrays: dict[str, np.ndarray]
    meta: dict


class Channel:
    def __init__(self, transport, job: str, sender: str, chain: FilterChain, max_message_bytes: int, seq_start: int = 0) -> None:
        self.transport = transport
        self.job = job
        self.sender = sender
        self.chain = chain
        self.max_message_bytes = max_message_bytes
        self._seq = seq_start
        self._lock = threading.Lock()
        self.stats = ChannelStats()

    @property
    def seq(self) -> int:
        return self._seq

    def send(self, topic: str, content_type: str, arrays: dict[str, np.ndarray], *, round: int, step: int, meta: Optional[dict] = None) -> int:
        payload = encode_arrays(arrays, meta)
        with self._lock:
            self._seq += 1
            header = Header(job=self.job, round=round, step=step, sender=self.sender, seq=self._seq, content_type=content_type)
            wire = [pack(m) for m in self.chain.outbound(Message(topic, header, payload))]
        sent = 0
        for data in wire:
            self.transport.publish(topic, data, qos=1, retain=False)
            sent += len(data)
        self.stats.bytes_sent += sent
        self.stats.messages_sent += 1
        return sent

    def recv(self, timeout: float) -> Optional[Received]:
        """The next whole, accepted message, or None after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while True:
            item = self.transport.get(max(deadline - time.monotonic(), 0.0))
            if item is None:
                return None
            got = self._accept(*item)
            if got is not None or time.monotonic() >= deadline:
                return got

    def _accept(self, topic: str, data: bytes) -> Optional[Received]:
        self.stats.bytes_received += len(data)
        try:
            msg = self.chain.inbound(unpack(topic, data, self.max_message_bytes))
            if msg is None:
                return None
            if msg.header.job != self.job:
                raise EnvelopeError("wrong_job", msg.header.job)
            arrays, meta = decode_arrays(msg.payload)
        except EnvelopeError as exc:
            self.stats.rejected[exc.reason] += 1
            log.warning("rejected message on %s: %s", topic, exc, extra={"event": "rejected", "reason": exc.reason, "topic": topic})
            return None
        self.stats.messages_received += 1
        return Received(topic, msg.header, arrays, meta)
