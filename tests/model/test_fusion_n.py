"""N-modality fusion: N = 2 is FedDiff's head unchanged, every pair of modalities gets its own
bilateral connection, and a third modality that carries what the other two lack is used."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from feddiff.config import Config, ModelSpec, SyntheticSpec, TrainSpec, UNetSpec
from feddiff.data.synthetic import make_synthetic_scene
from feddiff.model.fusion import FusionHead, modality_pairs
from feddiff.model.net import FedDiffNet

# The two-modality head's fingerprint for torch.manual_seed(7) and a seeded wire: the sum of
# every parameter and the first sample's logits. The published figures rest on this head, so
# generalising to N modalities must leave both unchanged.
N2_PARAM_SUM = 39.55276017956567
N2_LOGITS0 = [-0.2771516740322113, -0.09338773787021637, 0.005974702537059784, -0.22920849919319153, -0.1991036832332611]


def seeded_wire(mods: list[str], n: int = 4, dim: int = 8) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {m: torch.randn(n, dim, generator=g) for m in mods}


def test_two_modalities_are_exactly_the_published_head():
    torch.manual_seed(7)
    head = FusionHead(["hsi", "lidar"], 16, 5, 8, 8, 0.0).eval()
    assert len(head.pairs) == 0 and not any(k.startswith("pairs.") for k in head.state_dict())
    assert sum(float(v.double().sum()) for v in head.state_dict().values()) == pytest.approx(N2_PARAM_SUM, abs=1e-9)
    wire = seeded_wire(["hsi", "lidar"])
    logits, singles = head(wire)
    assert logits[0].tolist() == pytest.approx(N2_LOGITS0, abs=1e-7)
    (r1, d1), (r2, d2) = head.unflatten("hsi", wire["hsi"]), head.unflatten("lidar", wire["lidar"])
    assert torch.equal(logits, head.cross(r1 + d2, r2 + d1)) and set(singles) == {"hsi", "lidar"}


def test_a_third_modality_adds_streams_and_leaves_the_first_pair_alone():
    """Parameters created for a third modality come after the two-modality ones, so the
    decoders/streams the pair (hsi, lidar) shares with a 2-modality head differ only where
    the new modality's own modules were drawn first (its decoder and single stream)."""
    torch.manual_seed(7)
    head = FusionHead(["hsi", "lidar", "sar"], 16, 5, 8, 8, 0.0).eval()
    assert modality_pairs(head.modalities) == [("hsi", "lidar"), ("hsi", "sar"), ("lidar", "sar")]
    assert set(head.pairs) == {"hsi|sar", "lidar|sar"}
    wire = seeded_wire(["hsi", "lidar", "sar"])
    logits, singles = head(wire)
    maps = {m: head.unflatten(m, wire[m]) for m in head.modalities}
    streams = {("hsi", "lidar"): head.cross, ("hsi", "sar"): head.pairs["hsi|sar"], ("lidar", "sar"): head.pairs["lidar|sar"]}
    want = torch.stack([s(maps[a][0] + maps[b][1], maps[b][0] + maps[a][1]) for (a, b), s in streams.items()]).mean(0)
    assert torch.allclose(logits, want, atol=1e-6) and set(singles) == {"hsi", "lidar", "sar"}


def test_every_modality_and_pair_gets_a_gradient():
    head = FusionHead(["a", "b", "c", "d"], 16, 3, None)
    assert len(head.pairs) == 5  # 6 pairs, the first is ``cross``
    wire = {m: torch.randn(6, 2 * 16 * 4, requires_grad=True) for m in head.modalities}
    logits, _ = head(wire)
    logits.sum().backward()
    assert all(wire[m].grad.abs().sum() > 0 for m in head.modalities)
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.pairs.parameters() if p.dim() > 1)


def test_a_network_over_three_modalities_runs_and_its_two_modality_part_is_unchanged():
    spec = ModelSpec(unet=UNetSpec(base_channels=8, num_res_blocks=1), head_channels=16, feature_timesteps=[5, 50])
    two = FedDiffNet({"hsi": 6, "lidar": 2}, 4, spec, seed=3)
    three = FedDiffNet({"hsi": 6, "lidar": 2, "sar": 2}, 4, spec, seed=3)
    for m in ("hsi", "lidar"):  # a station's branch depends on its own modality and the seed only
        for (k, a), (_, b) in zip(two.branches[m].state_dict().items(), three.branches[m].state_dict().items()):
            assert torch.equal(a, b), k
    x = {m: torch.randn(3, c, 8, 8) for m, c in {"hsi": 6, "lidar": 2, "sar": 2}.items()}
    assert three(x)[0].shape == (3, 4)


def train_oa(scene, mods: list[str]) -> float:
    from feddiff.model.centralised import train_centralised

    cfg = Config(
        model=ModelSpec(patch_size=1, unet=UNetSpec(base_channels=8, num_res_blocks=1), head_channels=16, feature_timesteps=[5, 100]),
        train=TrainSpec(seed=0, threads=1, pretrain_steps=20, pretrain_batch=32, epochs=12, batch_size=16),
    )
    return float(train_centralised(cfg, scene, mods, progress=False).metrics["oa"])


def test_three_modalities_beat_the_best_two_modality_subset():
    """Centralised FedDiff on the SAR scene: each pair of modalities misses one designed class
    pair (ploughed vs bare soil without SAR, grass vs trees without LiDAR, red vs grey roof
    without HSI); all three together must beat the best pair clearly. Per pixel (patch size 1):
    a wider patch shows the neighbouring objects, which the generator deals round-robin, and
    with the step floor that context alone lets HSI + SAR separate every class."""
    scene = make_synthetic_scene(SyntheticSpec(seed=3, rows=40, cols=48, bands=12, train_per_class=25, sar=True))
    three = ["hsi", "lidar", "sar"]
    oa = {"+".join(pair): train_oa(scene, list(pair)) for pair in modality_pairs(three)}
    oa["all"] = train_oa(scene, three)
    best_pair = max(v for k, v in oa.items() if k != "all")
    assert oa["all"] > best_pair + 0.02, oa
    assert np.isfinite(list(oa.values())).all()
