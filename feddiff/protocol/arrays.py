"""Named numpy arrays as bytes: a JSON index (dtype, shape, offset) then raw little-endian data.

Never pickle: a payload from the network can only ever become plain numeric arrays.
"""

from __future__ import annotations

import json
import struct
from typing import Optional

import numpy as np

from feddiff.protocol.message import EnvelopeError

ALLOWED = {"float16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "bool"}
MAX_ELEMENTS = 256 * 1024 * 1024


def encode_arrays(arrays: dict[str, np.ndarray], meta: Optional[dict] = None) -> bytes:
    index, chunks, offset = [], [], 0
    for name, arr in arrays.items():
        a = np.asarray(arr)
        if a.dtype.name not in ALLOWED:
            raise ValueError(f"array {name!r}: dtype {a.dtype} not allowed on the wire")
        raw = np.ascontiguousarray(a.astype(a.dtype.newbyteorder("<"), copy=False)).tobytes()
        index.append({"name": name, "dtype": a.dtype.name, "shape": list(a.shape), "offset": offset, "nbytes": len(raw)})
        chunks.append(raw)
        offset += len(raw)
    head = json.dumps({"arrays": index, "meta": meta or {}}, separators=(",", ":")).encode()
    return struct.pack(">I", len(head)) + head + b"".join(chunks)


def decode_arrays(data: bytes, max_elements: int = MAX_ELEMENTS) -> tuple[dict[str, np.ndarray], dict]:
    try:
        (hlen,) = struct.unpack(">I", data[:4])
        if 4 + hlen > len(data):
            raise ValueError("index truncated")
        doc = json.loads(bytes(data[4 : 4 + hlen]).decode("utf-8"))
        body = memoryview(data)[4 + hlen :]
        if not isinstance(doc, dict) or not isinstance(doc.get("arrays"), list) or not isinstance(doc.get("meta", {}), dict):
            raise ValueError("bad index")
        out: dict[str, np.ndarray] = {}
        total = 0
        for item in doc["arrays"]:
            name, dtype, shape = item["name"], item["dtype"], item["shape"]
            off, nbytes = item["offset"], item["nbytes"]
            if not isinstance(name, str) or dtype not in ALLOWED or not isinstance(shape, list):
                raise ValueError("bad entry")
            if not all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in shape):
                raise ValueError("bad shape")
            if not all(isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in (off, nbytes)):
                raise ValueError("bad offset")
            n = int(np.prod(shape, dtype=np.int64)) if shape else 1
            total += n
            dt = np.dtype(dtype).newbyteorder("<")
            if total > max_elements or n * dt.itemsize != nbytes or off + nbytes > len(body):
                raise ValueError("size mismatch")
            out[name] = np.frombuffer(body[off : off + nbytes], dtype=dt).reshape(shape).astype(dt.newbyteorder("="))
        return out, doc.get("meta", {})
    except EnvelopeError:
        raise
    except Exception as exc:
        raise EnvelopeError("bad_payload", f"{type(exc).__name__}") from None


def blobs_to_arrays(prefix: str, blobs: list[bytes]) -> dict[str, np.ndarray]:
    """Opaque byte strings (e.g. serialized ciphertexts) as two arrays: data and lengths."""
    return {
        f"{prefix}_data": np.frombuffer(b"".join(blobs), dtype=np.uint8),
        f"{prefix}_lens": np.array([len(b) for b in blobs], dtype=np.int64),
    }


def arrays_to_blobs(arrays: dict[str, np.ndarray], prefix: str) -> list[bytes]:
    data, lens = arrays[f"{prefix}_data"].tobytes(), arrays[f"{prefix}_lens"]
    if int(lens.sum()) != len(data) or (lens < 0).any():
        raise EnvelopeError("bad_payload", f"{prefix}: blob lengths do not match the data")
    out, off = [], 0
    for n in lens.tolist():
        out.append(data[off : off + n])
        off += n
    return out
