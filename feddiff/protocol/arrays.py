"""Named numpy arrays as bytes: b"FDA1" | u32 index length | JSON index | raw little-endian data.

Why not pickle or ``np.save``: a payload from the network must only ever become plain numeric
arrays, whatever its bytes; pickle executes code and ``np.load`` accepts object arrays. The index
lists, per array, its name, a dtype from ``ALLOWED``, its shape, its offset into the data and its
byte length; arrays are laid out back to back in index order, and ``decode_arrays`` insists on
exactly that layout, so one payload has exactly one meaning.

Layout (version 1)::

    b"FDA1" | u32 BE n | n bytes of JSON {"v": 1, "arrays": [{"name", "dtype", "shape",
    "offset", "nbytes"}, ...], "meta": {...}} | data
"""

from __future__ import annotations

import json
import struct
from typing import Any, Optional

import numpy as np

from feddiff.protocol.envelope import reject_duplicate_keys
from feddiff.protocol.message import EnvelopeError

MAGIC = b"FDA1"
VERSION = 1
ALLOWED = frozenset(
    {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "bool"}
)
MAX_ELEMENTS = 256 * 1024 * 1024
MAX_ARRAYS = 100_000
MAX_NDIM = 32
MAX_NAME = 1024
_ENTRY_KEYS = frozenset({"name", "dtype", "shape", "offset", "nbytes"})


def encode_arrays(arrays: dict[str, np.ndarray], meta: Optional[dict] = None) -> bytes:
    """Serialise ``arrays`` (insertion order kept) and a JSON-able ``meta`` dict.

    Raises ValueError for a dtype outside ``ALLOWED``, a non-string name or a meta that is not
    a JSON object: those are sender bugs and must fail before anything reaches the wire."""
    if meta is not None and not isinstance(meta, dict):
        raise ValueError(f"meta must be a dict, got {type(meta).__name__}")
    index: list[dict[str, Any]] = []
    parts: list[memoryview] = []
    offset = 0
    for name, value in arrays.items():
        if not isinstance(name, str) or not name or len(name) > MAX_NAME:
            raise ValueError(f"array name {name!r}: expected a non-empty string of at most {MAX_NAME} characters")
        a = np.asarray(value)
        if a.dtype.name not in ALLOWED:
            raise ValueError(f"array {name!r}: dtype {a.dtype} is not allowed on the wire (allowed: {', '.join(sorted(ALLOWED))})")
        if a.ndim > MAX_NDIM:
            raise ValueError(f"array {name!r}: {a.ndim} dimensions > {MAX_NDIM}")
        le = np.ascontiguousarray(a, dtype=a.dtype.newbyteorder("<"))
        raw = memoryview(le.reshape(-1).view(np.uint8))
        index.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape), "offset": offset, "nbytes": raw.nbytes})
        parts.append(raw)
        offset += raw.nbytes
    try:
        head = json.dumps({"v": VERSION, "arrays": index, "meta": meta or {}}, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as exc:
        raise ValueError(f"meta is not JSON-serialisable: {exc}") from None
    return b"".join([MAGIC, struct.pack(">I", len(head)), head, *parts])


def _is_count(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= 0


def _bad(detail: str) -> EnvelopeError:
    return EnvelopeError("bad_payload", detail)


def decode_arrays(data: bytes, max_elements: int = MAX_ELEMENTS) -> tuple[dict[str, np.ndarray], dict]:
    """Inverse of ``encode_arrays``: fresh, writable, native-endian arrays and the meta dict.

    Raises only ``EnvelopeError('bad_payload')``, including when the arrays would hold more
    than ``max_elements`` elements in total (checked before anything is allocated)."""
    try:
        return _decode(data, max_elements)
    except EnvelopeError:
        raise
    except Exception as exc:  # noqa: BLE001 - the contract: only EnvelopeError escapes
        raise _bad(f"{type(exc).__name__}: {exc}"[:200]) from None


def _decode(data: bytes, max_elements: int) -> tuple[dict[str, np.ndarray], dict]:
    view = memoryview(data).cast("B")
    if len(view) < 8 or view[:4] != MAGIC:
        raise _bad("not an array payload (bad magic)")
    (hlen,) = struct.unpack(">I", view[4:8])
    if 8 + hlen > len(view):
        raise _bad(f"index length {hlen} exceeds the payload")
    doc = json.loads(bytes(view[8 : 8 + hlen]).decode("utf-8"), object_pairs_hook=reject_duplicate_keys)
    if not isinstance(doc, dict) or set(doc) != {"v", "arrays", "meta"}:
        raise _bad("index must be an object with v, arrays, meta")
    if doc["v"] != VERSION or isinstance(doc["v"], bool):
        raise _bad(f"unsupported array payload version {doc['v']!r}")
    entries, meta = doc["arrays"], doc["meta"]
    if not isinstance(entries, list) or len(entries) > MAX_ARRAYS or not isinstance(meta, dict):
        raise _bad("index arrays must be a list and meta an object")
    body = view[8 + hlen :]
    plan: list[tuple[str, np.dtype, tuple[int, ...], int, int]] = []
    expected_offset = 0
    total = 0
    for item in entries:
        if not isinstance(item, dict) or set(item) != _ENTRY_KEYS:
            raise _bad("malformed index entry")
        name, dtype, shape, off, nbytes = (item[k] for k in ("name", "dtype", "shape", "offset", "nbytes"))
        if not isinstance(name, str) or not name or len(name) > MAX_NAME or any(p[0] == name for p in plan):
            raise _bad(f"bad or repeated array name {str(name)[:40]!r}")
        if not isinstance(dtype, str) or dtype not in ALLOWED:
            raise _bad(f"array {name!r}: dtype {str(dtype)[:20]!r} not allowed")
        if not isinstance(shape, list) or len(shape) > MAX_NDIM or not all(_is_count(s) for s in shape):
            raise _bad(f"array {name!r}: bad shape")
        if not _is_count(off) or not _is_count(nbytes) or off != expected_offset:
            raise _bad(f"array {name!r}: offset {off!r} is not {expected_offset}")
        n = 1
        for s in shape:  # Python ints: no overflow, and stop early on absurd shapes
            n *= s
            if n > max_elements:
                break
        total += n
        if total > max_elements:
            raise _bad(f"more than {max_elements} elements")
        dt = np.dtype(dtype).newbyteorder("<")
        if n * dt.itemsize != nbytes:
            raise _bad(f"array {name!r}: {nbytes} bytes do not hold shape {shape} of {dtype}")
        plan.append((name, dt, tuple(shape), off, nbytes))
        expected_offset += nbytes
    if expected_offset != len(body):
        raise _bad(f"data is {len(body)} bytes, index describes {expected_offset}")
    out: dict[str, np.ndarray] = {}
    for name, dt, shape, off, nbytes in plan:
        flat = np.frombuffer(body[off : off + nbytes], dtype=dt)
        out[name] = flat.astype(dt.newbyteorder("="), copy=True).reshape(shape)
    return out, meta


def blobs_to_arrays(prefix: str, blobs: list[bytes]) -> dict[str, np.ndarray]:
    """Opaque byte strings (e.g. serialized ciphertexts) as two arrays: data and lengths."""
    return {
        f"{prefix}_data": np.frombuffer(b"".join(blobs), dtype=np.uint8),
        f"{prefix}_lens": np.array([len(b) for b in blobs], dtype=np.int64),
    }


def arrays_to_blobs(arrays: dict[str, np.ndarray], prefix: str) -> list[bytes]:
    """Inverse of ``blobs_to_arrays``; a missing or inconsistent pair is EnvelopeError('bad_payload')."""
    data_arr, lens = arrays.get(f"{prefix}_data"), arrays.get(f"{prefix}_lens")
    if data_arr is None or lens is None:
        raise EnvelopeError("bad_payload", f"{prefix}: blob arrays missing")
    if lens.ndim != 1 or lens.dtype.kind not in "iu":
        raise EnvelopeError("bad_payload", f"{prefix}: blob lengths must be a 1-d integer array")
    data = data_arr.tobytes()
    sizes = [int(n) for n in lens.tolist()]
    if any(n < 0 for n in sizes) or sum(sizes) != len(data):
        raise EnvelopeError("bad_payload", f"{prefix}: blob lengths do not match the data")
    out, off = [], 0
    for n in sizes:
        out.append(data[off : off + n])
        off += n
    return out
