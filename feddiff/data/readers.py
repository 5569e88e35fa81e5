"""Reading one array from .mat (v5 and v7.3/HDF5), .npy/.npz or GeoTIFF.

Every failure is a one-line ``DataError`` naming the file: a user pointing a config at their
own cube must learn what is wrong without reading a traceback. Library exceptions are folded
onto that line because h5py and GDAL messages often span several.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from feddiff.data.scene import GeoRef
from feddiff.errors import DataError

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _pick(keys: list[str], key: Optional[str], path: Path) -> str:
    """The variable to read: the named one, or the only one, so a config may omit ``key``."""
    if key is not None:
        if key not in keys:
            raise DataError(f"{path}: no variable {key!r} (found: {', '.join(keys) or 'none'})")
        return key
    if len(keys) != 1:
        listed = ", ".join(keys) or "none"
        raise DataError(f"{path}: holds {len(keys)} variables ({listed}); set 'key' to pick one")
    return keys[0]


def _is_hdf5(path: Path) -> bool:
    # MATLAB v7.3 writes a 512-byte text header before the HDF5 superblock; h5py writes none.
    with open(path, "rb") as fh:
        head = fh.read(520)
    return head[:8] == _HDF5_MAGIC or head[512:520] == _HDF5_MAGIC or b"MATLAB 7.3" in head[:128]


def _read_mat_v73(path: Path, key: Optional[str]) -> np.ndarray:
    import h5py

    try:
        with h5py.File(path, "r") as f:
            keys = [k for k in f.keys() if not k.startswith("#")]  # '#refs#', '#subsystem#'
            name = _pick(keys, key, path)
            node = f[name]
            if not isinstance(node, h5py.Dataset):
                raise DataError(f"{path}: variable {name!r} is a MATLAB struct or cell, not a numeric array")
            arr = np.asarray(node[()])
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: unreadable MATLAB v7.3 file ({_one_line(exc)})") from None
    # MATLAB is column-major and HDF5 row-major: the stored axes are reversed.
    return np.ascontiguousarray(arr.T)


def _read_mat_v5(path: Path, key: Optional[str]) -> np.ndarray:
    import scipy.io

    try:
        keys = [name for name, _, _ in scipy.io.whosmat(path)]
        name = _pick(keys, key, path)
        # Loading only the wanted variable keeps a multi-cube file from filling memory.
        data = scipy.io.loadmat(path, variable_names=[name])
        if name not in data:
            raise DataError(f"{path}: variable {name!r} could not be read")
        arr = np.asarray(data[name])
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: unreadable .mat file ({_one_line(exc)})") from None
    if arr.dtype == object or arr.dtype.names is not None:
        raise DataError(f"{path}: variable {name!r} is a MATLAB struct or cell, not a numeric array")
    return arr


def _read_npz(path: Path, key: Optional[str]) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as z:
            return np.asarray(z[_pick(list(z.files), key, path)])
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"{path}: unreadable .npz file ({_one_line(exc)})") from None


def _read_npy(path: Path) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise DataError(f"{path}: unreadable .npy file ({_one_line(exc)})") from None


def _read_tiff(path: Path) -> tuple[np.ndarray, Optional[GeoRef]]:
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", NotGeoreferencedWarning)
            with rasterio.open(path) as ds:
                arr = ds.read()  # bands, rows, cols
                geo = None
                if ds.crs is not None or not ds.transform.is_identity:
                    t = ds.transform
                    geo = GeoRef(ds.crs.to_wkt() if ds.crs else None, (t.a, t.b, t.c, t.d, t.e, t.f))
    except Exception as exc:
        raise DataError(f"{path}: unreadable GeoTIFF ({_one_line(exc)})") from None
    return np.ascontiguousarray(np.moveaxis(arr, 0, -1)), geo


def read_array(path: Path, key: Optional[str] = None) -> tuple[np.ndarray, Optional[GeoRef]]:
    """The array as stored (rows x cols [x channels] for rasters) and its georeference, if any.

    Only GeoTIFFs carry a georeference; ``key`` picks the variable of a .mat/.npz and is
    ignored for single-array formats.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix == ".mat":
        try:
            hdf5 = _is_hdf5(path)
        except OSError as exc:
            raise DataError(f"{path}: unreadable ({_one_line(exc)})") from None
        return (_read_mat_v73(path, key) if hdf5 else _read_mat_v5(path, key)), None
    if suffix == ".npz":
        return _read_npz(path, key), None
    if suffix == ".npy":
        return _read_npy(path), None
    if suffix in (".tif", ".tiff"):
        return _read_tiff(path)
    raise DataError(f"{path}: unsupported format {suffix or '(no suffix)'!r} (expected .mat, .npy, .npz, .tif, .tiff)")


class ArrayWindows:
    """Row ranges of an in-memory or memory-mapped rows x cols [x channels] array, so a scene
    is read strip by strip whatever its format (a .npy map is paged in by the OS, not loaded)."""

    def __init__(self, arr: np.ndarray, path: str = "<array>", georef: Optional[GeoRef] = None):
        if arr.ndim == 2:
            arr = arr[..., None]
        if arr.ndim != 3:
            raise DataError(f"{path}: expected rows x cols [x channels], got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating) or arr.dtype == bool):
            raise DataError(f"{path}: non-numeric dtype {arr.dtype}")
        self.arr, self.path, self.georef = arr, str(path), georef
        self.shape: tuple[int, int, int] = tuple(int(v) for v in arr.shape)  # type: ignore[assignment]
        self.block_row_bytes = 0  # nothing is decoded per block

    def read(self, r0: int, r1: int) -> np.ndarray:
        """Rows ``r0:r1`` (all columns, all channels), an in-memory copy."""
        return np.array(self.arr[r0:r1])

    def close(self) -> None:
        self.arr = None


class TiffWindows:
    """Row ranges of a GeoTIFF read through rasterio windows: only the strip asked for (and
    GDAL's bounded block cache) is ever in memory."""

    def __init__(self, path: Path):
        import warnings

        import rasterio
        from rasterio.errors import NotGeoreferencedWarning

        self.path = str(path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", NotGeoreferencedWarning)
                self.ds = rasterio.open(path)
        except Exception as exc:
            raise DataError(f"{path}: unreadable GeoTIFF ({_one_line(exc)})") from None
        ds = self.ds
        self.shape = (int(ds.height), int(ds.width), int(ds.count))
        # One row of decoded blocks across the raster: GDAL's cache must hold it, or every strip
        # thinner than a block decodes the same compressed tiles again.
        block_h = int(ds.block_shapes[0][0]) if ds.block_shapes else 1
        self.block_row_bytes = block_h * ds.width * ds.count * np.dtype(ds.dtypes[0]).itemsize
        self.georef = None
        if ds.crs is not None or not ds.transform.is_identity:
            t = ds.transform
            self.georef = GeoRef(ds.crs.to_wkt() if ds.crs else None, (t.a, t.b, t.c, t.d, t.e, t.f))

    def read(self, r0: int, r1: int) -> np.ndarray:
        from rasterio.windows import Window

        try:
            arr = self.ds.read(window=Window(0, r0, self.shape[1], r1 - r0))
        except Exception as exc:
            raise DataError(f"{self.path}: rows {r0}..{r1 - 1} unreadable ({_one_line(exc)})") from None
        return np.ascontiguousarray(np.moveaxis(arr, 0, -1))

    def close(self) -> None:
        self.ds.close()


def open_windows(path: Path, key: Optional[str] = None):
    """A strip reader (``shape``, ``georef``, ``read(r0, r1)``, ``close()``) for one raster:
    GeoTIFF by windows, .npy by memory map; .mat/.npz have no partial read, so they are loaded
    whole (convert a scene larger than memory to GeoTIFF or .npy)."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    suffix = path.suffix.lower()
    if suffix in (".tif", ".tiff"):
        return TiffWindows(path)
    if suffix == ".npy":
        try:
            arr = np.load(path, mmap_mode="r", allow_pickle=False)
        except Exception as exc:
            raise DataError(f"{path}: unreadable .npy file ({_one_line(exc)})") from None
        return ArrayWindows(arr, str(path))
    arr, geo = read_array(path, key)
    return ArrayWindows(arr, str(path), geo)
