"""Checked reads of a received message's named arrays: the one place that says what a bad one is.

Every typed message (``feddiff.protocol.messages``) reads its arrays through these helpers, so a
missing name, a wrong dtype kind or a wrong shape becomes ``EnvelopeError('bad_payload')`` with
one line naming the array, before any role touches the data.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from feddiff.protocol.arrays import arrays_to_blobs, blobs_to_arrays
from feddiff.protocol.message import EnvelopeError

INT = "iu"
FLOAT = "f"
CODES = "iuf"  # int8/int16 codes, or float32 features when the comm module is off


def bad(detail: str) -> EnvelopeError:
    return EnvelopeError("bad_payload", detail)


def array(arrays: dict[str, np.ndarray], name: str, kinds: str, ndim: int, rows: Optional[int] = None) -> np.ndarray:
    """``arrays[name]`` if it has a dtype kind in ``kinds``, ``ndim`` dimensions and ``rows`` rows."""
    a = arrays.get(name)
    if a is None:
        raise bad(f"array {name!r} missing")
    if a.dtype.kind not in kinds or a.ndim != ndim:
        raise bad(f"array {name!r}: {a.dtype}[{a.ndim}-d], expected kind {kinds!r} with {ndim} dimension(s)")
    if rows is not None and a.shape[0] != rows:
        raise bad(f"array {name!r}: {a.shape[0]} rows, expected {rows}")
    return a


def optional(arrays: dict[str, np.ndarray], name: str, kinds: str, ndim: int, rows: Optional[int] = None) -> Optional[np.ndarray]:
    return array(arrays, name, kinds, ndim, rows) if name in arrays else None


def with_prefix(arrays: dict[str, np.ndarray], prefix: str) -> dict[str, np.ndarray]:
    """The arrays named ``<prefix><rest>``, keyed by ``rest``."""
    return {k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}


def blobs(arrays: dict[str, np.ndarray], prefix: str) -> list[bytes]:
    return arrays_to_blobs(arrays, prefix)


def blob_arrays(prefix: str, items: list[bytes]) -> dict[str, np.ndarray]:
    return blobs_to_arrays(prefix, items)


def number(meta: dict, name: str, default: Any = None) -> Any:
    """A numeric meta field (bool excluded), or ``default`` when absent."""
    v = meta.get(name, default)
    if v is not default and (isinstance(v, bool) or not isinstance(v, (int, float))):
        raise bad(f"meta {name!r}: expected a number, got {type(v).__name__}")
    return v
