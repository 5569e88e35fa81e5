"""A seeded synthetic HSI + LiDAR scene: the embedded default for the demo and fast tests.

Built so each modality alone confuses some classes and the two together do not:
grass and trees share a spectrum but not a height; road, soil and grass are all flat; road and
the grey roof share a spectrum but not a height. Fields are Voronoi cells with per-object
brightness and height variability plus per-pixel sensor noise; cell borders stay unlabelled.
"""

from __future__ import annotations

import numpy as np

from feddiff.config import SyntheticSpec
from feddiff.data.scene import Scene
from feddiff.data.splits import per_class_split

CLASS_NAMES = ["grass", "trees", "asphalt road", "bare soil", "red roof", "grey roof"]
# class -> (spectrum name, mean height m, height roughness m, lidar intensity)
CLASSES = [
    ("vegetation", 0.2, 0.1, 0.30),
    ("vegetation", 12.0, 2.0, 0.25),
    ("asphalt", 0.0, 0.05, 0.30),
    ("soil", 0.1, 0.15, 0.32),
    ("red_roof", 8.0, 0.2, 0.30),
    ("asphalt", 8.0, 0.2, 0.28),
]


def _spectra(wl: np.ndarray) -> dict[str, np.ndarray]:
    def bump(c: float, w: float) -> np.ndarray:
        return np.exp(-0.5 * ((wl - c) / w) ** 2)

    edge = 1 / (1 + np.exp(-(wl - 715) / 12))
    return {
        "vegetation": 0.04 + 0.06 * bump(550, 30) + 0.45 * edge,
        "asphalt": 0.07 + 0.05 * (wl - wl.min()) / (wl.max() - wl.min()),
        "soil": 0.10 + 0.25 * (wl - wl.min()) / (wl.max() - wl.min()) + 0.03 * bump(900, 60),
        "red_roof": 0.08 + 0.30 / (1 + np.exp(-(wl - 600) / 15)) - 0.08 * bump(900, 80),
    }


def make_synthetic_scene(spec: SyntheticSpec) -> Scene:
    rng = np.random.default_rng(spec.seed)
    h, w, bands = spec.rows, spec.cols, spec.bands
    n_cells = max(12, (h * w) // 300)
    seeds = np.stack([rng.uniform(0, h, n_cells), rng.uniform(0, w, n_cells)], axis=1)
    cell_class = np.concatenate([np.arange(len(CLASSES)), rng.integers(0, len(CLASSES), n_cells - len(CLASSES))])
    rng.shuffle(cell_class)
    rr, cc = np.mgrid[0:h, 0:w]
    d = (rr[..., None] - seeds[:, 0]) ** 2 + (cc[..., None] - seeds[:, 1]) ** 2
    order = np.argsort(d, axis=2)
    cell = order[..., 0]
    border = np.sqrt(d[rr, cc, order[..., 1]]) - np.sqrt(d[rr, cc, cell]) < 1.5
    cls = cell_class[cell]

    wl = np.linspace(400, 1000, bands)
    spectra = _spectra(wl)
    bright = rng.normal(1.0, 0.08, n_cells)
    tilt = rng.normal(0.0, 0.03, n_cells)
    hsi = np.empty((h, w, bands), dtype=np.float32)
    height = np.empty((h, w), dtype=np.float32)
    intensity = np.empty((h, w), dtype=np.float32)
    h_off = rng.normal(0, 0.8, n_cells)
    for k, (sname, hmean, rough, inten) in enumerate(CLASSES):
        sel = cls == k
        cells = cell[sel]
        base = spectra[sname][None, :] * bright[cells][:, None] + tilt[cells][:, None] * (wl - 700)[None, :] / 600
        hsi[sel] = base + rng.normal(0, 0.012, (cells.shape[0], bands))
        off = h_off[cells] if hmean > 1 else 0.0
        height[sel] = np.maximum(hmean + off + rng.normal(0, rough, cells.shape[0]), 0)
        intensity[sel] = inten + rng.normal(0, 0.06, cells.shape[0])
    lidar = np.stack([height, intensity], axis=-1).astype(np.float32)

    labels = np.where(border, 0, cls + 1).astype(np.int64)
    train, test = per_class_split(labels, spec.seed, per_class=spec.train_per_class)
    return Scene(
        name=f"synthetic-{spec.seed}",
        modalities={"hsi": hsi, "lidar": lidar},
        train_labels=train,
        test_labels=test,
        class_names=list(CLASS_NAMES),
        meta={"wavelengths_nm": wl.tolist()},
    ).validate()
