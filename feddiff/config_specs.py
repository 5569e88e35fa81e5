"""The configuration's shape: one dataclass per YAML section, each field's range beside it
(``metadata={"range": (lo, hi)}``). Loading and checking a YAML file against them is
``feddiff.config``; nothing here knows about roles.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional


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
    num_res_blocks: int = field(default=2, metadata=_rng(1, 8))
    attention: bool = True
    freq_block: bool = True
    groups: int = field(default=8, metadata=_rng(1, 64))


@dataclass
class CommSpec:
    """The lightweight communication module: low-rank factorisation then int quantisation.

    Rank 32 in the general recipe (36 bytes per pixel and modality at 8 bits): rank 8 is too
    narrow a wire for scenes with many classes (on a 16-class table of real spectra it cost 9
    points against the same head without compression; docs/results.md, "Communication rank")."""

    rank: int = field(default=32, metadata=_rng(1, 4096))
    bits: int = field(default=8, metadata=_rng(choices=(8, 16, 32)))
    enabled: bool = True


@dataclass
class ModelSpec:
    """The defaults here and in TrainSpec are the general recipe: the one config that
    benchmarks/generalise.py measures across six scenes. ``preset: published`` fills the keys a
    config leaves out with FedDiff as published instead (``feddiff.config.PUBLISHED``)."""

    preset: str = field(default="general", metadata=_rng(choices=("general", "published")))
    patch_size: int = field(default=8, metadata=_rng(1, 64))
    # Denoiser of the diffusion branch: the 2-D U-Net, or the per-pixel residual MLP of
    # model.spectral (sized by the same unet section); auto = spectral when patch_size is 1.
    denoiser: str = field(default="auto", metadata=_rng(choices=("auto", "unet", "spectral")))
    unet: UNetSpec = field(default_factory=UNetSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    # Timesteps whose middle-block features the diffusion path reads. One, the least noisy, in
    # the general recipe: every timestep adds a full encoder pass per pixel, and without the
    # noisier 50 and 150 (read through one fixed noise draw) OA rose on four of the six scenes
    # of benchmarks/generalise.py and moved by under 0.1 point on the other two (docs/results.md,
    # "Feature timesteps").
    feature_timesteps: list[int] = field(default_factory=lambda: [5])
    use_diffusion: bool = True
    head_channels: int = field(default=64, metadata=_rng(4, 1024))
    # Dropout on each FR stream's pooled features before its classifier (0 = FedDiff as
    # published); see model.fusion.Stream for why the accuracy config uses it. The HE mode's
    # additive head (fusion: additive) has no streams and ignores it.
    dropout: float = field(default=0.0, metadata=_rng(0.0, 0.9))
    # Probability that stage 2 drops a pixel's whole diffusion map (per modality, rescaled so
    # inference is unchanged), so the head also learns from the raw maps alone. 0 by default:
    # over benchmarks/generalise.py it cost more than it gained (docs/results.md). The additive
    # head of HE mode ignores it, as it does ``dropout``.
    diff_dropout: float = field(default=0.0, metadata=_rng(0.0, 0.9))
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
    pretrain_steps: int = field(default=600, metadata=_rng(0))
    pretrain_batch: int = field(default=128, metadata=_rng(1))
    pretrain_lr: float = field(default=2e-4, metadata=_rng(0.0, 1.0))
    epochs: int = field(default=30, metadata=_rng(1))
    # Floor on stage-2 optimiser steps over all epochs (each epoch repeats whole passes over the
    # labelled pixels as needed): few labels must not mean too few steps (model.optim.stage2_plan).
    min_steps: int = field(default=300, metadata=_rng(0))
    batch_size: int = field(default=64, metadata=_rng(1))
    lr: float = field(default=1e-3, metadata=_rng(0.0, 1.0))
    # The comm bases learn at this fraction of ``lr`` (model.optim.make_optimizer): 1/100 in the
    # general recipe, so rank-32 bases do not drift into fitting the training fields.
    comm_lr_scale: float = field(default=0.01, metadata=_rng(0.0, 1.0))
    # The conv path over each branch's frozen diffusion features learns at this fraction of
    # ``lr`` (model.optim.make_optimizer): 1/100 in the general recipe. At the full rate it fits
    # a few labels per class through the denoiser's many feature channels, and the same head
    # without diffusion features generalised better on four of the six scenes of
    # benchmarks/generalise.py; at 1/100 the diffusion features earn their place
    # (docs/results.md, "The diffusion path at 1/100 of the rate").
    diff_lr_scale: float = field(default=0.01, metadata=_rng(0.0, 1.0))
    l2: float = field(default=1e-4, metadata=_rng(0.0, 1.0))
    # Weight of the MSE tie of each single stream to the prediction (FedDiff as published: 1).
    # 0 in the general recipe: the tie trains the features the cross stream shares toward what
    # each modality predicts alone, and costs OA on every scene of benchmarks/generalise.py.
    mse_weight: float = field(default=0.0, metadata=_rng(0.0))
    # Label smoothing of the stage-2 cross-entropy (0 = FedDiff as published). 0.1 in the general
    # recipe: with a few labels per class the head otherwise drives its logits apart until it
    # fits the training fields exactly, and which exact fit it lands in varies by seed; over the
    # scenes of benchmarks/generalise.py 0.1 raised OA on five of six (most on houston_sim,
    # +1.3 points) and cost 0.08 on the sixth (docs/results.md).
    label_smoothing: float = field(default=0.1, metadata=_rng(0.0, 0.9))
    augment: bool = True
    eval_batch: int = field(default=512, metadata=_rng(1))
    # Share of each class's training pixels held out to choose the stage-2 epoch count and
    # whether to self-train (model.selection); 0 = the last epoch, no contest (as published).
    # The chosen setting is then retrained on all training pixels.
    val_fraction: float = field(default=0.0, metadata=_rng(0.0, 0.9))
    # Self-training on confident unlabelled pixels (model.pseudo): off, on, or auto = kept only
    # when it wins on the validation pixels.
    self_train: str = field(default="off", metadata=_rng(choices=("off", "auto", "on")))
    pseudo_pool: int = field(default=8192, metadata=_rng(1))  # random unlabelled pixels scored
    pseudo_ratio: float = field(default=2.0, metadata=_rng(0.0))  # pseudo pixels per class / labelled per class
    pseudo_threshold: float = field(default=0.9, metadata=_rng(0.0, 1.0))
    # The RBF-SVM baseline beside FedDiff in every train report (feddiff.baselines); off for
    # scenes whose training set makes a kernel SVM's cross-validation too slow.
    svm_baseline: bool = True
    # Label DP on the gradients a remote label holder returns (feddiff.privacy): Gaussian noise
    # multiplier (0 = off), per-sample L2 clip, and the delta the reported epsilon is for.
    label_dp_sigma: float = field(default=0.0, metadata=_rng(0.0, 1e6))
    label_dp_clip: float = field(default=1.0, metadata=_rng(1e-6, 1e6))
    label_dp_delta: float = field(default=1e-5, metadata=_rng(1e-12, 0.5))


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
    # Least seconds between two rewrites of the aggregator's status.json while a round trains
    # (phase changes and errors are written at once): a fsync per step would slow a fast round.
    status_interval_s: float = field(default=1.0, metadata=_rng(0.0, 3600.0))


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
