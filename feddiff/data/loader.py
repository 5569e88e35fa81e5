"""From a validated config to a Scene (or, for the label holder, to label maps only).

``modalities`` restricts which files are even opened: a station of one organisation never
reads the other's raster, and a station that is not the label holder never reads labels.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from feddiff.config import ArraySource, Config
from feddiff.data.readers import read_array
from feddiff.data.scene import GeoRef, Scene
from feddiff.data.splits import apply_split, check_disjoint
from feddiff.data.synthetic import make_synthetic_scene
from feddiff.errors import ConfigError, DataError


def _raster(cfg: Config, name: str, src: ArraySource) -> tuple[np.ndarray, Optional[GeoRef]]:
    path = cfg.resolve(src.path)
    arr, geo = read_array(path, src.key)
    if arr.ndim == 2:
        arr = arr[..., None]  # a single-band raster (a DSM) still needs a channel axis
    if arr.ndim != 3:
        raise DataError(f"{path}: modality {name} must be rows x cols [x channels], got shape {arr.shape}")
    if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
        raise DataError(f"{path}: modality {name} has non-numeric dtype {arr.dtype}")
    return arr.astype(np.float32, copy=False), geo


def _as_labels(arr: np.ndarray, where: str) -> np.ndarray:
    """int64 labels; float maps (Augsburg's TestImage) are accepted when they hold integers."""
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DataError(f"{where}: holds non-integer labels")
    elif not (np.issubdtype(arr.dtype, np.integer) or arr.dtype == bool):
        raise DataError(f"{where}: labels have non-numeric dtype {arr.dtype}")
    out = arr.astype(np.int64)
    if out.size and out.min() < 0:
        raise DataError(f"{where}: holds negative label {int(out.min())} (expected 0 = unlabelled or 1..K)")
    return out


def _label_map(cfg: Config, which: str, src: ArraySource) -> np.ndarray:
    path = cfg.resolve(src.path)
    arr, _ = read_array(path, src.key)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise DataError(f"{path}: {which} must be a 2-D label map, got shape {arr.shape}")
    return _as_labels(arr, f"{path}: {which}")


def _split(cfg: Config, train: np.ndarray, test: Optional[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    sp = cfg.scene.split
    if sp.mode == "given" and test is None:
        raise ConfigError(f"{cfg.source}: scene.split.mode: 'given' needs train_labels and test_labels; "
                          "with one labels map choose per_class_count or per_class_fraction")
    if sp.mode == "given":
        check_disjoint(train, test, cfg.source)
    return apply_split(sp.mode, train, test, seed=sp.seed, per_class=sp.per_class, fraction=sp.fraction)


def _class_names(cfg: Config, max_label: int) -> list[str]:
    names = list(cfg.scene.class_names)
    if not names:
        return [f"class {k}" for k in range(1, max_label + 1)]
    if max_label > len(names):
        raise DataError(f"{cfg.source}: labels go up to {max_label} but scene.class_names lists {len(names)} classes")
    return names


def load_labels(cfg: Config) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(train_map, test_map, class_names) without opening any modality raster: what the label
    holder needs and nothing more."""
    sc = cfg.scene
    if sc.synthetic is not None:
        scene = make_synthetic_scene(sc.synthetic)
        return scene.train_labels, scene.test_labels, scene.class_names
    if sc.sample_table is not None:
        scene = _sample_table(cfg, [], True)
        return scene.train_labels, scene.test_labels, scene.class_names
    if sc.labels is not None:
        train, test = _split(cfg, _label_map(cfg, "labels", sc.labels), None)
    else:
        if sc.train_labels is None or sc.test_labels is None:
            raise ConfigError(f"{cfg.source}: scene: expected train_labels and test_labels, or labels with a split")
        train = _label_map(cfg, "train_labels", sc.train_labels)
        test = _label_map(cfg, "test_labels", sc.test_labels)
        if train.shape != test.shape:
            raise DataError(
                f"{cfg.source}: train_labels is {train.shape[0]} x {train.shape[1]} but "
                f"test_labels is {test.shape[0]} x {test.shape[1]}"
            )
        train, test = _split(cfg, train, test)
    names = _class_names(cfg, int(max(train.max(initial=0), test.max(initial=0))))
    return train, test, names


def _table_vector(cfg: Config, which: str, src: ArraySource) -> np.ndarray:
    path = cfg.resolve(src.path)
    arr = np.squeeze(read_array(path, src.key)[0])
    if arr.ndim > 1:
        raise DataError(f"{path}: sample table {which} must be a vector, got shape {arr.shape}")
    return _as_labels(arr.reshape(-1), f"{path}: sample table {which}")


def _sample_table(cfg: Config, modalities: list[str], with_labels: bool) -> Scene:
    """Pre-extracted pixels as a scene of N rows x 1 column, so patch size 1 works unchanged."""
    st = cfg.scene.sample_table
    mods = {}
    for m in modalities:
        path = cfg.resolve(st.modalities[m].path)
        arr, _ = read_array(path, st.modalities[m].key)
        if arr.ndim == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise DataError(f"{path}: sample table {m} must be N x C, got shape {arr.shape}")
        if not (np.issubdtype(arr.dtype, np.integer) or np.issubdtype(arr.dtype, np.floating)):
            raise DataError(f"{path}: sample table {m} has non-numeric dtype {arr.dtype}")
        mods[m] = arr.astype(np.float32, copy=False)[:, None, :]
    n_rows = {m: a.shape[0] for m, a in mods.items()}
    if len(set(n_rows.values())) > 1:
        listed = ", ".join(f"{m} {n}" for m, n in n_rows.items())
        raise DataError(f"{cfg.source}: sample table modalities have different row counts ({listed})")
    if not with_labels:
        return Scene(cfg.name, mods, None, None, list(cfg.scene.class_names), meta={"sample_table": True})
    labels = _table_vector(cfg, "labels", st.labels)
    split = _table_vector(cfg, "split", st.split)
    if labels.shape != split.shape:
        raise DataError(f"{cfg.source}: sample table has {labels.shape[0]} labels but {split.shape[0]} split entries")
    for m, n in n_rows.items():
        if n != labels.shape[0]:
            raise DataError(f"{cfg.source}: sample table {m} has {n} rows but there are {labels.shape[0]} labels")
    bad = ~np.isin(split, (0, 1, 2))
    if bad.any():
        raise DataError(f"{cfg.resolve(st.split.path)}: split holds {int(split[bad][0])}; expected 1 = train, 2 = test, 0 = unused")
    train = np.where(split == 1, labels, 0)[:, None]
    test = np.where(split == 2, labels, 0)[:, None]
    train, test = _split(cfg, train, test)
    names = _class_names(cfg, int(labels.max(initial=0)))
    return Scene(cfg.name, mods, train, test, names, meta={"sample_table": True})


def _check_modalities(cfg: Config, wanted: list[str], available: list[str]) -> None:
    unknown = [m for m in wanted if m not in available]
    if unknown:
        raise DataError(f"{cfg.source}: no modality {', '.join(unknown)} in the scene (have: {', '.join(available)})")


def load_scene(cfg: Config, modalities: Optional[list[str]] = None, with_labels: bool = True) -> Scene:
    """The validated scene of ``cfg``: only the ``modalities`` asked for (all when None) are
    opened, and label maps are read only when ``with_labels``."""
    sc = cfg.scene
    if sc.synthetic is not None:
        scene = make_synthetic_scene(sc.synthetic)
        wanted = list(scene.modalities) if modalities is None else list(modalities)
        _check_modalities(cfg, wanted, list(scene.modalities))
        scene.modalities = {m: scene.modalities[m] for m in wanted}
        if not with_labels:
            scene.train_labels = scene.test_labels = None
        return scene.validate()
    available = list(sc.sample_table.modalities) if sc.sample_table is not None else list(sc.modalities)
    wanted = list(available) if modalities is None else list(modalities)
    _check_modalities(cfg, wanted, available)
    if sc.sample_table is not None:
        return _sample_table(cfg, wanted, with_labels).validate()
    rasters: dict[str, np.ndarray] = {}
    georef: Optional[GeoRef] = None
    geo_from = ""
    for m in wanted:
        rasters[m], geo = _raster(cfg, m, sc.modalities[m])
        if geo is None:
            continue
        if georef is None:
            georef, geo_from = geo, m
        elif not np.allclose(georef.transform, geo.transform):
            raise DataError(
                f"{cfg.source}: modality {m} has geotransform {geo.transform} but {geo_from} has "
                f"{georef.transform}: rasters must be co-registered"
            )
    train = test = None
    names = list(sc.class_names)
    if with_labels:
        train, test, names = load_labels(cfg)
    return Scene(cfg.name, rasters, train, test, names, georef).validate()


def scene_summary(scene: Scene) -> str:
    """What `feddiff data` prints: enough to check a config points at the right files."""
    h, w = scene.shape
    lines = [f"scene {scene.name}: {h} rows x {w} cols"]
    for m, arr in scene.modalities.items():
        lo, hi = (float(arr.min()), float(arr.max())) if arr.size else (0.0, 0.0)
        lines.append(f"  modality {m}: {arr.shape[0]} x {arr.shape[1]} x {arr.shape[2]} {arr.dtype}, values {lo:.4g}..{hi:.4g}")
    if scene.georef is not None:
        lines.append(f"  georeferenced: transform {tuple(round(v, 6) for v in scene.georef.transform)}")
    if scene.train_labels is None or scene.test_labels is None:
        lines.append(f"  {scene.num_classes} classes; labels not loaded")
        return "\n".join(lines)
    k = scene.num_classes
    tr = np.bincount(scene.train_labels.ravel(), minlength=k + 1)
    te = np.bincount(scene.test_labels.ravel(), minlength=k + 1)
    lines.append(f"  {k} classes, {int(tr[1:].sum())} train / {int(te[1:].sum())} test pixels")
    width = max([5] + [len(n) for n in scene.class_names])
    lines.append(f"  {'id':>3}  {'class':<{width}} {'train':>7} {'test':>7}")
    for i, name in enumerate(scene.class_names, start=1):
        lines.append(f"  {i:>3}  {name:<{width}} {int(tr[i]):>7} {int(te[i]):>7}")
    return "\n".join(lines)
