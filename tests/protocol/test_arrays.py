"""Array payloads: every allowed dtype round-trips bit-exactly; anything malformed is bad_payload."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

from feddiff.protocol.arrays import ALLOWED, MAGIC, arrays_to_blobs, blobs_to_arrays, decode_arrays, encode_arrays
from feddiff.protocol.message import EnvelopeError

DTYPES = ["float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]


def payload(index: list, body: bytes, meta: dict | None = None, v: int = 1) -> bytes:
    head = json.dumps({"v": v, "arrays": index, "meta": meta or {}}).encode()
    return MAGIC + struct.pack(">I", len(head)) + head + body


def bad(data: bytes, **kw) -> str:
    with pytest.raises(EnvelopeError) as err:
        decode_arrays(data, **kw)
    assert err.value.reason == "bad_payload"
    return str(err.value)


@pytest.mark.parametrize("dtype", DTYPES)
def test_every_dtype_round_trips_exactly(dtype):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((3, 4, 5)) * 100).astype(dtype)
    back, _ = decode_arrays(encode_arrays({"a": a}))
    assert back["a"].dtype == a.dtype and back["a"].shape == a.shape
    assert back["a"].tobytes() == a.tobytes()


def test_extreme_float_values_survive():
    a = np.array([np.nan, np.inf, -np.inf, -0.0, np.finfo(np.float64).tiny], dtype=np.float64)
    back, _ = decode_arrays(encode_arrays({"a": a}))
    assert back["a"].tobytes() == a.tobytes()


def test_empty_and_zero_dimensional_arrays_and_meta():
    arrays = {
        "empty": np.zeros((0, 4), np.float32),
        "empty_1d": np.array([], dtype=np.int64),
        "scalar": np.array(3.5),
        "flag": np.array(True),
    }
    back, meta = decode_arrays(encode_arrays(arrays, {"k": [1, 2], "nested": {"x": "y"}}))
    assert meta == {"k": [1, 2], "nested": {"x": "y"}}
    assert list(back) == list(arrays)  # order kept
    for k, v in arrays.items():
        assert back[k].dtype == v.dtype and back[k].shape == v.shape and np.array_equal(back[k], v)


def test_no_arrays_at_all():
    assert decode_arrays(encode_arrays({})) == ({}, {})


def test_big_endian_and_non_contiguous_inputs_decode_to_the_same_values():
    big = np.arange(12, dtype=">i4").reshape(3, 4)
    strided = np.arange(40, dtype=np.float32).reshape(5, 8)[:, ::3]
    back, _ = decode_arrays(encode_arrays({"big": big, "strided": strided}))
    assert np.array_equal(back["big"], big) and back["big"].dtype.isnative
    assert np.array_equal(back["strided"], strided)


def test_decoded_arrays_are_writable_copies():
    back, _ = decode_arrays(encode_arrays({"a": np.ones(3)}))
    back["a"][0] = 7  # would raise on a read-only view of the received bytes


@pytest.mark.parametrize("value", [np.array([object()]), np.array(["text"]), np.array([1 + 2j]), np.array(["2020-01-01"], dtype="datetime64[D]")])
def test_non_numeric_arrays_are_refused_at_the_sender(value):
    with pytest.raises(ValueError):
        encode_arrays({"x": value})


def test_sender_bugs_raise_value_error():
    with pytest.raises(ValueError):
        encode_arrays({1: np.ones(2)})  # type: ignore[dict-item]
    with pytest.raises(ValueError):
        encode_arrays({"a": np.ones(2)}, meta={"x": object()})


def test_allow_list_has_no_object_or_string_dtype():
    assert not {"object", "str", "bytes", "void"} & ALLOWED


def _one(**over) -> dict:
    entry = {"name": "a", "dtype": "float32", "shape": [2], "offset": 0, "nbytes": 8}
    entry.update(over)
    return entry


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"FDA1",
        b"XXXX" + b"\0" * 10,
        MAGIC + struct.pack(">I", 1000) + b"{}",
        MAGIC + struct.pack(">I", 2) + b"[]",
        payload([_one()], b"\0" * 8, v=2),
        payload([_one(dtype="object")], b"\0" * 8),
        payload([_one(dtype="<f4")], b"\0" * 8),
        payload([_one(shape=[-2])], b"\0" * 8),
        payload([_one(shape=[2.0])], b"\0" * 8),
        payload([_one(shape=[True, 2])], b"\0" * 8),
        payload([_one(nbytes=4)], b"\0" * 8),
        payload([_one(offset=4)], b"\0" * 12),
        payload([_one()], b"\0" * 4),
        payload([_one()], b"\0" * 9),
        payload([_one(), _one(offset=8)], b"\0" * 16),
        payload([_one(name="")], b"\0" * 8),
        payload([{"name": "a"}], b""),
        payload([_one(extra=1)], b"\0" * 8),
        payload([_one(shape=[2**40, 2**40, 2**40], nbytes=0)], b""),
        payload(["not a dict"], b""),
    ],
)
def test_malformed_payloads_are_bad_payload(data):
    bad(data)


def test_meta_must_be_an_object():
    head = json.dumps({"v": 1, "arrays": [], "meta": [1]}).encode()
    bad(MAGIC + struct.pack(">I", len(head)) + head)


def test_element_limit_is_checked_before_allocating():
    data = encode_arrays({"a": np.zeros(100, np.uint8), "b": np.zeros(100, np.uint8)})
    assert decode_arrays(data, max_elements=200)[0]["b"].size == 100
    assert "elements" in bad(data, max_elements=150)


def test_blobs_round_trip_and_inconsistent_lengths_are_rejected():
    blobs = [b"abc", b"", b"\x00\xff" * 10]
    arrays = blobs_to_arrays("ct", blobs)
    back, _ = decode_arrays(encode_arrays(arrays))
    assert arrays_to_blobs(back, "ct") == blobs
    back["ct_lens"] = np.array([3, 100], dtype=np.int64)
    with pytest.raises(EnvelopeError):
        arrays_to_blobs(back, "ct")
    with pytest.raises(EnvelopeError):
        arrays_to_blobs({}, "ct")
