"""Envelope: round trip, canonical header bytes for signers, and every rejection reason."""

from __future__ import annotations

import hashlib
import json
import struct

import pytest

from feddiff.protocol.envelope import MAGIC, MAX_HEADER, canonical_header_bytes, pack, unpack
from feddiff.protocol.message import ENVELOPE_VERSION, EnvelopeError, Header, Message


def make(payload: bytes = b"hello", **fields) -> Message:
    h = dict(job="j", round=1, step=2, sender="a", seq=1, content_type="features")
    h.update(fields)
    return Message("feddiff/j/up/a", Header(**h), payload)


def header_doc(data: bytes) -> dict:
    (n,) = struct.unpack(">I", data[4:8])
    return json.loads(data[8 : 8 + n])


def rebuild(doc: dict, payload: bytes, raw_head: bytes | None = None) -> bytes:
    head = raw_head if raw_head is not None else json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    return MAGIC + struct.pack(">I", len(head)) + head + payload


def reason_of(data: bytes, max_bytes: int = 10**6) -> str:
    with pytest.raises(EnvelopeError) as err:
        unpack("t", data, max_bytes)
    return err.value.reason


def test_round_trip_keeps_every_field_and_the_payload():
    m = make(b"x" * 1000, ext={"compress": {"alg": "zlib", "raw_len": 5}})
    back = unpack("feddiff/j/up/a", pack(m), 10**6)
    assert back.payload == b"x" * 1000
    assert back.topic == "feddiff/j/up/a"
    assert back.header == m.header


def test_pack_fills_length_digest_and_timestamp():
    m = make(b"abc")
    pack(m)
    assert m.header.payload_len == 3
    assert m.header.payload_sha256 == hashlib.sha256(b"abc").hexdigest()
    assert m.header.timestamp > 0


def test_pack_keeps_a_timestamp_already_set():
    m = make(timestamp=123.5)
    assert unpack("t", pack(m), 10**6).header.timestamp == 123.5


def test_empty_payload_round_trips():
    assert unpack("t", pack(make(b"")), 1000).payload == b""


def test_wire_layout_is_magic_length_canonical_json_payload():
    m = make(b"PAY")
    data = pack(m)
    (n,) = struct.unpack(">I", data[4:8])
    assert data[:4] == b"FDF1"
    assert data[8 : 8 + n] == canonical_header_bytes(m.header)
    assert data[8 + n :] == b"PAY"


def test_canonical_header_bytes_exclude_the_signature_and_ignore_key_order():
    a = make(ext={"seal": {"sig": "AAAA", "kid": "k"}, "compress": {"raw_len": 1, "alg": "zlib"}}).header
    b = make(ext={"compress": {"alg": "zlib", "raw_len": 1}}).header
    assert canonical_header_bytes(a, exclude_ext_keys=("seal",)) == canonical_header_bytes(b)
    assert canonical_header_bytes(a) != canonical_header_bytes(b)
    assert b" " not in canonical_header_bytes(a)


def test_a_received_header_canonicalises_to_what_the_sender_signed():
    m = make(b"p", ext={"note": "ünïcode ✓", "n": [1, 2.5, None, True]})
    data = pack(m)
    signed_by_sender = canonical_header_bytes(m.header, ("seal",))
    assert canonical_header_bytes(unpack("t", data, 10**6).header, ("seal",)) == signed_by_sender


def test_unicode_is_sent_as_utf8_not_escaped():
    data = pack(make(content_type="ä"))
    assert "ä".encode() in data


@pytest.mark.parametrize(
    "mutate, reason",
    [
        (lambda d: d + b"z" * 2000, "oversized"),
        (lambda d: b"XXXX" + d[4:], "bad_magic"),
        (lambda d: b"FD", "bad_magic"),
        (lambda d: b"", "bad_magic"),
        (lambda d: d[:6], "truncated"),
        (lambda d: d[:20], "truncated"),
        (lambda d: d[:4] + struct.pack(">I", MAX_HEADER + 1) + d[8:], "truncated"),
        (lambda d: d[:4] + struct.pack(">I", 0) + d[8:], "bad_header"),
        (lambda d: d[:-1], "bad_length"),
        (lambda d: d + b"!", "bad_length"),
        (lambda d: d[:-1] + bytes([d[-1] ^ 1]), "bad_digest"),
    ],
)
def test_each_framing_rejection_has_its_reason(mutate, reason):
    assert reason_of(mutate(pack(make())), max_bytes=1500) == reason


def test_oversized_is_checked_before_anything_else():
    assert reason_of(b"garbage" * 100, max_bytes=10) == "oversized"


def test_non_bytes_input_is_rejected_not_crashed():
    assert reason_of("FDF1 a string") == "bad_magic"  # type: ignore[arg-type]


def test_memoryview_and_bytearray_are_accepted():
    data = pack(make(b"q"))
    assert unpack("t", bytearray(data), 10**6).payload == b"q"
    assert unpack("t", memoryview(data), 10**6).payload == b"q"


def _tampered(change) -> bytes:
    data = pack(make(b"payload"))
    doc = header_doc(data)
    change(doc)
    return rebuild(doc, b"payload")


@pytest.mark.parametrize(
    "change",
    [
        lambda d: d.pop("seq"),
        lambda d: d.update(extra=1),
        lambda d: d.update(seq="1"),
        lambda d: d.update(seq=True),
        lambda d: d.update(seq=-1),
        lambda d: d.update(round=1.0),
        lambda d: d.update(timestamp="now"),
        lambda d: d.update(ext=[]),
        lambda d: d.update(job="a/b"),
        lambda d: d.update(sender="+"),
        lambda d: d.update(sender=""),
        lambda d: d.update(payload_sha256="ABC"),
        lambda d: d.update(content_type=None),
    ],
)
def test_header_with_wrong_fields_or_types_is_bad_header(change):
    assert reason_of(_tampered(change)) == "bad_header"


@pytest.mark.parametrize(
    "raw_head",
    [
        b"not json",
        b"[1, 2, 3]",
        b"\xff\xfe",
        b'{"a": NaN}',
        b"[" * 100000 + b"]" * 100000,
    ],
)
def test_header_that_is_not_a_json_object_is_bad_header(raw_head):
    assert reason_of(rebuild({}, b"", raw_head=raw_head[:MAX_HEADER])) == "bad_header"


def test_duplicate_keys_in_the_header_are_refused():
    data = pack(make(b"p"))
    doc = header_doc(data)
    head = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
    head = head[:-1] + b',"seq":999}'
    assert reason_of(rebuild({}, b"p", raw_head=head)) == "bad_header"


def test_nan_timestamp_is_refused():
    data = pack(make(b"p"))
    doc = header_doc(data)
    head = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode().replace(
        f'"timestamp":{doc["timestamp"]!r}'.encode(), b'"timestamp":NaN'
    )
    assert reason_of(rebuild({}, b"p", raw_head=head)) == "bad_header"


def test_lone_surrogate_that_no_signer_could_hash_is_refused():
    doc = header_doc(pack(make(b"p")))
    head = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode().replace(b'"features"', b'"\\ud800"')
    assert reason_of(rebuild({}, b"p", raw_head=head)) == "bad_header"


def test_unsupported_version_is_bad_version_even_with_unknown_fields():
    assert reason_of(_tampered(lambda d: d.update(version=ENVELOPE_VERSION + 1))) == "bad_version"
    assert reason_of(_tampered(lambda d: d.update(version=2, new_field=1))) == "bad_version"
