"""One tiny trained model per test module: the embedded demo config shrunk so training takes seconds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

TINY = {
    "name": "tiny",
    "scene": {"synthetic": {"seed": 0, "rows": 32, "cols": 40, "bands": 16, "train_per_class": 10}},
    "model": {
        "patch_size": 8,
        "unet": {"base_channels": 8, "channel_mult": [1, 2], "num_res_blocks": 1},
        "feature_timesteps": [5, 50, 150],
        "head_channels": 16,
        "comm": {"rank": 8, "bits": 8},
    },
    # a few plain epochs: export checks need a trained graph, not per-scene model selection
    "train": {"min_steps": 0, "seed": 0, "threads": 1, "pretrain_steps": 5, "pretrain_batch": 16, "epochs": 3, "batch_size": 16,
              "val_fraction": 0.0, "self_train": "off"},
}


@dataclass
class Tiny:
    folder: Path
    config: Path
    checkpoint: Path


def with_overrides(doc: dict, overrides: dict) -> dict:
    """A copy of ``doc`` with ``overrides`` merged in, section by section (nested dicts merge,
    anything else replaces)."""
    out = yaml.safe_load(yaml.safe_dump(doc))
    for k, v in overrides.items():
        out[k] = with_overrides(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def write_config(path: Path, overrides: dict | None = None) -> Path:
    doc = yaml.safe_load(yaml.safe_dump(TINY))
    for k, v in (overrides or {}).items():
        doc["scene"]["synthetic"][k] = v
    path.write_text(yaml.safe_dump(doc))
    return path


def train_tiny(config: Path, modalities: list[str] | None = None) -> Tiny:
    """Trains ``config`` centrally (on every modality of its scene unless ``modalities`` names
    some) and saves the checkpoint beside it."""
    from feddiff.config import load_config
    from feddiff.data.loader import load_scene
    from feddiff.model.checkpoint import save_checkpoint
    from feddiff.model.centralised import train_centralised

    cfg = load_config(config)
    scene = load_scene(cfg)
    res = train_centralised(cfg, scene, modalities or list(scene.modalities), progress=False)
    ck = config.parent / "model.pt"
    save_checkpoint(ck, res.net, cfg, {m: s.stats for m, s in res.sources.items()}, scene.class_names, res.metrics)
    return Tiny(config.parent, config, ck)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Tiny:
    return train_tiny(write_config(tmp_path_factory.mktemp("tiny") / "scene.yaml"), ["hsi", "lidar"])


@pytest.fixture(scope="module")
def exported(tiny) -> tuple[Path, object]:
    from export.onnx_export import export_checkpoint

    out = tiny.folder / "model.onnx"
    return out, export_checkpoint(tiny.checkpoint, out, config=str(tiny.config), parity_n=64)
