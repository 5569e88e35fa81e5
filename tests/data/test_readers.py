"""Every supported format reads back what was written; every broken file is a one-line DataError."""

from __future__ import annotations

import h5py
import numpy as np
import pytest
import rasterio
import scipy.io
from affine import Affine

from feddiff.data.readers import read_array
from feddiff.errors import DataError

CUBE = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) * 0.5


def one_line_error(fn, *args, match: str | None = None) -> str:
    with pytest.raises(DataError) as err:
        fn(*args)
    msg = str(err.value)
    assert "\n" not in msg, msg
    if match is not None:
        assert match in msg, msg
    return msg


def write_v73(path, arrays: dict, matlab_header: bool = True) -> None:
    """Like MATLAB -v7.3: HDF5 after a 512-byte text header, arrays stored column-major."""
    with h5py.File(path, "w", userblock_size=512 if matlab_header else 0) as f:
        for k, v in arrays.items():
            f[k] = np.asarray(v).T
    if matlab_header:
        with open(path, "r+b") as fh:
            fh.write(b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Mon Jan  1 00:00:00 2024 HDF5 schema 1.00 .")


@pytest.mark.parametrize("matlab_header", [True, False])
def test_mat_v73_is_transposed_back(tmp_path, matlab_header):
    write_v73(tmp_path / "a.mat", {"cube": CUBE}, matlab_header)
    arr, geo = read_array(tmp_path / "a.mat", "cube")
    assert arr.shape == (2, 3, 4) and np.array_equal(arr, CUBE) and geo is None
    assert np.array_equal(read_array(tmp_path / "a.mat", None)[0], CUBE)  # the only variable


def test_mat_v73_several_variables_need_a_key(tmp_path):
    write_v73(tmp_path / "a.mat", {"cube": CUBE, "gt": np.ones((2, 3))})
    assert np.array_equal(read_array(tmp_path / "a.mat", "gt")[0], np.ones((2, 3)))
    msg = one_line_error(read_array, tmp_path / "a.mat", None, match="a.mat")
    assert "cube" in msg and "gt" in msg and "key" in msg
    one_line_error(read_array, tmp_path / "a.mat", "data", match="no variable 'data'")


def test_mat_v73_group_is_not_an_array(tmp_path):
    with h5py.File(tmp_path / "s.mat", "w") as f:
        f.create_group("st")["x"] = np.ones(3)
    one_line_error(read_array, tmp_path / "s.mat", "st", match="struct")


def test_mat_v5_single_and_several_variables(tmp_path):
    scipy.io.savemat(tmp_path / "one.mat", {"cube": CUBE})
    assert np.array_equal(read_array(tmp_path / "one.mat", None)[0], CUBE)
    scipy.io.savemat(tmp_path / "two.mat", {"cube": CUBE, "gt": np.eye(3, dtype=np.uint8)})
    gt, _ = read_array(tmp_path / "two.mat", "gt")
    assert gt.dtype == np.uint8 and np.array_equal(gt, np.eye(3))
    msg = one_line_error(read_array, tmp_path / "two.mat", None, match="two.mat")
    assert "cube" in msg and "gt" in msg  # the keys are listed, dunder variables are not
    assert "__header__" not in msg
    msg = one_line_error(read_array, tmp_path / "two.mat", "TRLabel", match="no variable 'TRLabel'")
    assert "two.mat" in msg


def test_mat_v5_cell_is_not_an_array(tmp_path):
    cell = np.empty((1, 2), dtype=object)
    cell[0, 0], cell[0, 1] = np.ones(2), "x"
    scipy.io.savemat(tmp_path / "c.mat", {"c": cell})
    one_line_error(read_array, tmp_path / "c.mat", "c", match="not a numeric array")


@pytest.mark.parametrize("version", ["v5", "v7.3"])
def test_truncated_mat_is_a_data_error(tmp_path, version):
    big = np.random.default_rng(0).random((60, 60, 3))
    if version == "v5":
        scipy.io.savemat(tmp_path / "full.mat", {"cube": big})
    else:
        write_v73(tmp_path / "full.mat", {"cube": big})
    data = (tmp_path / "full.mat").read_bytes()
    (tmp_path / "cut.mat").write_bytes(data[: len(data) // 2])
    one_line_error(read_array, tmp_path / "cut.mat", "cube", match="cut.mat")


def test_garbage_mat(tmp_path):
    (tmp_path / "g.mat").write_bytes(b"this is not a MATLAB file at all" * 10)
    one_line_error(read_array, tmp_path / "g.mat", None, match="g.mat")


def test_npy_and_npz(tmp_path):
    np.save(tmp_path / "a.npy", CUBE)
    assert np.array_equal(read_array(tmp_path / "a.npy")[0], CUBE)
    np.savez(tmp_path / "one.npz", hsi=CUBE)
    assert np.array_equal(read_array(tmp_path / "one.npz", None)[0], CUBE)
    np.savez_compressed(tmp_path / "two.npz", hsi=CUBE, wavelengths_nm=np.arange(4.0))
    assert np.array_equal(read_array(tmp_path / "two.npz", "wavelengths_nm")[0], np.arange(4.0))
    msg = one_line_error(read_array, tmp_path / "two.npz", None, match="two.npz")
    assert "hsi" in msg and "wavelengths_nm" in msg
    one_line_error(read_array, tmp_path / "two.npz", "lidar", match="no variable 'lidar'")


def test_corrupt_npy_npz(tmp_path):
    np.save(tmp_path / "a.npy", CUBE)
    (tmp_path / "cut.npy").write_bytes((tmp_path / "a.npy").read_bytes()[:100])
    one_line_error(read_array, tmp_path / "cut.npy", match="cut.npy")
    (tmp_path / "bad.npz").write_bytes(b"PK\x03\x04 broken zip")
    one_line_error(read_array, tmp_path / "bad.npz", match="bad.npz")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    one_line_error(read_array, tmp_path / "obj.npy", match="obj.npy")  # no unpickling of data files


def test_missing_and_unsupported(tmp_path):
    one_line_error(read_array, tmp_path / "absent.mat", match="file not found")
    (tmp_path / "x.csv").write_text("1,2\n")
    one_line_error(read_array, tmp_path / "x.csv", match="unsupported format '.csv'")


def test_geotiff_round_trip_keeps_crs_and_transform(tmp_path):
    arr = np.random.default_rng(0).random((3, 7, 9)).astype(np.float32)  # bands, rows, cols
    transform = Affine(0.5, 0.0, 664000.0, 0.0, -0.5, 5104000.0)
    with rasterio.open(tmp_path / "m.tif", "w", driver="GTiff", height=7, width=9, count=3, dtype="float32",
                       crs="EPSG:32632", transform=transform) as ds:
        ds.write(arr)
    back, geo = read_array(tmp_path / "m.tif")
    assert back.shape == (7, 9, 3) and np.array_equal(back, arr.transpose(1, 2, 0))
    assert geo is not None and np.allclose(geo.transform, tuple(transform)[:6])
    assert rasterio.crs.CRS.from_wkt(geo.crs_wkt) == rasterio.crs.CRS.from_epsg(32632)


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_plain_tiff_has_no_georef(tmp_path):
    with rasterio.open(tmp_path / "p.tiff", "w", driver="GTiff", height=4, width=5, count=1, dtype="uint8") as ds:
        ds.write(np.arange(20, dtype=np.uint8).reshape(1, 4, 5))
    back, geo = read_array(tmp_path / "p.tiff")
    assert back.shape == (4, 5, 1) and back[3, 4, 0] == 19 and geo is None


def test_corrupt_geotiff(tmp_path):
    (tmp_path / "bad.tif").write_bytes(b"II*\x00" + b"\x00" * 20)
    one_line_error(read_array, tmp_path / "bad.tif", match="bad.tif")
