"""Atomic writes: a crash, a full disk or a signal leaves the previous file, never half a file.

Every write goes to a temp file in the same folder, is flushed and fsynced, then renamed over
the target (rename is atomic within one filesystem). An OSError becomes one FedDiffError line
naming the file; the temp file is removed whatever happened.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from pathlib import Path
from typing import Any

from feddiff.errors import FedDiffError


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temp + fsync + rename). The file is created 0600
    (``mkstemp``), so a secret is never readable by others, not even for a moment."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)
        if isinstance(exc, OSError):  # full disk, file-size limit, read-only or missing folder
            raise FedDiffError(f"{path}: cannot write ({exc.strerror or exc}); the previous file is unchanged") from None
        raise


def write_json_atomic(path: Path, doc: Any) -> None:
    atomic_write_bytes(path, json.dumps(doc, indent=2, default=str).encode("utf-8"))


def atomic_torch_save(obj: Any, path: Path) -> None:
    """Serialise first (torch reports a short write as an opaque RuntimeError), then write atomically."""
    import torch  # here, not at the top: crypto writes its key files through this module without torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def _numpy_scalar_globals() -> list:
    """Numpy scalar types that some saved optimiser states hold (e.g. a numpy float learning
    rate); allowing exactly these keeps ``weights_only=True`` (no arbitrary pickled code)."""
    import numpy as np

    core = getattr(np, "_core", None) or np.core
    return [core.multiarray.scalar, np.dtype, *(type(np.dtype(t)) for t in ("float64", "float32", "int64"))]


def load_torch(path: Path, what: str = "state") -> Any:
    """``torch.load`` of tensors and plain data only; a missing or bad file is one FedDiffError line."""
    import torch

    path = Path(path)
    try:
        with torch.serialization.safe_globals(_numpy_scalar_globals()):
            return torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise FedDiffError(f"{path}: {what} not found") from None
    except Exception as exc:  # torch raises many types for a bad file
        raise FedDiffError(f"{path}: unreadable {what} ({type(exc).__name__}); move it away to start over") from None
