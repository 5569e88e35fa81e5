"""ChunkFilter: split, reassemble in any order, survive duplicates and resends, stay bounded."""

from __future__ import annotations

import copy
import os
import random

import pytest

from feddiff.protocol.chunking import ChunkFilter
from feddiff.protocol.envelope import pack, unpack
from feddiff.protocol.filters import CompressFilter, DedupFilter
from feddiff.protocol.message import EnvelopeError, FilterChain, Header, Message


def msg(payload: bytes, seq: int = 1, sender: str = "a") -> Message:
    h = Header(job="j", round=1, step=2, sender=sender, seq=seq, content_type="features", timestamp=1000.0)
    return Message(f"feddiff/j/up/{sender}", h, payload)


def wire(parts: list[Message]) -> list[Message]:
    """What the receiver sees: every chunk through pack/unpack."""
    return [unpack(p.topic, pack(copy.deepcopy(p)), 10**7) for p in parts]


class Clock:
    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


DATA = bytes(range(256)) * 4  # 1024 bytes


def test_small_payloads_are_not_chunked():
    m = msg(b"x" * 100)
    assert ChunkFilter(max_chunk_bytes=100).outbound(m) == [m]


def test_large_payload_is_split_and_describes_itself():
    parts = ChunkFilter(max_chunk_bytes=100).outbound(msg(DATA))
    assert len(parts) == 11
    infos = [p.header.ext["chunk"] for p in parts]
    assert [i["index"] for i in infos] == list(range(11))
    assert {(i["id"], i["count"], i["total_len"]) for i in infos} == {("a:1", 11, 1024)}
    assert b"".join(p.payload for p in parts) == DATA
    assert len({p.header.timestamp for p in parts}) == 1


@pytest.mark.parametrize("seed", range(5))
def test_reassembles_in_any_order_with_duplicates(seed):
    parts = wire(ChunkFilter(max_chunk_bytes=100).outbound(msg(DATA)))
    rng = random.Random(seed)
    arrivals = parts + rng.sample(parts, 4)
    rng.shuffle(arrivals)
    rx = ChunkFilter(max_chunk_bytes=100)
    done = [r for r in (rx.inbound(p) for p in arrivals) if r is not None]
    assert len(done) == 1
    whole = done[0]
    assert whole.payload == DATA and "chunk" not in whole.header.ext
    assert whole.header.payload_len == len(DATA) and whole.header.seq == 1
    assert rx.pending == {}


def test_chunk_lost_then_resent_completes_the_message():
    parts = wire(ChunkFilter(max_chunk_bytes=100).outbound(msg(DATA)))
    rx = ChunkFilter()
    lost = parts[5]
    assert all(rx.inbound(p) is None for p in parts if p is not lost)
    assert rx.inbound(parts[3]) is None  # a duplicate meanwhile is harmless
    assert rx.inbound(lost).payload == DATA  # the resend


def test_late_duplicates_of_a_completed_message_are_swallowed():
    parts = wire(ChunkFilter(max_chunk_bytes=100).outbound(msg(DATA)))
    rx = ChunkFilter()
    results = [rx.inbound(p) for p in parts]
    assert results[-1].payload == DATA
    assert all(rx.inbound(p) is None for p in parts)
    assert rx.pending == {}


def test_tampered_chunk_fails_the_whole_digest():
    parts = ChunkFilter(max_chunk_bytes=100).outbound(msg(b"a" * 300))
    parts[1] = Message(parts[1].topic, parts[1].header, b"b" * 100)
    rx = ChunkFilter()
    with pytest.raises(EnvelopeError) as err:
        for p in wire(parts):
            rx.inbound(p)
    assert err.value.reason == "bad_chunk"


def test_sibling_with_a_different_header_is_refused():
    parts = wire(ChunkFilter(max_chunk_bytes=100).outbound(msg(DATA)))
    rx = ChunkFilter()
    rx.inbound(parts[0])
    odd = copy.deepcopy(parts[1])
    odd.header.round = 99
    with pytest.raises(EnvelopeError) as err:
        rx.inbound(odd)
    assert err.value.reason == "bad_chunk"


def _with_chunk(**over) -> Message:
    m = msg(b"x" * 10)
    m.header.ext["chunk"] = {"id": "a:1", "index": 0, "count": 2, "total_len": 20, "sha256": "0" * 64, **over}
    return m


@pytest.mark.parametrize("over, reason", [
    ({"total_len": 10**12}, "oversized"),
    ({"count": 50, "total_len": 20}, "oversized"),
    ({"index": 2}, "bad_chunk"),
    ({"index": -1}, "bad_chunk"),
    ({"count": 0}, "bad_chunk"),
    ({"count": "2"}, "bad_chunk"),
    ({"sha256": "xyz"}, "bad_chunk"),
    ({"id": ""}, "bad_chunk"),
    ({"extra": 1}, "bad_chunk"),
])
def test_impossible_chunk_headers_are_refused(over, reason):
    with pytest.raises(EnvelopeError) as err:
        ChunkFilter(max_total_bytes=10**6).inbound(_with_chunk(**over))
    assert err.value.reason == reason


def test_non_dict_chunk_entry_is_bad_chunk():
    m = msg(b"x")
    m.header.ext["chunk"] = [1, 2]
    with pytest.raises(EnvelopeError):
        ChunkFilter().inbound(m)


def test_chunks_adding_up_to_more_than_declared_are_oversized():
    rx = ChunkFilter()
    rx.inbound(_with_chunk(index=0, count=3, total_len=15))
    with pytest.raises(EnvelopeError) as err:
        rx.inbound(_with_chunk(index=1, count=3, total_len=15))
    assert err.value.reason == "oversized"
    assert rx.pending == {}


def test_incomplete_sets_are_forgotten_after_the_timeout():
    clock = Clock()
    rx = ChunkFilter(timeout_s=10, clock=clock)
    parts = wire(ChunkFilter(max_chunk_bytes=100).outbound(msg(DATA)))
    rx.inbound(parts[0])
    clock.t = 5
    rx.inbound(parts[1])  # activity keeps the set alive
    clock.t = 14
    assert rx.expire() == 0
    clock.t = 16
    assert rx.expire() == 1 and rx.pending == {} and rx.expired == 1


def test_buffered_bytes_stay_within_the_limit_oldest_set_dropped_first():
    rx = ChunkFilter(max_total_bytes=1024, max_buffered_bytes=1500, max_pending=10, per_sender_bytes=1500, per_sender_pending=10)
    sender = ChunkFilter(max_chunk_bytes=500)
    for seq in range(1, 6):
        first = wire(sender.outbound(msg(os.urandom(1000), seq=seq)))[0]
        rx.inbound(first)
        assert rx.buffered_bytes <= 1500
    assert [k[2] for k in rx.pending] == ["a:3", "a:4", "a:5"]


def test_a_set_growing_past_the_buffer_limit_evicts_older_sets_not_itself():
    rx = ChunkFilter(max_total_bytes=1000, max_buffered_bytes=1000)
    old = wire(ChunkFilter(max_chunk_bytes=300).outbound(msg(os.urandom(900), seq=1)))
    new = wire(ChunkFilter(max_chunk_bytes=300).outbound(msg(os.urandom(900), seq=2)))
    rx.inbound(old[0])
    rx.inbound(old[1])
    rx.inbound(new[0])
    assert rx.buffered_bytes == 900
    assert rx.inbound(new[1]) is None and rx.inbound(new[2]).payload == b"".join(p.payload for p in new)
    assert rx.pending == {} and rx.expired == 1


def test_number_of_pending_sets_is_bounded():
    rx = ChunkFilter(max_pending=3, per_sender_pending=3)
    sender = ChunkFilter(max_chunk_bytes=10)
    for seq in range(1, 10):
        rx.inbound(wire(sender.outbound(msg(b"y" * 30, seq=seq)))[0])
    assert len(rx.pending) == 3


def test_outbound_refuses_payloads_above_the_total_limit():
    with pytest.raises(ValueError):
        ChunkFilter(max_chunk_bytes=10, max_total_bytes=100).outbound(msg(b"z" * 101))


def test_full_plaintext_chain_round_trips_a_big_payload():
    def chain() -> FilterChain:
        return FilterChain([CompressFilter(), DedupFilter(), ChunkFilter(max_chunk_bytes=4096)])

    raw = os.urandom(20000) + b"\0" * 50000
    out = chain().outbound(msg(raw))
    assert len(out) > 1
    rx = chain()
    got = [r for r in (rx.inbound(p) for p in wire(out) + wire(out)) if r is not None]
    assert len(got) == 1 and got[0].payload == raw


def test_a_flooding_sender_evicts_its_own_sets_not_another_senders():
    rx = ChunkFilter(max_pending=8)
    victim = wire(ChunkFilter(max_chunk_bytes=100).outbound(msg(DATA)))
    assert rx.inbound(victim[0]) is None
    for seq in range(100):
        flood = Message("t", Header("j", 0, 0, "flooder", seq, "x", ext={}), b"f")
        flood.header.ext["chunk"] = {"id": f"f:{seq}", "index": 0, "count": 2, "total_len": 2, "sha256": "0" * 64}
        rx.inbound(flood)
        assert len(rx.pending) <= 8
    assert sum(1 for k in rx.pending if k[1] == "flooder") <= rx.per_sender_pending
    assert [rx.inbound(p) for p in victim[1:]][-1].payload == DATA


def test_a_chunk_naming_another_sender_on_an_uplink_is_refused_before_buffering():
    part = wire(ChunkFilter(max_chunk_bytes=100).outbound(msg(DATA)))[0]
    forged = Message("feddiff/j/up/mallory", part.header, part.payload)
    rx = ChunkFilter()
    with pytest.raises(EnvelopeError) as err:
        rx.inbound(forged)
    assert err.value.reason == "wrong_topic" and rx.pending == {}
