"""Reading one array from .mat (v5 and v7.3/HDF5), .npy/.npz or GeoTIFF.

Every failure is a one-line ``DataError`` naming the file: a user pointing a config at their
own cube must learn what is wrong without reading a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from feddiff.data.scene import GeoRef
from feddiff.errors import DataError


def _pick(keys: list[str], key: Optional[str], path: Path) -> str:
    if key is not None:
        if key not in keys:
            raise DataError(f"{path}: no variable {key!r} (found: {', '.join(keys) or 'none'})")
        return key
    if len(keys) != 1:
        raise DataError(f"{path}: holds {len(keys)} variables ({', '.join(keys)}); set 'key' to pick one")
    return keys[0]


def _read_mat(path: Path, key: Optional[str]) -> np.ndarray:
    import h5py
    import scipy.io

    with open(path, "rb") as fh:
        head = fh.read(128)
    if head[:8] == b"\x89HDF\r\n\x1a\n" or b"MATLAB 7.3" in head:
        try:
            with h5py.File(path, "r") as f:
                keys = [k for k in f.keys() if not k.startswith("#")]
                name = _pick(keys, key, path)
                arr = np.asarray(f[name][()])
        except DataError:
            raise
        except Exception as exc:
            raise DataError(f"{path}: unreadable MATLAB v7.3 file ({exc})") from None
        return arr.T  # HDF5 stores MATLAB arrays column-major: transpose back
    try:
        data = scipy.io.loadmat(path)
    except Exception as exc:
        raise DataError(f"{path}: unreadable .mat file ({type(exc).__name__}: {exc})") from None
    keys = [k for k in data if not k.startswith("__")]
    return np.asarray(data[_pick(keys, key, path)])


def _read_npz(path: Path, key: Optional[str]) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            return np.asarray(z[_pick(list(z.files), key, path)])
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: unreadable .npz file ({type(exc).__name__}: {exc})") from None


def _read_tiff(path: Path) -> tuple[np.ndarray, Optional[GeoRef]]:
    import rasterio

    try:
        with rasterio.open(path) as ds:
            arr = ds.read()  # bands, rows, cols
            geo = None
            if ds.crs is not None or not ds.transform.is_identity:
                t = ds.transform
                geo = GeoRef(ds.crs.to_wkt() if ds.crs else None, (t.a, t.b, t.c, t.d, t.e, t.f))
    except Exception as exc:
        raise DataError(f"{path}: unreadable GeoTIFF ({type(exc).__name__}: {exc})") from None
    return np.moveaxis(arr, 0, -1), geo


def read_array(path: Path, key: Optional[str] = None) -> tuple[np.ndarray, Optional[GeoRef]]:
    """The array (rows x cols [x channels] for rasters) and its georeference if it has one."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        return _read_mat(path, key), None
    if suffix == ".npz":
        return _read_npz(path, key), None
    if suffix == ".npy":
        try:
            return np.load(path, allow_pickle=False), None
        except Exception as exc:
            raise DataError(f"{path}: unreadable .npy file ({type(exc).__name__}: {exc})") from None
    if suffix in (".tif", ".tiff"):
        return _read_tiff(path)
    raise DataError(f"{path}: unsupported format {suffix!r} (expected .mat, .npy, .npz, .tif)")
