"""The envelope on the wire: b"FDF1" | u32 header length | canonical header JSON | payload.

The parser is strict and total: any byte string either becomes a ``Message`` or raises
``EnvelopeError`` with a stable reason; nothing else escapes (fuzzed in the tests).
"""

from __future__ import annotations

import hashlib
import json
import struct
import time

from feddiff.protocol.message import ENVELOPE_VERSION, EnvelopeError, Header, Message

MAGIC = b"FDF1"
MAX_HEADER = 64 * 1024
_FIELDS = {
    "job": str,
    "round": int,
    "step": int,
    "sender": str,
    "seq": int,
    "content_type": str,
    "version": int,
    "payload_len": int,
    "payload_sha256": str,
    "timestamp": (int, float),
    "ext": dict,
}


def canonical_json(doc: dict) -> bytes:
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def canonical_header_bytes(header: Header, exclude_ext_keys: tuple[str, ...] = ()) -> bytes:
    d = header.to_dict()
    d["ext"] = {k: v for k, v in d["ext"].items() if k not in exclude_ext_keys}
    return canonical_json(d)


def pack(msg: Message) -> bytes:
    h = msg.header
    h.payload_len = len(msg.payload)
    h.payload_sha256 = hashlib.sha256(msg.payload).hexdigest()
    if not h.timestamp:
        h.timestamp = time.time()
    head = canonical_json(h.to_dict())
    return MAGIC + struct.pack(">I", len(head)) + head + msg.payload


def unpack(topic: str, data: bytes, max_bytes: int) -> Message:
    if not isinstance(data, (bytes, bytearray)):
        raise EnvelopeError("bad_magic", "not bytes")
    if len(data) > max_bytes:
        raise EnvelopeError("oversized", f"{len(data)} bytes > {max_bytes}")
    if len(data) < 8 or data[:4] != MAGIC:
        raise EnvelopeError("bad_magic")
    (hlen,) = struct.unpack(">I", data[4:8])
    if hlen > MAX_HEADER or 8 + hlen > len(data):
        raise EnvelopeError("truncated", f"header length {hlen}")
    try:
        doc = json.loads(bytes(data[8 : 8 + hlen]).decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise EnvelopeError("bad_header", "not JSON") from None
    if not isinstance(doc, dict) or set(doc) != set(_FIELDS):
        raise EnvelopeError("bad_header", "unexpected fields")
    for k, tp in _FIELDS.items():
        v = doc[k]
        if isinstance(v, bool) or not isinstance(v, tp):
            raise EnvelopeError("bad_header", f"field {k}")
    if doc["version"] != ENVELOPE_VERSION:
        raise EnvelopeError("bad_version", str(doc["version"]))
    payload = bytes(data[8 + hlen :])
    if doc["payload_len"] != len(payload):
        raise EnvelopeError("bad_length", f"{len(payload)} != {doc['payload_len']}")
    if hashlib.sha256(payload).hexdigest() != doc["payload_sha256"]:
        raise EnvelopeError("bad_digest")
    header = Header(**doc)
    header.timestamp = float(header.timestamp)
    return Message(topic, header, payload)
