"""Envelope, arrays, chunking and dedup: round trips, each rejection, and fuzzing."""

import copy

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from feddiff.protocol import topics
from feddiff.protocol.arrays import decode_arrays, encode_arrays
from feddiff.protocol.chunking import ChunkFilter
from feddiff.protocol.envelope import pack, unpack
from feddiff.protocol.filters import CompressFilter, DedupFilter
from feddiff.protocol.message import EnvelopeError, FilterChain, Header, Message


def msg(payload=b"hello", seq=1):
    return Message("feddiff/j/up/a", Header(job="j", round=1, step=2, sender="a", seq=seq, content_type="features"), payload)


def test_envelope_round_trip():
    m = unpack("t", pack(msg(b"x" * 1000)), 10**6)
    assert m.payload == b"x" * 1000 and m.header.seq == 1 and m.header.payload_len == 1000


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda d: d[:-1], "bad_length"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "bad_digest"),
        (lambda d: b"XXXX" + d[4:], "bad_magic"),
        (lambda d: d[:20], "truncated"),
        (lambda d: d + b"z" * 2000, "oversized"),
    ],
)
def test_each_rejection(mutate, reason):
    with pytest.raises(EnvelopeError) as err:
        unpack("t", mutate(pack(msg())), 1500)
    assert err.value.reason == reason


def test_arrays_round_trip_all_dtypes():
    arrays = {d: (np.arange(6).reshape(2, 3) % 2).astype(d) for d in ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]}
    arrays["empty"] = np.zeros((0, 4), np.float32)
    arrays["scalar"] = np.array(3.5)
    back, meta = decode_arrays(encode_arrays(arrays, {"k": [1, 2]}))
    assert meta == {"k": [1, 2]}
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and np.array_equal(back[k], v)


def test_object_arrays_are_refused():
    with pytest.raises(ValueError):
        encode_arrays({"x": np.array([object()])})


def test_chunk_lost_then_resent_and_duplicates():
    out = ChunkFilter(max_chunk_bytes=100).outbound(msg(bytes(range(256)) * 4))
    assert len(out) == 11
    rx = ChunkFilter(max_chunk_bytes=100)
    lost = out[5]
    results = [rx.inbound(copy.deepcopy(p)) for p in out if p is not lost]
    assert all(r is None for r in results)
    assert rx.inbound(copy.deepcopy(out[3])) is None  # a duplicate chunk is harmless
    whole = rx.inbound(copy.deepcopy(lost))  # resent
    assert whole.payload == bytes(range(256)) * 4 and "chunk" not in whole.header.ext


def test_tampered_chunk_fails_integrity():
    out = ChunkFilter(max_chunk_bytes=100).outbound(msg(b"a" * 300))
    out[1].payload = b"b" * 100
    rx = ChunkFilter()
    with pytest.raises(EnvelopeError) as err:
        for p in out:
            rx.inbound(p)
    assert err.value.reason == "bad_chunk"


def test_dedup_swallows_exact_repeat_only():
    d = DedupFilter()
    assert d.inbound(msg()) is not None
    assert d.inbound(msg()) is None
    assert d.inbound(msg(b"forged")) is not None  # same seq, other bytes: not a duplicate


def test_compression_bomb_is_refused():
    chain = FilterChain([CompressFilter(max_bytes=1000)])
    (wire,) = chain.outbound(msg(b"\0" * 100000))
    with pytest.raises(EnvelopeError) as err:
        chain.inbound(wire)
    assert err.value.reason == "oversized"


def test_topics():
    assert topics.parse_topic(topics.uplink("j", "hsi")) == ("j", "up", "hsi")
    with pytest.raises(ValueError):
        topics.uplink("j", "a/b")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_unpack_only_raises_its_own_error(data):
    try:
        unpack("t", data, 10**6)
    except EnvelopeError:
        pass


@settings(max_examples=200, deadline=None)
@given(st.binary(min_size=0, max_size=300), st.integers(0, 200))
def test_mutated_envelopes_and_payloads_only_raise_envelope_error(noise, pos):
    good = pack(Message("t", Header(job="j", round=0, step=0, sender="a", seq=1, content_type="x"), encode_arrays({"a": np.ones(3)})))
    data = good[:pos] + noise + good[pos + len(noise):]
    for fn in (lambda: unpack("t", data, 10**6), lambda: decode_arrays(data), lambda: ChunkFilter().inbound(unpack("t", data, 10**6))):
        try:
            fn()
        except EnvelopeError:
            pass
