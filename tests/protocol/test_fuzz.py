"""Fuzzing: whatever bytes or headers arrive, only EnvelopeError escapes the parsers and filters."""

from __future__ import annotations

import copy

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from feddiff.protocol.arrays import decode_arrays, encode_arrays
from feddiff.protocol.chunking import ChunkFilter
from feddiff.protocol.envelope import pack, unpack
from feddiff.protocol.filters import CompressFilter, DedupFilter
from feddiff.protocol.message import EnvelopeError, FilterChain, Header, Message

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _header(**over) -> Header:
    h = dict(job="j", round=0, step=0, sender="a", seq=1, content_type="x")
    h.update(over)
    return Header(**h)


GOOD_ARRAYS = encode_arrays({"a": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.array(True)}, {"m": 1})
GOOD_ENVELOPE = pack(Message("t", _header(ext={"compress": {"alg": "zlib", "raw_len": 3}}), GOOD_ARRAYS))

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=10),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)


def only_envelope_error(fn) -> None:
    try:
        fn()
    except EnvelopeError:
        pass


def splice(good: bytes, noise: bytes, pos: int) -> bytes:
    pos %= len(good) + 1
    return good[:pos] + noise + good[pos + len(noise) :]


@FUZZ
@given(st.binary(max_size=400))
def test_unpack_of_random_bytes(data):
    only_envelope_error(lambda: unpack("t", data, 10**6))


@FUZZ
@given(st.binary(min_size=1, max_size=40), st.integers(0, 10**6))
def test_unpack_of_mutated_envelopes(noise, pos):
    only_envelope_error(lambda: unpack("t", splice(GOOD_ENVELOPE, noise, pos), 10**6))


@FUZZ
@given(st.binary(max_size=400))
def test_decode_of_random_bytes(data):
    only_envelope_error(lambda: decode_arrays(data, max_elements=10**6))
    only_envelope_error(lambda: decode_arrays(b"FDA1" + data, max_elements=10**6))


@FUZZ
@given(st.binary(min_size=1, max_size=40), st.integers(0, 10**6))
def test_decode_of_mutated_payloads(noise, pos):
    only_envelope_error(lambda: decode_arrays(splice(GOOD_ARRAYS, noise, pos), max_elements=10**6))


@FUZZ
@given(st.dictionaries(st.sampled_from(["compress", "chunk", "other"]), json_values, max_size=3), st.binary(max_size=200))
def test_filters_survive_any_ext_entries(ext, payload):
    """Headers on the wire are JSON: any JSON value may sit where a filter expects its dict."""
    chain = FilterChain([CompressFilter(max_bytes=10**5), DedupFilter(), ChunkFilter(max_total_bytes=10**5)])
    only_envelope_error(lambda: chain.inbound(Message("t", _header(ext=ext), payload)))


chunk_entries = st.fixed_dictionaries(
    {
        "id": st.sampled_from(["a:1", "a:2", "", 5]),
        "index": st.integers(-2, 6),
        "count": st.integers(-1, 6),
        "total_len": st.integers(-1, 60),
        "sha256": st.sampled_from(["0" * 64, "f" * 64, "xyz"]),
    }
)


@FUZZ
@given(st.lists(st.tuples(chunk_entries, st.binary(max_size=20)), max_size=12))
def test_chunk_reassembly_of_arbitrary_chunk_streams(stream):
    rx = ChunkFilter(max_total_bytes=100, max_pending=3, max_buffered_bytes=150)
    for info, payload in stream:
        only_envelope_error(lambda: rx.inbound(Message("t", _header(ext={"chunk": info}), payload)))
        assert rx.buffered_bytes <= 150 and len(rx.pending) <= 3


@FUZZ
@given(st.binary(min_size=0, max_size=3000), st.integers(1, 700), st.randoms(use_true_random=False), st.integers(0, 5))
def test_any_arrival_order_with_duplicates_reassembles_exactly(payload, chunk, rnd, dups):
    parts = [unpack(p.topic, pack(p), 10**6) for p in ChunkFilter(max_chunk_bytes=chunk).outbound(Message("t", _header(timestamp=5.0), payload))]
    arrivals = parts + [copy.deepcopy(rnd.choice(parts)) for _ in range(dups)]
    rnd.shuffle(arrivals)
    rx = ChunkFilter()
    done = [m for m in (rx.inbound(p) for p in arrivals) if m is not None]
    assert {m.payload for m in done} == {payload}
    if len(parts) > 1:  # unchunked duplicates pass through: DedupFilter's job, not this one's
        assert len(done) == 1
