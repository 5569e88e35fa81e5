"""Class maps: fixed distinct palette, a PNG whose pixels and legend match it, a paletted GeoTIFF
that keeps the georeference."""

from __future__ import annotations

import numpy as np
import pytest
import rasterio
from PIL import Image

from feddiff.data.scene import GeoRef
from feddiff.maps import palette, write_geotiff_map, write_png_map

UTM32 = rasterio.crs.CRS.from_epsg(32632).to_wkt()


def class_map(h=20, w=30, k=6, seed=1) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, k + 1, (h, w))


@pytest.mark.parametrize("k", [1, 6, 15, 40])
def test_palette_is_fixed_distinct_and_black_for_unlabelled(k):
    p = palette(k)
    assert len(p) == k + 1 and p[0] == (0, 0, 0)
    assert len(set(p)) == k + 1
    assert all(len(c) == 3 and all(0 <= v <= 255 and isinstance(v, int) for v in c) for c in p)
    assert palette(k) == p and palette(k + 3)[: k + 1] == p  # a class keeps its colour


def test_first_colours_are_far_apart():
    p = np.array(palette(10)[1:], float)
    d = np.sqrt(((p[:, None] - p[None]) ** 2).sum(-1))
    assert d[np.triu_indices(10, 1)].min() > 60


def test_png_map_pixels_and_legend(tmp_path):
    names = ["low grass", "tall trees", "asphalt road", "bare soil", "red roof", "grey roof"]
    cm = class_map()
    write_png_map(cm, names, tmp_path / "sub" / "map.png")
    img = np.asarray(Image.open(tmp_path / "sub" / "map.png").convert("RGB"))
    scale = 400 // max(cm.shape)  # a tiny map is upscaled to about 400 px, nearest neighbour
    assert img.shape[0] > cm.shape[0] * scale and img.shape[1] >= cm.shape[1] * scale
    block = img[scale : 2 * scale, scale : 2 * scale].reshape(-1, 3)
    assert (block == block[0]).all()  # each map pixel is a uniform square
    pal = np.array(palette(6), np.uint8)
    mapped = img[: cm.shape[0] * scale : scale, : cm.shape[1] * scale : scale]
    assert np.array_equal(mapped, pal[cm])
    legend = img[cm.shape[0] * scale :]
    assert legend.shape[0] > 0
    for k in range(1, 7):  # every class colour appears as a swatch in the legend
        assert np.all(legend == pal[k], axis=-1).any(), k


def test_png_refuses_ids_beyond_the_classes(tmp_path):
    with pytest.raises(ValueError, match="0 \\(none\\) or 1..2"):
        write_png_map(np.array([[0, 3]]), ["a", "b"], tmp_path / "m.png")


def test_geotiff_map_keeps_crs_transform_and_palette(tmp_path):
    geo = GeoRef(UTM32, (1.0, 0.0, 664000.0, 0.0, -1.0, 5104000.0))
    cm = class_map()
    write_geotiff_map(cm, tmp_path / "m.tif", geo, 6, class_names=[f"c{k}" for k in range(1, 7)])
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.dtypes[0] == "uint8" and ds.count == 1 and ds.nodata == 0
        assert np.array_equal(ds.read(1), cm)
        assert ds.crs == rasterio.crs.CRS.from_epsg(32632)
        assert np.allclose(tuple(ds.transform)[:6], geo.transform)
        cmap = ds.colormap(1)
        assert all(cmap[i][:3] == c for i, c in enumerate(palette(6)))
        assert ds.tags(1)["class_3"] == "c3"


@pytest.mark.filterwarnings("ignore::rasterio.errors.NotGeoreferencedWarning")
def test_geotiff_map_without_georef(tmp_path):
    cm = class_map(k=3)
    write_geotiff_map(cm, tmp_path / "m.tif", None)
    with rasterio.open(tmp_path / "m.tif") as ds:
        assert ds.crs is None and np.array_equal(ds.read(1), cm)
    with pytest.raises(ValueError):
        write_geotiff_map(np.array([[300]]), tmp_path / "big.tif", None)
