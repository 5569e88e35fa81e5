"""Classification maps: a PNG with a legend for people, a paletted GeoTIFF for GIS tools.

Class maps use the label convention: 0 = not classified / unlabelled (black), 1..K classes.
"""

from __future__ import annotations

import colorsys
from pathlib import Path
from typing import Optional

import numpy as np

from feddiff.data.scene import GeoRef

# Distinct, print-friendly colours (Kelly's and Tableau's sets), in an order where neighbours in
# the list differ strongly so the first few classes are never confused.
_BASE = [
    (31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189), (140, 86, 75),
    (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207), (255, 215, 0), (0, 0, 128),
    (170, 255, 195), (128, 0, 0), (255, 250, 200), (0, 128, 128), (240, 50, 230), (210, 245, 60),
    (250, 190, 212), (70, 240, 240),
]


def palette(num_classes: int) -> list[tuple[int, int, int]]:
    """K + 1 RGB colours: index 0 (unlabelled / not classified) is black, classes 1..K distinct.

    Fixed, not random, so the same class has the same colour in every map of every run.
    """
    cols = [(0, 0, 0)] + _BASE[:num_classes]
    i = 0
    while len(cols) < num_classes + 1:  # beyond the fixed set: golden-ratio hues, varied value
        h = (i * 0.618033988749895) % 1.0
        r, g, b = colorsys.hsv_to_rgb(h, 0.75, 0.95 - 0.25 * ((i // 7) % 2))
        cols.append((int(255 * r), int(255 * g), int(255 * b)))
        i += 1
    return cols


def _check_map(class_map: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.asarray(class_map)
    if cm.ndim != 2:
        raise ValueError(f"class map must be 2-D, got shape {cm.shape}")
    if cm.size and (cm.min() < 0 or cm.max() > num_classes):
        raise ValueError(f"class map holds {int(cm.min())}..{int(cm.max())}, expected 0 (none) or 1..{num_classes}")
    # an integer map indexes the palette as it is: an int64 copy would be 8 bytes per pixel
    return cm if np.issubdtype(cm.dtype, np.integer) else cm.astype(np.int64)


def write_png_map(class_map: np.ndarray, class_names: list[str], path: Path) -> None:
    """An RGB PNG of the map with a colour legend below it; a small map is upscaled (nearest
    neighbour, so pixels stay crisp) to be readable."""
    from PIL import Image, ImageDraw

    k = len(class_names)
    cm = _check_map(class_map, k)
    pal = np.array(palette(k), dtype=np.uint8)
    img = Image.fromarray(pal[cm])
    scale = max(1, 400 // max(max(cm.shape), 1))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    draw_probe = ImageDraw.Draw(img)
    labels = [f"{i} {name}" for i, name in enumerate(class_names, start=1)]
    text_w = max([0] + [int(draw_probe.textlength(t)) for t in labels])
    row_h, pad, swatch = 16, 6, 12
    col_w = swatch + 8 + text_w + 2 * pad
    per_col = max(1, (max(img.width, col_w) // col_w))
    n_rows = -(-k // per_col) if k else 0
    width = max(img.width, col_w * min(per_col, max(k, 1)))
    canvas = Image.new("RGB", (width, img.height + n_rows * row_h + 2 * pad), "white")
    canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for i, text in enumerate(labels):
        x = pad + (i % per_col) * col_w
        y = img.height + pad + (i // per_col) * row_h
        draw.rectangle([x, y, x + swatch, y + swatch], fill=tuple(int(v) for v in pal[i + 1]), outline="black")
        draw.text((x + swatch + 6, y), text, fill="black")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path, format="PNG")


def write_geotiff_map(
    class_map: np.ndarray,
    path: Path,
    georef: Optional[GeoRef],
    num_classes: Optional[int] = None,
    class_names: Optional[list[str]] = None,
) -> None:
    """A uint8 GeoTIFF with the same palette as the PNG, 0 as nodata, and the input's CRS and
    transform when known, so the map overlays the source imagery in a GIS."""
    import warnings

    import rasterio
    from rasterio.errors import NotGeoreferencedWarning

    cm = np.asarray(class_map)
    if num_classes is None:
        num_classes = len(class_names) if class_names else int(cm.max(initial=0))
    if num_classes > 255:
        raise ValueError(f"a uint8 class map holds at most 255 classes, got {num_classes}")
    cm = _check_map(cm, num_classes)
    profile = map_profile(cm.shape, georef)
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NotGeoreferencedWarning)
        with rasterio.open(path, "w", **profile) as ds:
            ds.write(cm.astype(np.uint8), 1)
            ds.write_colormap(1, {i: (*c, 255) for i, c in enumerate(palette(num_classes))})
            if class_names:
                ds.update_tags(1, **{f"class_{i}": n for i, n in enumerate(class_names, start=1)})


def map_profile(shape: tuple[int, int], georef: Optional[GeoRef], tile: Optional[int] = None) -> dict:
    """The rasterio profile of a uint8 class map (0 = nodata, deflate), tiled when ``tile`` is
    given and the map is at least one tile each way, georeferenced when ``georef`` is known."""
    from affine import Affine

    h, w = shape
    profile = {"driver": "GTiff", "height": h, "width": w, "count": 1, "dtype": "uint8", "nodata": 0, "compress": "deflate"}
    if tile and h >= tile and w >= tile:
        profile.update(tiled=True, blockxsize=tile, blockysize=tile)
    if georef is not None:
        profile["transform"] = Affine(*georef.transform)
        if georef.crs_wkt:
            profile["crs"] = georef.crs_wkt
    return profile
