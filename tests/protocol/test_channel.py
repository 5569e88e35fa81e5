"""Channel over a real Mosquitto: arrays in, the same arrays out; duplicates once; junk counted."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from feddiff.protocol import topics
from feddiff.protocol.arrays import encode_arrays
from feddiff.protocol.channel import Channel
from feddiff.protocol.chunking import ChunkFilter
from feddiff.protocol.envelope import pack
from feddiff.protocol.filters import CompressFilter, DedupFilter
from feddiff.protocol.message import EnvelopeError, FilterChain, Header, Message

JOB = "j"
UP = topics.uplink(JOB, "edge")


def chain(chunk: int = 64 * 1024) -> FilterChain:
    return FilterChain([CompressFilter(), DedupFilter(), ChunkFilter(max_chunk_bytes=chunk, max_total_bytes=64 << 20, timeout_s=30)])


@pytest.fixture
def pair(mosquitto, transport_factory):
    """(edge channel, aggregator channel); the aggregator listens on every uplink."""
    agg_t = transport_factory(mosquitto, "agg")
    agg_t.subscribe(topics.uplink(JOB, topics.ANY))
    edge_t = transport_factory(mosquitto, "edge")
    edge = Channel(edge_t, JOB, "edge", chain(), 1 << 20)
    agg = Channel(agg_t, JOB, "aggregator", chain(), 1 << 20)
    return edge, agg


def test_arrays_and_meta_arrive_with_the_routing_header(pair):
    edge, agg = pair
    x = np.arange(12, dtype=np.float32).reshape(3, 4)
    sent = edge.send(UP, "features", {"x": x, "flag": np.array(True)}, round=3, step=7, meta={"attempt": 1})
    got = agg.recv(5)
    assert got is not None and got.topic == UP
    assert (got.header.round, got.header.step, got.header.sender, got.header.seq, got.header.content_type) == (3, 7, "edge", 1, "features")
    assert np.array_equal(got.arrays["x"], x) and got.arrays["flag"] == np.array(True)
    assert got.meta == {"attempt": 1}
    assert edge.seq == 1 and edge.stats.bytes_sent == sent == agg.stats.bytes_received
    assert edge.stats.messages_sent == agg.stats.messages_received == 1


def test_multi_megabyte_array_is_chunked_and_reassembled_exactly(pair):
    edge, agg = pair
    big = np.random.default_rng(1).standard_normal((1024, 768)).astype(np.float32)  # 3 MiB
    sent = edge.send(UP, "weights", {"w": big}, round=0, step=0)
    assert sent > 2 << 20  # floats barely compress: ~40 envelopes of 64 KiB
    got = agg.recv(10)
    assert got is not None and got.arrays["w"].tobytes() == big.tobytes()
    assert agg.stats.bytes_received == sent
    assert agg.recv(0.2) is None  # nothing left over: one message, not one per chunk


def test_sequence_numbers_continue_from_seq_start(mosquitto, transport_factory):
    t = transport_factory(mosquitto, "s")
    ch = Channel(t, JOB, "edge", chain(), 1 << 20, seq_start=41)
    ch.send(UP, "x", {}, round=0, step=0)
    assert ch.seq == 42


def _wire(payload_arrays: dict, seq: int, chunk: int = 64 * 1024, sender: str = "edge") -> list[bytes]:
    msg = Message(topics.uplink(JOB, sender), Header(job=JOB, round=0, step=0, sender=sender, seq=seq, content_type="x"),
                  encode_arrays(payload_arrays))
    return [pack(m) for m in chain(chunk).outbound(msg)]


def test_a_message_delivered_twice_is_received_once(pair):
    edge, agg = pair
    (data,) = _wire({"y": np.ones(2)}, seq=99)
    edge.transport.publish(UP, data)
    edge.transport.publish(UP, data)  # what a QoS-1 redelivery looks like
    first = agg.recv(3)
    assert first is not None and first.header.seq == 99
    assert agg.recv(0.5) is None
    assert next(f for f in agg.chain.filters if f.name == "dedup").duplicates == 1
    assert sum(agg.stats.rejected.values()) == 0


def test_chunk_lost_then_resent_over_the_broker(pair):
    edge, agg = pair
    w = np.random.default_rng(2).integers(0, 255, size=300_000, dtype=np.uint8)
    parts = _wire({"w": w}, seq=5, chunk=50_000)
    assert len(parts) > 3
    for i, data in enumerate(parts):
        if i != 2:
            edge.transport.publish(UP, data)
    assert agg.recv(0.5) is None  # incomplete: nothing delivered yet
    edge.transport.publish(UP, parts[2])  # the resend
    got = agg.recv(5)
    assert got is not None and np.array_equal(got.arrays["w"], w)


def test_junk_is_counted_by_reason_and_the_channel_keeps_working(pair):
    edge, agg = pair
    (good,) = _wire({"z": np.zeros(3)}, seq=7)
    tampered = bytearray(good)
    tampered[-1] ^= 0xFF
    edge.transport.publish(UP, b"not an envelope")
    edge.transport.publish(UP, bytes(tampered))
    edge.transport.publish(UP, good[: len(good) // 2])
    edge.transport.publish(UP, good)
    got = agg.recv(5)
    assert got is not None and got.header.seq == 7
    assert agg.stats.rejected == {"bad_magic": 1, "bad_digest": 1, "truncated": 1} or agg.stats.rejected == {
        "bad_magic": 1, "bad_digest": 1, "bad_length": 1}


def test_message_of_another_job_or_from_another_sender_is_rejected(pair):
    edge, agg = pair
    other_job = Message(UP, Header(job="other", round=0, step=0, sender="edge", seq=1, content_type="x"), encode_arrays({}))
    impostor = Message(UP, Header(job=JOB, round=0, step=0, sender="someone", seq=1, content_type="x"), encode_arrays({}))
    for m in (other_job, impostor):
        edge.transport.publish(UP, pack(m))
    assert agg.recv(1.0) is None
    assert agg.stats.rejected == {"wrong_job": 1, "wrong_topic": 1}


def test_a_payload_that_is_not_arrays_is_bad_payload(pair):
    edge, agg = pair
    m = Message(UP, Header(job=JOB, round=0, step=0, sender="edge", seq=1, content_type="x"), b"\x80\x04pickle?")
    edge.transport.publish(UP, pack(m))
    assert agg.recv(1.0) is None and agg.stats.rejected == {"bad_payload": 1}


def test_a_crashing_filter_is_counted_not_raised(pair):
    edge, agg = pair

    class Broken:
        name = "broken"

        def outbound(self, msg):
            return [msg]

        def inbound(self, msg):
            raise KeyError("bug")

    agg.chain.filters.append(Broken())
    edge.send(UP, "x", {}, round=0, step=0)
    assert agg.recv(1.0) is None and agg.stats.rejected == {"internal_error": 1}


def test_envelope_larger_than_the_limit_fails_at_the_sender(mosquitto, transport_factory):
    t = transport_factory(mosquitto, "big")
    ch = Channel(t, JOB, "edge", FilterChain([]), max_message_bytes=10_000)
    with pytest.raises(EnvelopeError) as err:
        ch.send(UP, "x", {"a": np.random.default_rng(0).random(5000)}, round=0, step=0)
    assert err.value.reason == "oversized" and ch.seq == 0


def test_send_and_recv_from_two_threads(mosquitto, transport_factory):
    """An edge answers while it keeps receiving: sends from one thread, recv in another."""
    a_t, b_t = transport_factory(mosquitto, "a"), transport_factory(mosquitto, "b")
    a_t.subscribe(topics.downlink(JOB, "a"))
    b_t.subscribe(topics.uplink(JOB, "a"))
    a = Channel(a_t, JOB, "a", chain(4096), 1 << 20)
    b = Channel(b_t, JOB, "b", chain(4096), 1 << 20)
    n = 20
    received: list[int] = []

    def receive() -> None:
        while len(received) < n:
            got = a.recv(5)
            if got is None:
                return
            received.append(int(got.arrays["i"]))

    reader = threading.Thread(target=receive)
    reader.start()
    for i in range(n):
        b.send(topics.downlink(JOB, "a"), "x", {"i": np.array(i), "pad": np.random.default_rng(i).random(1000)}, round=0, step=i)
        a.send(topics.uplink(JOB, "a"), "y", {"i": np.array(i)}, round=0, step=i)
    reader.join(20)
    echoes = [b.recv(5) for _ in range(n)]
    assert received == list(range(n))
    assert [int(e.arrays["i"]) for e in echoes] == list(range(n))
    assert [e.header.seq for e in echoes] == list(range(1, n + 1))


def test_sends_do_not_wait_for_acks_but_are_bounded_and_flushed(mosquitto, transport_factory):
    agg_t = transport_factory(mosquitto, "agg")
    agg_t.subscribe(topics.uplink(JOB, topics.ANY))
    edge = Channel(transport_factory(mosquitto, "edge"), JOB, "edge", chain(chunk=1024), 1 << 20, max_pending=3)
    agg = Channel(agg_t, JOB, "aggregator", chain(), 1 << 20)
    noise = np.random.default_rng(0).standard_normal(2048).astype(np.float32)  # ~8 chunks each
    for i in range(5):
        edge.send(UP, "features", {"x": noise + i}, round=0, step=i)
        assert len(edge._pending) <= 3  # back-pressure: never more outstanding than allowed
    edge.flush(10)
    assert not edge._pending
    got = [agg.recv(5) for _ in range(5)]
    assert [g.header.step for g in got] == list(range(5))
    assert all(np.array_equal(g.arrays["x"], noise + g.header.step) for g in got)


def test_close_delivers_the_last_message_before_disconnecting(mosquitto, transport_factory):
    agg_t = transport_factory(mosquitto, "agg")
    agg_t.subscribe(topics.uplink(JOB, topics.ANY))
    agg = Channel(agg_t, JOB, "aggregator", chain(), 1 << 20)
    edge = Channel(transport_factory(mosquitto, "edge"), JOB, "edge", chain(chunk=4096), 1 << 20)
    edge.send(UP, "done", {"x": np.zeros(100_000, np.float32) + 1}, round=9, step=0)
    edge.close()
    got = agg.recv(10)
    assert got is not None and got.header.content_type == "done" and got.arrays["x"].sum() == 100_000
