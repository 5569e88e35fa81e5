"""Strip-by-strip inference: the same map as the in-memory path, bounded outputs, clear errors."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import yaml

from feddiff.errors import FedDiffError


def _stats(bands: int):
    from feddiff.data.normalise import BandStats

    return BandStats(np.full(bands, 0.5), np.full(bands, 2.0))


@pytest.mark.parametrize("h,w,patch", [(17, 9, 8), (17, 9, 7), (5, 6, 1), (3, 12, 8), (2, 2, 3), (30, 4, 5)])
def test_strips_with_halo_equal_the_padded_scene(h, w, patch):
    from export.windowed import padded_strip
    from feddiff.data.patches import pad_raster
    from feddiff.data.readers import ArrayWindows

    raster = np.random.default_rng(h * w + patch).normal(size=(h, w, 3)).astype(np.float32)
    stats = _stats(3)
    whole = pad_raster(stats.apply(raster), patch)
    reader = ArrayWindows(raster)
    for step in (1, 2, 4, h):
        for r0 in range(0, h, step):
            r1 = min(h, r0 + step)
            strip = padded_strip(reader, stats, r0, r1, (h, w), patch)
            assert np.array_equal(strip, whole[r0 : r1 + patch - 1]), (step, r0)


def _write_tif(path: Path, arr: np.ndarray) -> None:
    import rasterio
    from rasterio.transform import from_origin

    arr = arr if arr.ndim == 3 else arr[..., None]
    with rasterio.open(path, "w", driver="GTiff", height=arr.shape[0], width=arr.shape[1], count=arr.shape[2], dtype=arr.dtype.name,
                       crs="EPSG:32632", transform=from_origin(660000, 5100000, 1, 1)) as ds:
        ds.write(np.moveaxis(arr, -1, 0))


def _file_scene(folder: Path, tiny_config: Path, lidar_rows: int | None = None) -> Path:
    """The tiny synthetic scene as files: HSI and labels as GeoTIFF, LiDAR as .npy (memory map)."""
    from feddiff.config import load_config
    from feddiff.data.loader import load_scene

    scene = load_scene(load_config(tiny_config))
    folder.mkdir(exist_ok=True)
    _write_tif(folder / "hsi.tif", scene.modalities["hsi"])
    lidar = scene.modalities["lidar"]
    np.save(folder / "lidar.npy", lidar[:lidar_rows] if lidar_rows else lidar)
    _write_tif(folder / "train.tif", scene.train_labels.astype(np.uint8))
    _write_tif(folder / "test.tif", scene.test_labels.astype(np.uint8))
    doc = yaml.safe_load(tiny_config.read_text())
    doc["scene"] = {"modalities": {"hsi": {"path": "hsi.tif"}, "lidar": {"path": "lidar.npy"}},
                    "train_labels": {"path": "train.tif"}, "test_labels": {"path": "test.tif"}, "class_names": scene.class_names}
    (folder / "scene.yaml").write_text(yaml.safe_dump(doc))
    return folder / "scene.yaml"


def test_map_written_in_strips_equals_the_in_memory_map(exported, tiny):
    import rasterio

    from export.infer import classify_scene, open_session, run_inference, session_meta
    from feddiff.config import load_config
    from feddiff.data.loader import load_scene
    from feddiff.metrics import classification_metrics

    config = _file_scene(tiny.folder / "files", tiny.config)
    scene = load_scene(load_config(tiny.config))
    sess = open_session(exported[0], "cpu")[0]
    meta = session_meta(sess)
    whole = classify_scene(sess, meta, scene.modalities, batch=97, progress=False, workers=1)
    assert len(np.unique(whole)) > 1  # a constant map would match trivially

    out = tiny.folder / "strips"
    # 7-row strips (280 px) cut 32 rows unevenly; batches of 97 straddle nothing across strips
    res = run_inference(exported[0], str(config), out, batch=97, progress=False, workers=2, threads=1, strip_pixels=7 * 40)
    with rasterio.open(res.class_map) as ds:
        written = ds.read(1)
        assert ds.crs is not None and ds.transform.c == 660000 and ds.colormap(1)
    assert np.array_equal(written, whole + 1)
    r, c = np.nonzero(scene.test_labels)
    expect = classification_metrics(scene.test_labels[r, c] - 1, whole[r, c], len(meta.class_names))
    doc = json.loads((out / "metrics.json").read_text())
    assert doc["confusion"] == expect["confusion"] and doc["oa"] == pytest.approx(expect["oa"])
    assert (doc["rows"], doc["cols"], doc["pixels"]) == (32, 40, 1280)
    assert res.png.is_file()


def test_wrong_shaped_raster_is_one_line_error(exported, tiny):
    from export.infer import run_inference

    config = _file_scene(tiny.folder / "short", tiny.config, lidar_rows=31)
    with pytest.raises(FedDiffError) as err:
        run_inference(exported[0], str(config), tiny.folder / "short_out", progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "lidar" in msg and "31 x 40" in msg and "32 x 40" in msg


def test_large_map_is_tiled_compressed_and_exact(tmp_path):
    import rasterio

    from export.map_output import MapWriter, png_preview

    ids = np.random.default_rng(0).integers(0, 5, size=(600, 700))
    writer = MapWriter(tmp_path / "m.tif", ids.shape, None, [f"c{i}" for i in range(5)])
    for r0 in range(0, 600, 256):  # tile-row strips, the last one short
        writer.write(r0, ids[r0 : r0 + 256])
    writer.close()
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.profile["tiled"] and ds.profile["blockysize"] == 256 and ds.compression.value.lower() == "deflate"
        assert np.array_equal(ds.read(1), ids + 1)
    assert png_preview(tmp_path / "m.tif", [f"c{i}" for i in range(5)], tmp_path / "m.png", max_side=256) == 3


def test_npy_is_memory_mapped_and_tiff_read_by_window(tmp_path):
    from feddiff.data.readers import open_windows

    arr = np.arange(6 * 5 * 2, dtype=np.float32).reshape(6, 5, 2)
    np.save(tmp_path / "a.npy", arr)
    npy = open_windows(tmp_path / "a.npy")
    assert isinstance(npy.arr, np.memmap) and npy.shape == (6, 5, 2)
    assert np.array_equal(npy.read(2, 4), arr[2:4])
    _write_tif(tmp_path / "a.tif", arr)
    tif = open_windows(tmp_path / "a.tif")
    assert tif.shape == (6, 5, 2) and tif.georef is not None and tif.block_row_bytes > 0
    assert np.array_equal(tif.read(3, 6), arr[3:6])
    tif.close()


def test_negative_strip_size_is_one_line_error(exported, tiny):
    from export.infer import run_inference

    with pytest.raises(FedDiffError, match="--strip-pixels must be >= 0") as err:
        run_inference(exported[0], str(tiny.config), tiny.folder / "neg", progress=False, strip_pixels=-1)
    assert "\n" not in str(err.value)
