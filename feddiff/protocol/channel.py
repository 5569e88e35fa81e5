"""A party's end of the job: numbered envelopes through the filter chain over a transport.

Why rejections are counted and logged but never raised: a tampered, replayed or garbled message
must not take a station or the aggregator down, and an operator must still be able to see that
it happened (``stats.rejected[reason]`` feeds the status page).

Threading: ``send`` may run in one thread while ``recv`` runs in another. Sends are serialised
(one lock around numbering, the outbound chain and publishing) so sequence numbers reach the
broker in increasing order, which the replay guard of a sealed job insists on.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import Any, Optional, Protocol

import numpy as np

from feddiff.protocol import topics
from feddiff.protocol.arrays import MAX_ELEMENTS, decode_arrays, encode_arrays
from feddiff.protocol.envelope import pack, unpack
from feddiff.protocol.filters import check_topic_sender
from feddiff.protocol.message import EnvelopeError, FilterChain, Header, Message

log = logging.getLogger("feddiff.protocol")


class Transport(Protocol):
    """What a channel needs from a transport (``feddiff.transport.mqtt.MqttTransport``)."""

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, wait: bool = True) -> Any: ...

    def get(self, timeout: float) -> Optional[tuple[str, bytes]]: ...


@dataclass
class ChannelStats:
    bytes_sent: int = 0
    bytes_received: int = 0
    messages_sent: int = 0
    messages_received: int = 0
    rejected: Counter = field(default_factory=Counter)

    @property
    def messages(self) -> int:
        return self.messages_sent + self.messages_received

    def as_dict(self) -> dict[str, Any]:
        return {
            "bytes_sent": self.bytes_sent,
            "bytes_received": self.bytes_received,
            "messages_sent": self.messages_sent,
            "messages_received": self.messages_received,
            "rejected": dict(self.rejected),
        }


@dataclass
class Received:
    topic: str
    header: Header
    arrays: dict[str, np.ndarray]
    meta: dict


class Channel:
    """``seq_start`` is the last sequence number already used: the first send uses seq_start+1.

    Why ``send`` does not wait for each PUBACK: a training step is three sequential hops
    (FORWARD, FEATURES, BACKWARD), and blocking on the broker's acknowledgement of every publish
    added a broker round trip to each hop (a third of the aggregator's wall time on Trento).
    Unacknowledged QoS 1 messages stay in the client's session and are re-sent after a
    reconnect, so nothing is lost by not waiting; ``max_pending`` bounds how many may be
    outstanding (back-pressure), and ``flush``/``close`` wait for all of them.
    """

    def __init__(
        self,
        transport: Transport,
        job: str,
        sender: str,
        chain: FilterChain,
        max_message_bytes: int,
        seq_start: int = 0,
        max_elements: int = MAX_ELEMENTS,
        max_pending: int = 64,
    ) -> None:
        self.transport = transport
        self.max_pending = max_pending
        self._pending: deque = deque()
        self.job = topics.check_id(job, "job")
        self.sender = topics.check_id(sender, "sender")
        self.chain = chain
        self.max_message_bytes = max_message_bytes
        self.max_elements = max_elements
        self._seq = int(seq_start)
        self._send_lock = threading.Lock()
        self._recv_lock = threading.Lock()
        self._stats_lock = threading.Lock()
        self.stats = ChannelStats()

    @property
    def seq(self) -> int:
        """The last sequence number used; persist it and pass it back as ``seq_start``."""
        return self._seq

    def send(
        self,
        topic: str,
        content_type: str,
        arrays: dict[str, np.ndarray],
        *,
        round: int,
        step: int,
        meta: Optional[dict] = None,
    ) -> int:
        """Publish one message (QoS 1, never retained). Returns once it is queued, or once the
        oldest outstanding publishes are acknowledged when ``max_pending`` are in flight.
        Returns the bytes put on the wire, all chunks included."""
        payload = encode_arrays(arrays, meta)
        with self._send_lock:
            seq = self._seq + 1
            header = Header(job=self.job, round=round, step=step, sender=self.sender, seq=seq,
                            content_type=content_type, timestamp=time.time())
            wire = [pack(m) for m in self.chain.outbound(Message(topic, header, payload))]
            too_big = [len(w) for w in wire if len(w) > self.max_message_bytes]
            if too_big:
                raise EnvelopeError("oversized", f"an envelope of {max(too_big)} bytes exceeds max_message_bytes {self.max_message_bytes}")
            self._seq = seq  # numbered only once it is sure to go out: a failed build reuses it
            for data in wire:
                handle = self.transport.publish(topic, data, qos=1, retain=False, wait=False)
                if handle is not None and hasattr(handle, "wait"):
                    self._pending.append(handle)
            self._reap(self.max_pending)
        sent = sum(len(w) for w in wire)
        with self._stats_lock:
            self.stats.bytes_sent += sent
            self.stats.messages_sent += 1
        log.debug("sent %s #%d on %s: %d bytes in %d envelope(s)", content_type, seq, topic, sent, len(wire))
        return sent

    def _reap(self, keep: int, timeout: Optional[float] = None) -> None:
        """Forget acknowledged publishes; wait for the oldest until at most ``keep`` remain."""
        while self._pending and (getattr(self._pending[0], "done", True) or len(self._pending) > keep):
            self._pending[0].wait(timeout)
            self._pending.popleft()

    def flush(self, timeout: Optional[float] = None) -> None:
        """Wait until the broker acknowledged everything sent (raises FedDiffError on timeout)."""
        with self._send_lock:
            self._reap(0, timeout)

    def close(self, timeout: float = 10.0) -> None:
        """Flush (best effort: a broker that is gone must not hang shutdown), then disconnect."""
        try:
            self.flush(timeout)
        except Exception as e:  # noqa: BLE001 - closing must not fail
            log.warning("closing with unacknowledged messages: %s", e)
        self.transport.close()

    def recv(self, timeout: float) -> Optional[Received]:
        """The next whole, accepted message, or None once ``timeout`` seconds have passed."""
        deadline = time.monotonic() + timeout
        with self._recv_lock:
            while True:
                item = self.transport.get(max(deadline - time.monotonic(), 0.0))
                if item is None:
                    return None
                got = self._accept(*item)
                if got is not None or time.monotonic() >= deadline:
                    return got

    def _reject(self, topic: str, reason: str, detail: str) -> None:
        with self._stats_lock:
            self.stats.rejected[reason] += 1
        log.warning("rejected message on %s: %s", topic, detail,
                    extra={"event": "rejected", "reason": reason, "topic": topic})

    def _accept(self, topic: str, data: bytes) -> Optional[Received]:
        with self._stats_lock:
            self.stats.bytes_received += len(data)
        try:
            msg = self.chain.inbound(unpack(topic, data, self.max_message_bytes))
            if msg is None:
                return None  # a chunk awaiting its siblings, or a duplicate
            if msg.header.job != self.job:
                raise EnvelopeError("wrong_job", f"message of job {msg.header.job!r} on a channel of job {self.job!r}")
            check_topic_sender(topic, msg.header.sender)
            arrays, meta = decode_arrays(msg.payload, self.max_elements)
        except EnvelopeError as exc:
            self._reject(topic, exc.reason, str(exc))
            return None
        except Exception as exc:  # noqa: BLE001 - a filter bug must not take the party down
            log.exception("filter chain failed on a message on %s", topic)
            self._reject(topic, "internal_error", f"{type(exc).__name__}: {exc}")
            return None
        with self._stats_lock:
            self.stats.messages_received += 1
        return Received(topic, msg.header, arrays, meta)
