"""Typed configuration: YAML validated into dataclasses.

Why a hand-rolled walker over the dataclass fields instead of a schema library: the error a user
sees must name the file, the dotted key and what was expected on one line, and a field's range
lives next to the field (``metadata={"range": (lo, hi)}``). Nothing here knows about roles; the
edge and aggregator sections are plain data the roles interpret.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

import yaml

from feddiff.config_specs import (
    ArraySource,
    BrokerSpec,
    ClientSpec,
    CommSpec,
    Config,
    FederationSpec,
    ModelSpec,
    SampleTableSpec,
    SceneSpec,
    ScheduleSpec,
    SplitSpec,
    SyntheticSpec,
    TrainSpec,
    UNetSpec,
)
from feddiff.errors import ConfigError

__all__ = [
    "ArraySource", "BrokerSpec", "ClientSpec", "CommSpec", "Config", "ConfigError", "FederationSpec", "ModelSpec",
    "SampleTableSpec", "SceneSpec", "ScheduleSpec", "SplitSpec", "SyntheticSpec", "TrainSpec", "UNetSpec",
    "PUBLISHED", "config_from_dict", "config_hash", "config_to_dict", "load_config",
]


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        return " or ".join(_describe(a) for a in args) + " or null"
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return f"a mapping of name -> {_describe(typing.get_args(tp)[1])}"
    if dataclasses.is_dataclass(tp):
        return f"a mapping ({tp.__name__})"
    return {int: "an integer", float: "a number", str: "a string", bool: "true/false"}.get(tp, str(tp))


def _convert(value: Any, tp: Any, where: str, src: str) -> Any:
    def fail(expected: str) -> ConfigError:
        return ConfigError(f"{src}: {where}: expected {expected}, got {value!r}")

    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None:
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return _convert(value, inner, where, src)
    if origin is list:
        if not isinstance(value, list):
            raise fail(_describe(tp))
        (item,) = typing.get_args(tp)
        return [_convert(v, item, f"{where}[{i}]", src) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise fail(_describe(tp))
        _, item = typing.get_args(tp)
        return {str(k): _convert(v, item, f"{where}.{k}", src) for k, v in value.items()}
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise fail(_describe(tp))
        return _build(tp, value, where, src)
    if tp is bool:
        if not isinstance(value, bool):
            raise fail("true/false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise fail("an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise fail("a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise fail("a string")
        return value
    raise fail(str(tp))


def _check_range(value: Any, meta: dict, where: str, src: str) -> None:
    lo, hi = meta.get("range") or (None, None)
    choices = meta.get("choices")
    if choices is not None and value not in choices:
        raise ConfigError(f"{src}: {where}: expected one of {', '.join(map(str, choices))}, got {value!r}")
    if value is None or isinstance(value, (str, bool, list, dict)):
        return
    if lo is not None and value < lo:
        raise ConfigError(f"{src}: {where}: expected a value >= {lo}, got {value!r}")
    if hi is not None and value > hi:
        raise ConfigError(f"{src}: {where}: expected a value <= {hi}, got {value!r}")


def _build(cls: type, data: dict, prefix: str, src: str) -> Any:
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if not f.metadata.get("internal")}
    for key in data:
        if key not in fields:
            where = f"{prefix}.{key}" if prefix else str(key)
            raise ConfigError(
                f"{src}: {where}: unknown key (expected one of: {', '.join(sorted(fields))})"
            )
    kwargs = {}
    for name, f in fields.items():
        where = f"{prefix}.{name}" if prefix else name
        if name not in data:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"{src}: {where}: missing required key ({_describe(hints[name])})")
            continue
        value = _convert(data[name], hints[name], where, src)
        _check_range(value, f.metadata, where, src)
        kwargs[name] = value
    return cls(**kwargs)


# FedDiff as published (Li et al., arXiv 2401.02433), put by ``model.preset: published`` under
# every key the config leaves out. The field defaults are the general recipe, which differs from
# it in six places, chosen on benchmarks/generalise.py and benchmarks/spectral.py
# (docs/results.md): no MSE tie between the single streams and the prediction (it pulls the
# features the cross stream shares toward what each modality alone predicts), a floor on
# stage-2 steps, a rank-32 wire whose bases learn slowly instead of rank 8 at the full rate,
# diffusion features at the least noisy timestep only, label smoothing 0.1, and the conv path
# over the diffusion features at 1/100 of the rate.
PUBLISHED = {
    "model": {"comm": {"rank": 8}, "feature_timesteps": [5, 50, 150]},
    "train": {"mse_weight": 1.0, "min_steps": 0, "comm_lr_scale": 1.0, "label_smoothing": 0.0, "diff_lr_scale": 1.0},
}


def _under(base: dict, over: dict) -> dict:
    """``over`` with ``base`` filling the keys it leaves out, recursively."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _under(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def _table_patch(data: dict, source: str) -> dict:
    """A sample table's rows are unrelated pixels, so a patch around one would mix strangers:
    such a job trains at patch size 1. Set here, in the config every party loads, so stations,
    aggregator and export agree; a patch size the user asked for explicitly is an error."""
    scene, model = data.get("scene"), data.get("model", {})
    if not (isinstance(scene, dict) and scene.get("sample_table") is not None and isinstance(model, dict)):
        return data
    size = model.get("patch_size", 1)
    if size != 1:
        raise ConfigError(f"{source}: model.patch_size: a sample table's rows are unrelated pixels: expected 1 (or leave it out), got {size!r}")
    return {**data, "model": {**model, "patch_size": 1}}


def config_from_dict(data: dict, source: str = "<dict>", check_files: bool = True) -> Config:
    """Validate a plain mapping (parsed YAML) into a ``Config``; raises ``ConfigError``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level, got {type(data).__name__}")
    model = data.get("model")
    if isinstance(model, dict) and model.get("preset") == "published":
        data = _under(PUBLISHED, data)
    data = _table_patch(data, source)
    cfg = _build(Config, data, "", source)
    cfg.source = source
    _check_semantics(cfg, check_files)
    return cfg


def load_config(path: str | Path) -> Config:
    """Read and validate a YAML config; every problem is one ``ConfigError`` line naming file and key."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"{p}: config file not found")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise ConfigError(f"{p}: malformed YAML{at}: {problem}") from None
    return config_from_dict(data or {}, str(p.resolve()))


def _check_semantics(cfg: Config, check_files: bool = True) -> None:
    src = cfg.source
    sc = cfg.scene
    kinds = [bool(sc.modalities), sc.synthetic is not None, sc.sample_table is not None]
    if sum(kinds) != 1 and check_files:
        raise ConfigError(
            f"{src}: scene: expected exactly one of scene.modalities, scene.synthetic, scene.sample_table"
        )
    if sc.modalities:
        if sc.labels is None and (sc.train_labels is None or sc.test_labels is None):
            raise ConfigError(f"{src}: scene: expected train_labels and test_labels, or labels with a split")
    if check_files:
        for name, source in _sources(cfg):
            try:  # a NUL byte, an over-long name or an unknown ~user must not escape as a traceback
                found = cfg.resolve(source.path).exists()
            except (OSError, ValueError, RuntimeError) as exc:
                why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
                raise ConfigError(f"{src}: {name}.path: not a usable file path ({why}): {source.path[:80]!r}") from None
            if not found:
                raise ConfigError(f"{src}: {name}.path: file not found: {cfg.resolve(source.path)}")
    mult = cfg.model.unet.channel_mult
    if not mult or any(m < 1 for m in mult):
        raise ConfigError(f"{src}: model.unet.channel_mult: expected a non-empty list of positive integers, got {mult!r}")
    T = cfg.model.schedule.timesteps
    for i, t in enumerate(cfg.model.feature_timesteps):
        if not 0 <= t < T:
            raise ConfigError(f"{src}: model.feature_timesteps[{i}]: expected 0 <= t < {T}, got {t}")
    if cfg.model.use_diffusion and not cfg.model.feature_timesteps:
        raise ConfigError(f"{src}: model.feature_timesteps: expected at least one timestep")
    if cfg.model.schedule.beta_start >= cfg.model.schedule.beta_end:
        raise ConfigError(f"{src}: model.schedule.beta_start: expected a value below beta_end")
    fed = cfg.federation
    if fed.security == "he" and fed.label_holder in ("aggregator", *fed.clients):
        raise ConfigError(f"{src}: federation.security 'he' needs a third-party label_holder (not the aggregator or a station)")
    if cfg.model.fusion != "auto" and (cfg.model.fusion == "additive") != (fed.security == "he"):
        raise ConfigError(f"{src}: model.fusion: {cfg.model.fusion!r} does not fit federation.security {fed.security!r} "
                          "(additive is the HE mode's fusion; use auto)")
    for name, client in cfg.federation.clients.items():
        if not client.modalities:
            raise ConfigError(f"{src}: federation.clients.{name}.modalities: expected at least one modality")
        if client.region is not None and len(client.region) != 4:
            raise ConfigError(f"{src}: federation.clients.{name}.region: expected [row0, row1, col0, col1]")


def _sources(cfg: Config) -> list[tuple[str, ArraySource]]:
    sc = cfg.scene
    out: list[tuple[str, ArraySource]] = []
    if sc.sample_table is not None:
        st = sc.sample_table
        out += [(f"scene.sample_table.modalities.{k}", v) for k, v in st.modalities.items()]
        out += [("scene.sample_table.labels", st.labels), ("scene.sample_table.split", st.split)]
        return out
    out += [(f"scene.modalities.{k}", v) for k, v in sc.modalities.items()]
    for key in ("train_labels", "test_labels", "labels"):
        if getattr(sc, key) is not None:
            out.append((f"scene.{key}", getattr(sc, key)))
    return out


def config_hash(cfg: Config) -> str:
    """Stable short hash of the validated config, stored in checkpoints and ONNX metadata."""
    import hashlib
    import json

    d = dataclasses.asdict(cfg)
    d.pop("source", None)
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


def config_to_dict(cfg: Config) -> dict:
    """The mapping ``config_from_dict`` reads back into an equal config (internal fields left out)."""
    d = dataclasses.asdict(cfg)
    for f in dataclasses.fields(Config):
        if f.metadata.get("internal"):
            d.pop(f.name, None)
    return d
