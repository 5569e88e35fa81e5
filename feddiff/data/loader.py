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
from feddiff.data.splits import merge_maps, per_class_split
from feddiff.data.synthetic import make_synthetic_scene
from feddiff.errors import DataError


def _raster(cfg: Config, name: str, src: ArraySource) -> tuple[np.ndarray, Optional[GeoRef]]:
    arr, geo = read_array(cfg.resolve(src.path), src.key)
    if arr.ndim == 2:
        arr = arr[..., None]
    if arr.ndim != 3:
        raise DataError(f"{cfg.resolve(src.path)}: modality {name} must be rows x cols [x channels], got shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise DataError(f"{cfg.resolve(src.path)}: modality {name} has non-numeric dtype {arr.dtype}")
    return arr.astype(np.float32, copy=False), geo


def _label_map(cfg: Config, which: str, src: ArraySource) -> np.ndarray:
    arr, _ = read_array(cfg.resolve(src.path), src.key)
    arr = np.squeeze(arr)
    if arr.ndim != 2:
        raise DataError(f"{cfg.resolve(src.path)}: {which} must be a 2-D label map, got shape {arr.shape}")
    if np.issubdtype(arr.dtype, np.floating):
        if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise DataError(f"{cfg.resolve(src.path)}: {which} holds non-integer labels")
    return arr.astype(np.int64)


def load_labels(cfg: Config) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(train_map, test_map, class_names) without opening any modality raster."""
    sc = cfg.scene
    if sc.synthetic is not None:
        scene = make_synthetic_scene(sc.synthetic)
        return scene.train_labels, scene.test_labels, scene.class_names
    if sc.sample_table is not None:
        scene = _sample_table(cfg, [], True)
        return scene.train_labels, scene.test_labels, scene.class_names
    if sc.labels is not None:
        full = _label_map(cfg, "labels", sc.labels)
        train, test = _split(cfg, full)
    else:
        train = _label_map(cfg, "train_labels", sc.train_labels)
        test = _label_map(cfg, "test_labels", sc.test_labels)
        if train.shape != test.shape:
            raise DataError(f"{cfg.source}: train_labels is {train.shape[0]} x {train.shape[1]} but test_labels is {test.shape[0]} x {test.shape[1]}")
        if sc.split.mode != "given":
            train, test = _split(cfg, merge_maps(train, test))
    names = _class_names(cfg, int(max(train.max(), test.max())))
    return train, test, names


def _split(cfg: Config, full: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    sp = cfg.scene.split
    if sp.mode == "per_class_count":
        return per_class_split(full, sp.seed, per_class=sp.per_class)
    if sp.mode == "per_class_fraction":
        return per_class_split(full, sp.seed, fraction=sp.fraction)
    raise DataError(f"{cfg.source}: scene.split.mode 'given' needs train_labels and test_labels, not one labels map")


def _class_names(cfg: Config, max_label: int) -> list[str]:
    names = list(cfg.scene.class_names)
    if not names:
        return [f"class {k}" for k in range(1, max_label + 1)]
    if max_label > len(names):
        raise DataError(f"{cfg.source}: labels go up to {max_label} but scene.class_names lists {len(names)} classes")
    return names


def _sample_table(cfg: Config, modalities: list[str], with_labels: bool) -> Scene:
    st = cfg.scene.sample_table
    mods = {}
    for m in modalities:
        arr, _ = read_array(cfg.resolve(st.modalities[m].path), st.modalities[m].key)
        if arr.ndim != 2:
            raise DataError(f"{cfg.resolve(st.modalities[m].path)}: sample table {m} must be N x C, got {arr.shape}")
        mods[m] = arr.astype(np.float32)[:, None, :]
    labels = np.squeeze(read_array(cfg.resolve(st.labels.path), st.labels.key)[0]).astype(np.int64).reshape(-1)
    split = np.squeeze(read_array(cfg.resolve(st.split.path), st.split.key)[0]).astype(np.int64).reshape(-1)
    if labels.shape != split.shape:
        raise DataError(f"{cfg.source}: sample table has {labels.shape[0]} labels but {split.shape[0]} split entries")
    for m, arr in mods.items():
        if arr.shape[0] != labels.shape[0]:
            raise DataError(f"{cfg.source}: sample table {m} has {arr.shape[0]} rows but there are {labels.shape[0]} labels")
    train = np.where(split == 1, labels, 0)[:, None]
    test = np.where(split == 2, labels, 0)[:, None]
    return Scene(cfg.name, mods, train if with_labels else None, test if with_labels else None, _class_names(cfg, int(labels.max())))


def load_scene(cfg: Config, modalities: Optional[list[str]] = None, with_labels: bool = True) -> Scene:
    sc = cfg.scene
    if sc.synthetic is not None:
        scene = make_synthetic_scene(sc.synthetic)
        keep = modalities or list(scene.modalities)
        scene.modalities = {m: scene.modalities[m] for m in keep}
        if not with_labels:
            scene.train_labels = scene.test_labels = None
        return scene
    available = list(sc.sample_table.modalities) if sc.sample_table is not None else list(sc.modalities)
    wanted = modalities if modalities is not None else available
    unknown = [m for m in wanted if m not in available]
    if unknown:
        raise DataError(f"{cfg.source}: no modality {', '.join(unknown)} in the scene (have: {', '.join(available)})")
    if sc.sample_table is not None:
        return _sample_table(cfg, wanted, with_labels).validate()
    rasters, georef = {}, None
    for m in wanted:
        rasters[m], geo = _raster(cfg, m, sc.modalities[m])
        georef = georef or geo
    train = test = None
    names = list(sc.class_names)
    if with_labels:
        train, test, names = load_labels(cfg)
    scene = Scene(cfg.name, rasters, train, test, names or [], georef)
    return scene.validate()


def scene_summary(scene: Scene) -> str:
    lines = [f"scene {scene.name}: {scene.shape[0]} rows x {scene.shape[1]} cols"]
    for m, arr in scene.modalities.items():
        lines.append(f"  modality {m}: {arr.shape[2]} {'bands' if arr.shape[2] > 3 else 'channels'} ({arr.dtype})")
    if scene.train_labels is not None:
        tr = np.bincount(scene.train_labels.ravel(), minlength=scene.num_classes + 1)
        te = np.bincount(scene.test_labels.ravel(), minlength=scene.num_classes + 1)
        lines.append(f"  {scene.num_classes} classes, {int(tr[1:].sum())} train / {int(te[1:].sum())} test pixels")
        lines.append(f"  {'id':>3} {'class':<24} {'train':>7} {'test':>7}")
        for k, name in enumerate(scene.class_names, start=1):
            lines.append(f"  {k:>3} {name:<24} {int(tr[k]):>7} {int(te[k]):>7}")
    return "\n".join(lines)
