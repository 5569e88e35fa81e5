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
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional

import yaml

from feddiff.errors import ConfigError


def _rng(lo: float | None = None, hi: float | None = None, choices: tuple | None = None) -> dict:
    return {"range": (lo, hi), "choices": choices}


@dataclass
class ArraySource:
    """One array in a file: .mat (v5 or v7.3), .npy, .npz or GeoTIFF; ``key`` picks the variable."""

    path: str
    key: Optional[str] = None


@dataclass
class SyntheticSpec:
    """Parameters of the seeded synthetic scene (the embedded default)."""

    seed: int = field(default=0, metadata=_rng(0))
    rows: int = field(default=96, metadata=_rng(16, 4096))
    cols: int = field(default=128, metadata=_rng(16, 4096))
    bands: int = field(default=32, metadata=_rng(4, 512))
    train_per_class: int = field(default=40, metadata=_rng(1))
    # A third modality, "sar" (VV, VH backscatter in dB with speckle), and a seventh class,
    # ploughed soil, that only it tells from bare soil (data.synthetic); off keeps the scene as is.
    sar: bool = False


@dataclass
class SplitSpec:
    """How training pixels are chosen: the given maps, or seeded per-class draws."""

    mode: str = field(default="given", metadata=_rng(choices=("given", "per_class_count", "per_class_fraction")))
    per_class: int = field(default=20, metadata=_rng(1))
    fraction: float = field(default=0.1, metadata=_rng(0.0, 1.0))
    seed: int = field(default=0, metadata=_rng(0))


@dataclass
class SampleTableSpec:
    """Pre-extracted pixels: per-modality N x C matrices, a label vector and a split vector."""

    modalities: dict[str, ArraySource]
    labels: ArraySource
    split: ArraySource  # 1 = train, 2 = test, 0 = unused


@dataclass
class SceneSpec:
    modalities: dict[str, ArraySource] = field(default_factory=dict)
    train_labels: Optional[ArraySource] = None
    test_labels: Optional[ArraySource] = None
    labels: Optional[ArraySource] = None  # one full map, split by ``split``
    class_names: list[str] = field(default_factory=list)
    synthetic: Optional[SyntheticSpec] = None
    sample_table: Optional[SampleTableSpec] = None
    split: SplitSpec = field(default_factory=SplitSpec)


@dataclass
class ScheduleSpec:
    timesteps: int = field(default=500, metadata=_rng(2, 10000))
    beta_schedule: str = field(default="linear", metadata=_rng(choices=("linear", "cosine")))
    beta_start: float = field(default=1e-4, metadata=_rng(0.0, 1.0))
    beta_end: float = field(default=0.02, metadata=_rng(0.0, 1.0))
    loss: str = field(default="l1", metadata=_rng(choices=("l1", "mse")))


@dataclass
class UNetSpec:
    base_channels: int = field(default=32, metadata=_rng(4, 512))
    channel_mult: list[int] = field(default_factory=lambda: [1, 2])
    num_res_blocks: int = field(default=1, metadata=_rng(1, 8))
    attention: bool = True
    freq_block: bool = True
    groups: int = field(default=8, metadata=_rng(1, 64))


@dataclass
class CommSpec:
    """The lightweight communication module: low-rank factorisation then int quantisation."""

    rank: int = field(default=32, metadata=_rng(1, 4096))
    bits: int = field(default=8, metadata=_rng(choices=(8, 16, 32)))
    enabled: bool = True


@dataclass
class ModelSpec:
    """The defaults here and in TrainSpec are the general recipe (benchmarks/generalise.py);
    ``preset: published`` fills every key a config leaves out with FedDiff as published
    instead (``PUBLISHED``)."""

    preset: str = field(default="recipe", metadata=_rng(choices=("recipe", "published")))
    patch_size: int = field(default=8, metadata=_rng(1, 64))
    # Denoiser of the diffusion branch: the 2-D U-Net, or the per-pixel residual MLP of
    # model.spectral (sized by the same unet section); auto = spectral when patch_size is 1.
    denoiser: str = field(default="auto", metadata=_rng(choices=("auto", "unet", "spectral")))
    unet: UNetSpec = field(default_factory=UNetSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    feature_timesteps: list[int] = field(default_factory=lambda: [5, 50])
    use_diffusion: bool = True
    head_channels: int = field(default=32, metadata=_rng(4, 1024))
    # Dropout on each FR stream's pooled features before its classifier (0 = FedDiff as
    # published); see model.fusion.Stream for why the accuracy config uses it. The HE mode's
    # additive head (fusion: additive) has no streams and ignores it.
    dropout: float = field(default=0.0, metadata=_rng(0.0, 0.9))
    # Stage-2 ensemble (model.ensemble): K classifiers over the same frozen denoisers and one
    # feature pass, probabilities averaged. 1 = FedDiff as published; federation trains one.
    members: int = field(default=1, metadata=_rng(1, 16))
    # Which fusion the federated job trains: "interaction" (the FR-stream head, at the aggregator)
    # or "additive" (the summed-ciphertext head of HE mode, at a third-party label holder);
    # "auto" picks additive exactly when federation.security is he.
    fusion: str = field(default="auto", metadata=_rng(choices=("auto", "interaction", "additive")))
    he_dim: int = field(default=32, metadata=_rng(1, 4096))  # width of the encrypted sum in HE mode
    comm: CommSpec = field(default_factory=CommSpec)


@dataclass
class TrainSpec:
    seed: int = field(default=0, metadata=_rng(0))
    threads: int = field(default=2, metadata=_rng(1, 256))
    pretrain_steps: int = field(default=3000, metadata=_rng(0))
    pretrain_batch: int = field(default=64, metadata=_rng(1))
    pretrain_lr: float = field(default=2e-4, metadata=_rng(0.0, 1.0))
    epochs: int = field(default=40, metadata=_rng(1))
    batch_size: int = field(default=64, metadata=_rng(1))
    lr: float = field(default=1e-3, metadata=_rng(0.0, 1.0))
    comm_lr_scale: float = field(default=1.0, metadata=_rng(0.0, 1.0))  # see model.optim.make_optimizer
    # FedDiff's L2 term and MSE tie between the streams stay implemented (preset: published);
    # on the sharper features of a well-pretrained denoiser they cost 1.7 points OA on Trento
    # (configs/trento_sim_accurate.yaml, stage-2 seeds 0-2), so the recipe leaves them out.
    l2: float = field(default=0.0, metadata=_rng(0.0, 1.0))
    mse_weight: float = field(default=0.0, metadata=_rng(0.0))
    augment: bool = True
    eval_batch: int = field(default=512, metadata=_rng(1))
    # Share of each class's training pixels held out to choose the stage-2 epoch count and
    # whether to self-train (model.selection); 0 = the last epoch, no contest (as published).
    # The chosen setting is then retrained on all training pixels.
    val_fraction: float = field(default=0.2, metadata=_rng(0.0, 0.9))
    # Self-training on confident unlabelled pixels (model.pseudo): off, on, or auto = kept only
    # when it wins on the validation pixels.
    self_train: str = field(default="auto", metadata=_rng(choices=("off", "auto", "on")))
    pseudo_pool: int = field(default=8192, metadata=_rng(1))  # random unlabelled pixels scored
    pseudo_ratio: float = field(default=2.0, metadata=_rng(0.0))  # pseudo pixels per class / labelled per class
    pseudo_threshold: float = field(default=0.9, metadata=_rng(0.0, 1.0))
    # The RBF-SVM baseline beside FedDiff in every train report (feddiff.baselines); off for
    # scenes whose training set makes a kernel SVM's cross-validation too slow.
    svm_baseline: bool = True


@dataclass
class BrokerSpec:
    host: str = "127.0.0.1"
    port: int = field(default=1883, metadata=_rng(0, 65535))
    username: Optional[str] = None
    password_file: Optional[str] = None
    tls_ca: Optional[str] = None
    tls_cert: Optional[str] = None
    tls_key: Optional[str] = None
    keepalive: int = field(default=30, metadata=_rng(1, 3600))


@dataclass
class ClientSpec:
    modalities: list[str]
    region: Optional[list[int]] = None  # [row0, row1, col0, col1] for horizontal mode


@dataclass
class FederationSpec:
    job: str = "demo"
    broker: BrokerSpec = field(default_factory=BrokerSpec)
    clients: dict[str, ClientSpec] = field(default_factory=dict)
    label_holder: str = "aggregator"
    security: str = field(default="none", metadata=_rng(choices=("none", "signed", "he")))
    keys_dir: Optional[str] = None
    state_dir: str = "state"
    round_timeout_s: float = field(default=60.0, metadata=_rng(0.1))
    max_retries: int = field(default=3, metadata=_rng(0))
    chunk_bytes: int = field(default=256 * 1024, metadata=_rng(1024))
    max_message_bytes: int = field(default=64 * 1024 * 1024, metadata=_rng(1024))
    # HE: a sample whose ciphertext sum has one station's features shows them to the label
    # holder; refused unless the operator accepts that here (docs/security.md).
    he_allow_single_contributor: bool = False
    # /metrics, /healthz and the dashboard of a daemon (0 = off). Loopback unless http_host says
    # otherwise: exposing it is an operator's decision.
    http_port: int = field(default=0, metadata=_rng(0, 65535))
    http_host: str = "127.0.0.1"
    write_map: bool = True


@dataclass
class Config:
    name: str = "scene"
    scene: SceneSpec = field(default_factory=SceneSpec)
    model: ModelSpec = field(default_factory=ModelSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    federation: FederationSpec = field(default_factory=FederationSpec)
    output_dir: str = "out"
    source: str = field(default="<defaults>", metadata={"internal": True})

    def resolve(self, path: str) -> Path:
        """Paths in a config are relative to the config file, so a config travels with its data."""
        p = Path(path).expanduser()
        if p.is_absolute() or self.source.startswith("<"):
            return p
        return (Path(self.source).parent / p).resolve()


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


# FedDiff as published (and as this project trained it before the recipe): what
# ``model.preset: published`` puts under every key the config leaves out.
PUBLISHED = {
    "model": {"unet": {"base_channels": 32, "channel_mult": [1, 2], "num_res_blocks": 2}, "feature_timesteps": [5, 50, 150],
              "head_channels": 64, "dropout": 0.0, "members": 1, "comm": {"rank": 8}},
    "train": {"pretrain_steps": 600, "pretrain_batch": 128, "epochs": 30, "l2": 1e-4, "mse_weight": 1.0,
              "val_fraction": 0.0, "self_train": "off"},
}


def _under(base: dict, over: dict) -> dict:
    """``over`` with ``base`` filling the keys it leaves out, recursively."""
    out = dict(base)
    for k, v in over.items():
        out[k] = _under(base[k], v) if isinstance(v, dict) and isinstance(base.get(k), dict) else v
    return out


def config_from_dict(data: dict, source: str = "<dict>", check_files: bool = True) -> Config:
    """Validate a plain mapping (parsed YAML) into a ``Config``; raises ``ConfigError``."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a YAML mapping at the top level, got {type(data).__name__}")
    model = data.get("model")
    if isinstance(model, dict) and model.get("preset") == "published":
        data = _under(PUBLISHED, data)
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
    d = dataclasses.asdict(cfg)
    return d
