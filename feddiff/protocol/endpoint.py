"""Opening a party's channel: transport + filter chain + subscriptions, from the job config.

Security plugs in as ``seal_filters`` (built by ``crypto``: ReplayGuard then SealFilter), slotted
between compression and chunking with duplicate filtering between them (``build_chain``);
nothing else changes between plaintext, signed and HE modes.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Optional

from feddiff.config import Config
from feddiff.protocol import topics
from feddiff.protocol.channel import Channel
from feddiff.protocol.chunking import ChunkFilter
from feddiff.protocol.filters import CompressFilter, DedupFilter
from feddiff.protocol.message import Filter, FilterChain
from feddiff.transport.mqtt import MqttTransport


def fresh_seq(persisted: int = 0) -> int:
    """A sequence start above anything sent before, even by a crashed incarnation whose last
    numbers were never persisted: microseconds since the epoch outrun any real send rate."""
    return max(persisted + 1, time.time_ns() // 1000)


def build_chain(cfg: Config, seal_filters: Optional[list[Filter]] = None) -> FilterChain:
    """Outbound [Compress, *seal_filters, Dedup, Chunk] in plaintext mode; with sealing the
    seal filters are (ReplayGuard, SealFilter) and Dedup moves between them, so inbound (the
    reverse) runs Chunk, Seal, Dedup, Replay, Compress: nothing keyed by the unauthenticated
    header ``sender`` is touched before the signature is checked, and inflation is capped by
    ``max_message_bytes`` (a decompression bomb stops there)."""
    fed = cfg.federation
    seal = list(seal_filters or [])
    middle = [*seal[:-1], DedupFilter(), seal[-1]] if seal else [DedupFilter()]
    return FilterChain(
        [
            CompressFilter.for_limit(fed.max_message_bytes),
            *middle,
            ChunkFilter(max_chunk_bytes=fed.chunk_bytes, max_total_bytes=fed.max_message_bytes, timeout_s=max(fed.round_timeout_s, 30.0)),
        ]
    )


def read_secret(cfg: Config, path: Optional[str]) -> Optional[str]:
    if not path:
        return None
    return Path(cfg.resolve(path)).read_text().strip()


def open_channel(
    cfg: Config,
    party: str,
    subscriptions: list[str],
    seal_filters: Optional[list[Filter]] = None,
    seq_start: int = 0,
    presence: bool = True,
    username: Optional[str] = None,
    password: Optional[str] = None,
    tls: Optional[tuple[str, str, str]] = None,
    connect_timeout: float = 30.0,
) -> Channel:
    """Connect ``party`` to the job's broker. ``tls`` is (ca, cert, key) paths."""
    fed = cfg.federation
    b = fed.broker
    will = (topics.presence(fed.job, party), b'{"online": false}') if presence else None
    ca, cert, key = tls if tls else (
        str(cfg.resolve(b.tls_ca)) if b.tls_ca else None,
        str(cfg.resolve(b.tls_cert)) if b.tls_cert else None,
        str(cfg.resolve(b.tls_key)) if b.tls_key else None,
    )
    transport = MqttTransport(
        f"feddiff-{fed.job}-{party}",
        b.host,
        b.port,
        username=username or b.username,
        password=password or read_secret(cfg, b.password_file),
        tls_ca=ca,
        tls_cert=cert,
        tls_key=key,
        keepalive=b.keepalive,
        will=will,
        drop_retained=topics.carries_messages,
    )
    transport.connect(connect_timeout)
    for t in subscriptions:
        transport.subscribe(t, qos=1)
    if presence:
        transport.publish(topics.presence(fed.job, party), b'{"online": true}', qos=1, retain=True)
    return Channel(transport, fed.job, party, build_chain(cfg, seal_filters), fed.max_message_bytes, seq_start=seq_start)
