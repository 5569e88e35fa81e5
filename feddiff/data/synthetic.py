"""A seeded synthetic HSI + LiDAR scene: the embedded default for the demo and fast tests.

It exists to make the point of multi-modal fusion testable in seconds, so it is built so that
EACH modality alone confuses some classes and the two together do not:

* low grass and tall trees share a spectrum (vegetation) but not a height;
* asphalt road and grey roof share a spectrum (asphalt) but not a height;
* low grass, asphalt road and bare soil are all flat; red and grey roofs are equally high;
  so those differ only in their spectra.

Objects (rectangles, ellipses, thin road strips) sit on an unlabelled background of mixed soil
and vegetation over gentle terrain, like the unlabelled bulk of a real benchmark scene. Each
object has its own brightness, spectral tilt and height offset; every pixel gets sensor noise;
the one-pixel rim of an object is a mixed pixel and stays unlabelled. Objects are laid out one
per tile with the classes dealt round-robin, so every class appears in every scene size.

With ``sar`` a third modality joins, built the same way so that it carries what the other two
lack: a seventh class, ploughed soil, has bare soil's spectrum and height but a rough surface,
which only SAR backscatter sees. In turn SAR alone cannot tell grass from trees (one vegetation
return) nor red from grey roofs (one double bounce), so every pair of modalities confuses one
designed pair of classes and only all three separate every class. The default (no SAR) scene is
drawn exactly as before: the SAR draws come after every other draw.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from feddiff.config import SyntheticSpec
from feddiff.data.scene import Scene
from feddiff.data.splits import per_class_split


@dataclass(frozen=True)
class _Class:
    name: str
    spectrum: str
    height: float  # mean height above ground, m
    height_sd: float  # object-to-object spread of the height, m
    roughness: float  # pixel-to-pixel spread of the height, m
    shape: str  # "blob" (rectangle or ellipse), "rect" or "strip"
    backscatter: float = -11.0  # SAR VV, dB (only drawn with ``sar``)
    depolarisation: float = 8.0  # VV - VH, dB: lower for volume scatterers




CLASSES = [
    _Class("low grass", "vegetation", 0.3, 0.05, 0.08, "blob", -11.0, 5.0),
    _Class("tall trees", "vegetation", 12.0, 1.5, 1.2, "blob", -11.0, 5.0),
    _Class("asphalt road", "asphalt", 0.0, 0.03, 0.05, "strip", -19.0),
    _Class("bare soil", "soil", 0.2, 0.05, 0.1, "blob", -15.0),
    _Class("red roof", "red_roof", 8.0, 0.8, 0.15, "rect", -5.0),
    _Class("grey roof", "asphalt", 8.0, 0.8, 0.15, "rect", -5.0),
]
CLASS_NAMES = [c.name for c in CLASSES]
PLOUGHED = _Class("ploughed soil", "soil", 0.2, 0.05, 0.1, "blob", -6.0)  # only with ``sar``
SAR_CLASSES = CLASSES + [PLOUGHED]

_HSI_NOISE = 0.012
_INTENSITY_NOISE = 0.06
_MIN_TILE = 5
_SAR_LOOKS = 4  # speckle: intensity times Gamma(L, 1/L), about 2.3 dB spread per pixel
_SAR_BACKGROUND = -13.0


def _spectra(wl: np.ndarray) -> dict[str, np.ndarray]:
    """Smooth reflectance curves with the features that tell these materials apart (red edge,
    linear asphalt, rising soil, red-roof step)."""

    def bump(c: float, w: float) -> np.ndarray:
        return np.exp(-0.5 * ((wl - c) / w) ** 2)

    ramp = (wl - wl.min()) / max(float(wl.max() - wl.min()), 1e-9)
    red_edge = 1 / (1 + np.exp(-(wl - 715) / 12))
    return {
        "vegetation": 0.04 + 0.06 * bump(550, 30) + 0.45 * red_edge,
        "asphalt": 0.07 + 0.05 * ramp,
        "soil": 0.10 + 0.25 * ramp + 0.03 * bump(900, 60),
        "red_roof": 0.08 + 0.30 / (1 + np.exp(-(wl - 600) / 15)) - 0.08 * bump(900, 80),
    }


def _tile_size(rows: int, cols: int, n_classes: int) -> int:
    """About 16 px per object in the default scene, smaller for tiny scenes so that every class
    still gets at least one object."""
    target = int(np.clip(np.sqrt(rows * cols / max(12, rows * cols // 256)), 8, 24))
    t = target
    while t > _MIN_TILE and (rows // t) * (cols // t) < n_classes:
        t -= 1
    return t


def _smooth_field(rng: np.random.Generator, rows: int, cols: int, cell: int) -> np.ndarray:
    """Low-frequency noise in [0, 1]: a coarse random grid bilinearly upsampled (O(rows x cols))."""
    from scipy.ndimage import zoom

    gr, gc = rows // cell + 2, cols // cell + 2
    coarse = rng.random((gr, gc))
    fine = zoom(coarse, (rows / (gr - 1), cols / (gc - 1)), order=1, mode="nearest")
    return fine[:rows, :cols]


def _object_mask(rng: np.random.Generator, t: int, shape: str) -> np.ndarray:
    """A (t, t) boolean footprint of one object inside its tile, with a margin to the tile edge
    so neighbouring objects never touch."""
    yy, xx = np.mgrid[0:t, 0:t] + 0.5
    lo, hi = 0.34 * t, 0.43 * t
    if shape == "strip":
        half_long, half_short = 0.45 * t, max(2.0, rng.uniform(0.2, 0.26) * t)
        hy, hx = (half_long, half_short) if rng.random() < 0.5 else (half_short, half_long)
    else:
        hy, hx = rng.uniform(lo, hi), rng.uniform(lo, hi)
    cy = t / 2 + rng.uniform(-1, 1) * max(0.0, t / 2 - hy - 1)
    cx = t / 2 + rng.uniform(-1, 1) * max(0.0, t / 2 - hx - 1)
    if shape == "blob" and rng.random() < 0.5:
        return ((yy - cy) / hy) ** 2 + ((xx - cx) / hx) ** 2 <= 1.0
    return (np.abs(yy - cy) <= hy) & (np.abs(xx - cx) <= hx)


def _erode(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 4-neighbours all lie in the object: the pure (labellable) interior."""
    m = np.pad(mask, 1)
    return m[1:-1, 1:-1] & m[:-2, 1:-1] & m[2:, 1:-1] & m[1:-1, :-2] & m[1:-1, 2:]


def _layout(rng: np.random.Generator, rows: int, cols: int, classes: list[_Class]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(object id map with -1 for background, interior mask, class of each object)."""
    k = len(classes)
    t = _tile_size(rows, cols, k)
    n_r, n_c = rows // t, cols // t
    n_obj = n_r * n_c
    obj_class = np.resize(np.arange(k), n_obj)  # round-robin: classes as balanced as tiles allow
    rng.shuffle(obj_class)
    oid = np.full((rows, cols), -1, dtype=np.int64)
    interior = np.zeros((rows, cols), dtype=bool)
    off_r, off_c = (rows - n_r * t) // 2, (cols - n_c * t) // 2
    for i in range(n_obj):
        r0, c0 = off_r + (i // n_c) * t, off_c + (i % n_c) * t
        m = _object_mask(rng, t, classes[obj_class[i]].shape)
        oid[r0 : r0 + t, c0 : c0 + t][m] = i
        interior[r0 : r0 + t, c0 : c0 + t] |= _erode(m)
    return oid, interior, obj_class


def make_synthetic_scene(spec: SyntheticSpec) -> Scene:
    """The seeded scene for ``spec``: modalities ``hsi`` (rows x cols x bands reflectance) and
    ``lidar`` (height m, intensity), and ``sar`` (VV, VH dB) when ``spec.sar``;
    ``spec.train_per_class`` training pixels per class and every other labelled pixel for testing."""
    rng = np.random.default_rng(spec.seed)
    h, w, bands = spec.rows, spec.cols, spec.bands
    classes = SAR_CLASSES if spec.sar else CLASSES
    oid, interior, obj_class = _layout(rng, h, w, classes)
    n_obj = obj_class.shape[0]
    inside = oid >= 0
    wl = np.linspace(400.0, 1000.0, bands)
    spectra = _spectra(wl)

    # Background: a spatially smooth soil/vegetation mixture over gentle terrain, unlabelled.
    frac = _smooth_field(rng, h, w, 12)[..., None]
    ground = 1.5 * _smooth_field(rng, h, w, 24)
    bg_hsi = 0.9 * (frac * spectra["vegetation"] + (1 - frac) * spectra["soil"])
    bg_height = ground + rng.normal(0, 0.2, (h, w))

    # Objects: per-object brightness, tilt and height, drawn once per object.
    spec_table = np.stack([spectra[c.spectrum] for c in classes])  # K, B
    bright = rng.normal(1.0, 0.08, n_obj)
    tilt = rng.normal(0.0, 0.03, n_obj)
    height_mean = np.array([c.height for c in classes])[obj_class]
    height_obj = np.maximum(height_mean + rng.normal(0, 1, n_obj) * np.array([c.height_sd for c in classes])[obj_class], 0)
    rough = np.array([c.roughness for c in classes])[obj_class]

    o = np.where(inside, oid, 0)
    obj_hsi = spec_table[obj_class[o]] * bright[o][..., None] + tilt[o][..., None] * ((wl - 700) / 600)[None, None, :]
    obj_height = ground + height_obj[o] + rng.normal(0, 1, (h, w)) * rough[o]

    # Rim pixels are half object, half background: realistic mixing, never labelled.
    alpha = np.where(interior, 1.0, np.where(inside, 0.5, 0.0))
    hsi = alpha[..., None] * obj_hsi + (1 - alpha[..., None]) * bg_hsi
    hsi += rng.normal(0, _HSI_NOISE, hsi.shape)
    height = np.maximum(alpha * obj_height + (1 - alpha) * bg_height, 0)
    intensity = 0.3 + rng.normal(0, 0.02, n_obj)[o] * inside + rng.normal(0, _INTENSITY_NOISE, (h, w))
    lidar = np.stack([height, intensity], axis=-1)
    modalities = {"hsi": hsi.astype(np.float32), "lidar": lidar.astype(np.float32)}
    if spec.sar:
        modalities["sar"] = _sar(rng, classes, obj_class, o, alpha).astype(np.float32)

    labels = np.where(interior, obj_class[o] + 1, 0).astype(np.int64)
    train, test = per_class_split(labels, spec.seed, per_class=spec.train_per_class)
    return Scene(
        name=f"synthetic-{spec.seed}",
        modalities=modalities,
        train_labels=train,
        test_labels=test,
        class_names=[c.name for c in classes],
        meta={"wavelengths_nm": wl.tolist(), "synthetic": True},
    ).validate()


def _sar(rng: np.random.Generator, classes: list[_Class], obj_class: np.ndarray, o: np.ndarray, alpha: np.ndarray) -> np.ndarray:
    """(rows, cols, 2) VV and VH backscatter in dB: per-object level (1 dB spread), rim pixels
    mixed in linear power like the other modalities, then multiplicative speckle."""
    n_obj = obj_class.shape[0]
    vv_obj = np.array([c.backscatter for c in classes])[obj_class] + rng.normal(0, 1.0, n_obj)
    vh_obj = vv_obj - np.array([c.depolarisation for c in classes])[obj_class]
    out = []
    for obj_db, bg_db in ((vv_obj, _SAR_BACKGROUND), (vh_obj, _SAR_BACKGROUND - 7.0)):
        power = alpha * 10 ** (obj_db[o] / 10) + (1 - alpha) * 10 ** (bg_db / 10)
        speckle = rng.gamma(_SAR_LOOKS, 1 / _SAR_LOOKS, power.shape)
        out.append(10 * np.log10(power * speckle))
    return np.stack(out, axis=-1)
