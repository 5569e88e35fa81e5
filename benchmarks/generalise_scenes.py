"""The scenes of ``benchmarks/generalise.py``, each a ``Scene`` built in memory.

* ``trento_std``: the trento_sim scene of ../shared/data with its standard split.
* ``trento_table``: the same cube as a pixel sample table (N x 1 scene, patch size 1), 50
  training pixels per class drawn from the full label map, every other labelled pixel tested.
* ``syn_12x10``, ``syn_150_noisy``, ``syn_lidar_weak``: simulated over a random field layout
  (Voronoi cells, one class per cell, a one-pixel unlabelled rim, some cells left as unlabelled
  background) at three deliberately different settings: 12 classes with 10 labels each; 150
  bands under strong band-dependent noise; a LiDAR whose heights separate only two groups of
  classes.
* ``houston_sim``: simulated over the REAL label geometry of Houston 2013 (union of the
  official train and test maps, official split): own spectra and height model, see
  ``simulate``.

How a scene is simulated over a label map (``simulate``): each class gets a smooth reflectance
curve (a few Gaussian absorption/reflection features over a sloped continuum); classes come in
confusable pairs that share most of their curve, so the spectra alone cannot tell every class
apart. Each connected object (field, roof) scales and tilts its class curve by its own draw, so
unseen objects differ from the training ones. Heights: each class sits on one of
``height_levels`` levels (0-15 m) plus a per-object offset and per-pixel roughness, over gentle
terrain; a second LiDAR channel is intensity with a weak class signal. Unlabelled pixels are a
smooth soil/vegetation mixture. Sensor noise grows toward both ends of the spectrum.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from scipy import ndimage

from feddiff.config import load_config
from feddiff.data.loader import load_scene
from feddiff.data.readers import read_array
from feddiff.data.scene import Scene
from feddiff.data.splits import per_class_split

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _smooth(rng: np.random.Generator, shape: tuple[int, int], sigma: float) -> np.ndarray:
    f = ndimage.gaussian_filter(rng.random(shape), sigma)
    return (f - f.min()) / max(float(np.ptp(f)), 1e-9)


def class_spectra(rng: np.random.Generator, k: int, bands: int) -> np.ndarray:
    """(k, bands) reflectance curves in confusable pairs (2j, 2j + 1 share most features)."""
    wl = np.linspace(0.0, 1.0, bands)
    out = np.empty((k, bands))
    for j in range(0, k, 2):
        base = 0.05 + 0.25 * rng.random() * wl + 0.05 * rng.random()
        for _ in range(3):
            base = base + rng.uniform(-0.08, 0.15) * np.exp(-0.5 * ((wl - rng.random()) / rng.uniform(0.04, 0.2)) ** 2)
        for i in (j, j + 1):
            if i < k:
                c, w = rng.random(), rng.uniform(0.03, 0.1)
                out[i] = base + rng.uniform(0.015, 0.035) * rng.choice([-1, 1]) * np.exp(-0.5 * ((wl - c) / w) ** 2)
    return np.clip(out, 0.005, None)


def simulate(labels: np.ndarray, k: int, bands: int, seed: int, noise: float = 0.01, height_levels: int = 4) -> dict[str, np.ndarray]:
    """{"hsi": (H, W, bands), "lidar": (H, W, 2)} over the label map (0 = unlabelled)."""
    rng = np.random.default_rng(seed)
    h, w = labels.shape
    objects = np.zeros((h, w), np.int64)
    n_obj = 0
    for c in range(1, k + 1):
        lab, n = ndimage.label(labels == c)
        objects[lab > 0] = lab[lab > 0] + n_obj
        n_obj += n
    obj_class = np.zeros(n_obj + 1, np.int64)
    obj_class[objects[objects > 0]] = labels[objects > 0]
    spectra = class_spectra(rng, k, bands)
    wl = np.linspace(-1.0, 1.0, bands)
    bright, tilt = rng.normal(1.0, 0.15, n_obj + 1), rng.normal(0.0, 0.05, n_obj + 1)
    cls = np.clip(obj_class[objects] - 1, 0, None)
    hsi = spectra[cls] * bright[objects][..., None] + tilt[objects][..., None] * wl
    mix = _smooth(rng, (h, w), 6)[..., None]
    background = mix * spectra[0] + (1 - mix) * (0.1 + 0.2 * (wl + 1) / 2)
    inside = (objects > 0)[..., None]
    hsi = np.where(inside, hsi, background)
    band_sd = noise * (1 + 2 * wl**2)
    hsi = hsi + rng.normal(0, 1, hsi.shape) * band_sd
    level = rng.integers(0, height_levels, k + 1) * (15.0 / max(height_levels - 1, 1))
    height = 2 * _smooth(rng, (h, w), 30) + np.where(objects > 0, level[obj_class[objects]] + rng.normal(0, 0.8, n_obj + 1)[objects], 0.0)
    height = np.maximum(height + rng.normal(0, 0.3, (h, w)), 0)
    intensity = 0.3 + 0.02 * rng.normal(0, 1, k + 1)[labels] + rng.normal(0, 0.05, (h, w))
    return {"hsi": hsi.astype(np.float32), "lidar": np.stack([height, intensity], -1).astype(np.float32)}


def field_layout(rows: int, cols: int, k: int, cells: int, seed: int) -> np.ndarray:
    """A label map of Voronoi fields, classes dealt round-robin, a fifth of the cells left
    unlabelled, a one-pixel unlabelled rim around every field."""
    from scipy.spatial import cKDTree

    rng = np.random.default_rng(seed)
    pts = rng.random((cells, 2)) * (rows, cols)
    yy, xx = np.mgrid[0:rows, 0:cols]
    cell = cKDTree(pts).query(np.stack([yy.ravel(), xx.ravel()], 1))[1].reshape(rows, cols)
    cls = np.resize(np.arange(1, k + 1), cells)
    rng.shuffle(cls)
    cls[rng.random(cells) < 0.2] = 0
    lab = cls[cell]
    edge = ndimage.grey_erosion(cell, size=3) != ndimage.grey_dilation(cell, size=3)
    return np.where(edge, 0, lab)


def _scene(name: str, mods: dict[str, np.ndarray], train: np.ndarray, test: np.ndarray, k: int, **meta) -> Scene:
    return Scene(name, mods, train, test, [f"class {i}" for i in range(1, k + 1)], meta=meta).validate()


def synthetic(name: str, k: int, per_class: int, bands: int, noise: float, height_levels: int, seed: int = 11) -> Scene:
    labels = field_layout(128, 160, k, 14 * k, seed)
    mods = simulate(labels, k, bands, seed + 1, noise, height_levels)
    train, test = per_class_split(labels, seed + 2, per_class=per_class)
    return _scene(name, mods, train, test, k)


def trento_std() -> Scene:
    return load_scene(load_config(ROOT / "configs" / "trento_sim.yaml"))


def trento_table(per_class: int = 50, seed: int = 0) -> Scene:
    scene = trento_std()
    full = np.asarray(read_array(DATA / "trento" / "gt.mat", "mask_test")[0]).astype(np.int64)
    r, c = np.nonzero(full)
    mods = {m: a[r, c][:, None, :] for m, a in scene.modalities.items()}
    train, test = per_class_split(full[r, c][:, None], seed, per_class=per_class)
    return _scene("trento_table", mods, train, test, 6, sample_table=True)


def houston_sim(bands: int = 48, seed: int = 21) -> Scene:
    tr = np.asarray(read_array(DATA / "houston2013" / "TRLabel.mat", "TRLabel")[0]).astype(np.int64)
    ts = np.asarray(read_array(DATA / "houston2013" / "TSLabel.mat", "TSLabel")[0]).astype(np.int64)
    full = np.where(tr > 0, tr, ts)
    return _scene("houston_sim", simulate(full, 15, bands, seed, noise=0.012, height_levels=5), tr, ts, 15)


SCENES = {
    "trento_std": trento_std,
    "trento_table": trento_table,
    "syn_12x10": lambda: synthetic("syn_12x10", k=12, per_class=10, bands=32, noise=0.02, height_levels=4),
    "syn_150_noisy": lambda: synthetic("syn_150_noisy", k=8, per_class=30, bands=150, noise=0.04, height_levels=4),
    "syn_lidar_weak": lambda: synthetic("syn_lidar_weak", k=8, per_class=30, bands=48, noise=0.012, height_levels=2),
    "houston_sim": houston_sim,
}
