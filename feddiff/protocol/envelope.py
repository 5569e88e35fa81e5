"""The envelope on the wire: b"FDF1" | u32 header length (big endian) | canonical header JSON | payload.

Why a strict, total parser: every byte that reaches ``unpack`` came from a broker that anyone on
the job (or a bug) may write to. Any byte string either becomes a ``Message`` or raises
``EnvelopeError`` with a stable reason; nothing else escapes (fuzzed in tests/protocol).

Why canonical JSON (sorted keys, compact separators, UTF-8, no NaN): signers hash the header, so
two parties must turn the same header into the same bytes. ``canonical_header_bytes`` is the one
place that defines those bytes; ``unpack`` only admits headers it can re-canonicalise.
"""

from __future__ import annotations

import json
import math
import re
import struct
import time
from typing import Any, Iterable, Union

from feddiff.protocol.message import ENVELOPE_VERSION, EnvelopeError, Header, Message

MAGIC = b"FDF1"
PREFIX_LEN = len(MAGIC) + 4
MAX_HEADER = 64 * 1024
SUPPORTED_VERSIONS = frozenset({ENVELOPE_VERSION})

_INT_FIELDS = ("round", "step", "seq", "version", "payload_len")
_STR_FIELDS = ("job", "sender", "content_type", "payload_sha256")
FIELDS = frozenset(_INT_FIELDS + _STR_FIELDS + ("timestamp", "ext"))
_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_HEX64 = re.compile(r"^[0-9a-f]{64}$")
_MAX_TEXT = 256

BytesLike = Union[bytes, bytearray, memoryview]


def canonical_json(doc: Any) -> bytes:
    """Deterministic JSON bytes; raises ValueError for NaN/inf and UnicodeEncodeError for lone
    surrogates, so nothing that is not canonicalisable can be signed or sent."""
    return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def canonical_header_bytes(header: Header, exclude_ext_keys: Iterable[str] = ()) -> bytes:
    """The header as signers see it: canonical JSON with the named ``ext`` entries left out
    (a signature cannot cover itself)."""
    skip = set(exclude_ext_keys)
    d = header.to_dict()
    d["ext"] = {k: v for k, v in d["ext"].items() if k not in skip}
    return canonical_json(d)


def pack(msg: Message) -> bytes:
    """Serialise ``msg``; fills payload_len/payload_sha256 and a zero timestamp in ``msg.header``.

    Raises ValueError/TypeError for a header that cannot be sent (non-JSON ext, NaN): that is a
    bug of the sender, not something a peer caused."""
    h = msg.header
    payload = bytes(msg.payload)
    h.payload_len = len(payload)
    h.payload_sha256 = msg.sha256()  # hashed once: a sealing filter may have asked already
    h.timestamp = float(h.timestamp) if h.timestamp else time.time()  # receivers see a float
    head = canonical_json(h.to_dict())
    if len(head) > MAX_HEADER:
        raise ValueError(f"envelope header of {len(head)} bytes exceeds {MAX_HEADER}")
    return b"".join((MAGIC, struct.pack(">I", len(head)), head, payload))


def reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise ValueError(f"duplicate key {k!r}")
        out[k] = v
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not allowed")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _check_header(doc: Any) -> None:
    if not isinstance(doc, dict):
        raise EnvelopeError("bad_header", "header is not a JSON object")
    version = doc.get("version")
    if _is_int(version) and version not in SUPPORTED_VERSIONS:
        raise EnvelopeError("bad_version", f"envelope version {version} (supported: {sorted(SUPPORTED_VERSIONS)})")
    if set(doc) != FIELDS:
        extra, missing = sorted(set(doc) - FIELDS), sorted(FIELDS - set(doc))
        raise EnvelopeError("bad_header", f"unexpected fields {extra[:5]} / missing {missing}")
    for k in _INT_FIELDS:
        if not _is_int(doc[k]) or doc[k] < 0:
            raise EnvelopeError("bad_header", f"field {k} must be a non-negative integer")
    for k in _STR_FIELDS:
        if not isinstance(doc[k], str) or len(doc[k]) > _MAX_TEXT:
            raise EnvelopeError("bad_header", f"field {k} must be a string")
    ts = doc["timestamp"]
    if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or ts < 0:
        raise EnvelopeError("bad_header", "field timestamp must be a finite non-negative number")
    if not isinstance(doc["ext"], dict):
        raise EnvelopeError("bad_header", "field ext must be an object")
    for k in ("job", "sender"):
        if not _ID.match(doc[k]):
            raise EnvelopeError("bad_header", f"field {k} is not a valid id")
    if not _HEX64.match(doc["payload_sha256"]):
        raise EnvelopeError("bad_header", "field payload_sha256 is not 64 lowercase hex digits")


def unpack(topic: str, data: BytesLike, max_bytes: int) -> Message:
    """Parse and verify one envelope received on ``topic``; raises only ``EnvelopeError``.

    Reasons, in the order checked: oversized, bad_magic, truncated, bad_header, bad_version,
    bad_length, bad_digest."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise EnvelopeError("bad_magic", f"expected bytes, got {type(data).__name__}")
    try:
        view = memoryview(data).cast("B")
    except (TypeError, ValueError):
        raise EnvelopeError("bad_magic", "not a contiguous byte buffer") from None
    if len(view) > max_bytes:
        raise EnvelopeError("oversized", f"{len(view)} bytes > limit {max_bytes}")
    if len(view) < len(MAGIC) or view[: len(MAGIC)] != MAGIC:
        raise EnvelopeError("bad_magic")
    if len(view) < PREFIX_LEN:
        raise EnvelopeError("truncated", "no header length")
    (hlen,) = struct.unpack(">I", view[len(MAGIC) : PREFIX_LEN])
    if hlen > MAX_HEADER or PREFIX_LEN + hlen > len(view):
        raise EnvelopeError("truncated", f"header length {hlen} with {len(view) - PREFIX_LEN} bytes left")
    try:
        doc = json.loads(
            bytes(view[PREFIX_LEN : PREFIX_LEN + hlen]).decode("utf-8"),
            object_pairs_hook=reject_duplicate_keys,
            parse_constant=_reject_constant,
        )
        _check_header(doc)
        canonical_json(doc)  # whatever we admit, a signer can canonicalise (no lone surrogates)
    except EnvelopeError:
        raise
    except (UnicodeError, ValueError, RecursionError, TypeError):
        raise EnvelopeError("bad_header", "not canonicalisable JSON") from None
    payload = view[PREFIX_LEN + hlen :]
    if doc["payload_len"] != len(payload):
        raise EnvelopeError("bad_length", f"payload is {len(payload)} bytes, header says {doc['payload_len']}")
    body = bytes(payload)
    msg = Message(topic, Header(**{**doc, "timestamp": float(doc["timestamp"])}), body)
    if msg.sha256() != doc["payload_sha256"]:  # the digest stays cached for the filters inbound
        raise EnvelopeError("bad_digest", "payload sha256 does not match the header")
    return msg
