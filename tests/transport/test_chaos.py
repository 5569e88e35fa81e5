"""Fault injection during a stream of chunked messages (``pytest -m chaos``).

What MQTT promises and what we check: a broker that restarts cleanly (SIGTERM, persistence on)
loses nothing, so every message arrives exactly once and in order. A broker that is SIGKILLed
may lose what it acknowledged but had not yet saved or delivered; then every message that does
arrive is intact and arrives once, and the channel keeps working (the job layer re-runs a round
whose messages were lost).
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from feddiff.protocol import topics
from feddiff.protocol.channel import Channel
from feddiff.protocol.chunking import ChunkFilter
from feddiff.protocol.filters import CompressFilter, DedupFilter
from feddiff.protocol.message import FilterChain

pytestmark = pytest.mark.chaos

JOB = "chaos"
UP = topics.uplink(JOB, "edge")
N = 12


def chain() -> FilterChain:
    return FilterChain([CompressFilter(), DedupFilter(), ChunkFilter(max_chunk_bytes=32 * 1024, timeout_s=60)])


def payload(i: int) -> np.ndarray:
    return np.random.default_rng(i).standard_normal(40_000).astype(np.float32)  # ~160 KB, 5 chunks


def run_stream(broker, transport_factory, disrupt) -> tuple[list, Channel, Channel]:
    agg_t = transport_factory(broker, "agg", publish_timeout=30)
    agg_t.subscribe(topics.uplink(JOB, "+"))
    edge_t = transport_factory(broker, "edge", publish_timeout=30)
    edge = Channel(edge_t, JOB, "edge", chain(), 1 << 20)
    agg = Channel(agg_t, JOB, "aggregator", chain(), 1 << 20)
    broker.save()  # both sessions on disk before the first fault

    def send_all() -> None:
        for i in range(N):
            edge.send(UP, "weights", {"i": np.array(i), "w": payload(i)}, round=0, step=i)
            time.sleep(0.05)

    sender = threading.Thread(target=send_all)
    sender.start()
    disrupt()
    sender.join(60)
    assert not sender.is_alive(), "sender stuck"
    got = []
    while (r := agg.recv(3)) is not None:
        got.append(r)
    return got, edge, agg


def test_clean_broker_restarts_lose_nothing(broker_factory, transport_factory):
    broker = broker_factory(persistence=True)

    def disrupt() -> None:
        for _ in range(2):
            time.sleep(0.25)
            broker.restart()  # SIGTERM: Mosquitto saves sessions and queued messages

    got, edge, agg = run_stream(broker, transport_factory, disrupt)
    assert [int(r.arrays["i"]) for r in got] == list(range(N))
    for r in got:
        assert r.arrays["w"].tobytes() == payload(int(r.arrays["i"])).tobytes()
    assert sum(agg.stats.rejected.values()) == 0


def test_sigkilled_broker_never_corrupts_or_duplicates(broker_factory, transport_factory):
    broker = broker_factory(persistence=True)

    def disrupt() -> None:
        for _ in range(2):
            time.sleep(0.25)
            broker.kill()
            time.sleep(0.3)
            broker.restart()

    got, edge, agg = run_stream(broker, transport_factory, disrupt)
    seen = [int(r.arrays["i"]) for r in got]
    assert len(seen) == len(set(seen)) and seen == sorted(seen)
    for r in got:
        assert r.arrays["w"].tobytes() == payload(int(r.arrays["i"])).tobytes()
    edge.send(UP, "weights", {"i": np.array(N)}, round=1, step=0)  # and the channel still works
    after = agg.recv(10)
    assert after is not None and int(after.arrays["i"]) == N
