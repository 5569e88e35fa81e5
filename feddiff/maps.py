"""Classification maps: a PNG with a legend for people, a paletted GeoTIFF for GIS tools."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import numpy as np

from feddiff.data.scene import GeoRef

_BASE = [
    (0, 128, 0), (34, 139, 34), (128, 128, 128), (205, 133, 63), (220, 20, 60), (112, 128, 144),
    (255, 215, 0), (0, 191, 255), (148, 0, 211), (255, 140, 0), (0, 255, 127), (255, 105, 180),
    (70, 130, 180), (189, 183, 107), (139, 69, 19), (0, 0, 139), (173, 255, 47), (128, 0, 0),
]


def palette(num_classes: int) -> list[tuple[int, int, int]]:
    """Index 0 (unlabelled / not classified) is black; classes 1..K get distinct colours."""
    rng = np.random.default_rng(0)
    cols = [(0, 0, 0)] + _BASE[:num_classes]
    while len(cols) < num_classes + 1:
        cols.append(tuple(int(v) for v in rng.integers(40, 255, 3)))
    return cols


def write_png_map(class_map: np.ndarray, class_names: list[str], path: Path) -> None:
    from PIL import Image, ImageDraw

    pal = np.array(palette(len(class_names)), dtype=np.uint8)
    rgb = pal[np.clip(class_map, 0, len(class_names))]
    img = Image.fromarray(rgb)
    scale = max(1, 300 // max(class_map.shape))
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    row_h = 16
    legend_h = row_h * len(class_names) + 8
    canvas = Image.new("RGB", (max(img.width, 220), img.height + legend_h), "white")
    canvas.paste(img, (0, 0))
    draw = ImageDraw.Draw(canvas)
    for k, name in enumerate(class_names, start=1):
        y = img.height + 4 + (k - 1) * row_h
        draw.rectangle([4, y, 16, y + 12], fill=tuple(int(v) for v in pal[k]), outline="black")
        draw.text((22, y), f"{k} {name}", fill="black")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def write_geotiff_map(class_map: np.ndarray, path: Path, georef: Optional[GeoRef], num_classes: Optional[int] = None) -> None:
    import rasterio
    from affine import Affine

    k = int(num_classes if num_classes is not None else class_map.max())
    profile = {"driver": "GTiff", "height": class_map.shape[0], "width": class_map.shape[1], "count": 1, "dtype": "uint8"}
    if georef is not None:
        profile["transform"] = Affine(*georef.transform)
        if georef.crs_wkt:
            profile["crs"] = georef.crs_wkt
    with rasterio.open(path, "w", **profile) as ds:
        ds.write(class_map.astype(np.uint8), 1)
        ds.write_colormap(1, {i: (*c, 255) for i, c in enumerate(palette(k))})
