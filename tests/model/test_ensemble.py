"""The stage-2 ensemble: members share the denoiser and its features, differ in everything
stage 2 trains, and predict by averaging probabilities; one member is the plain model."""

import dataclasses

import numpy as np
import pytest
import torch

from feddiff.config import ModelSpec, UNetSpec, config_from_dict
from feddiff.data.loader import load_scene
from feddiff.errors import FedDiffError
from feddiff.model.checkpoint import load_checkpoint, save_checkpoint
from feddiff.model.ensemble import EnsembleNet, build_net, check_federable, member_config
from feddiff.model.net import FedDiffNet
from feddiff.model.centralised import train_centralised

SMALL = ModelSpec(unet=UNetSpec(base_channels=8, num_res_blocks=1), head_channels=16, feature_timesteps=[5, 50])
BANDS = {"hsi": 4, "lidar": 2}


def patches(n=6, seed=0):
    g = torch.Generator().manual_seed(seed)
    return {m: torch.randn(n, c, 8, 8, generator=g) for m, c in BANDS.items()}


def test_one_member_is_the_plain_model():
    net = build_net(BANDS, 3, SMALL, seed=4)
    ref = FedDiffNet(BANDS, 3, SMALL, 4)
    assert type(net) is FedDiffNet
    net.eval(), ref.eval()
    x = patches()
    with torch.no_grad():
        assert torch.equal(net(x)[0], ref(x)[0])


def test_members_share_denoiser_and_noise_but_not_what_stage_two_trains():
    net = build_net(BANDS, 3, dataclasses.replace(SMALL, members=3), seed=4)
    assert isinstance(net, EnsembleNet) and len(net.members) == 3
    first, other = net.members[0], net.members[2]
    for m in BANDS:
        assert other.branches[m].unet is first.branches[m].unet
        assert other.branches[m].features is first.branches[m].features
        assert not torch.equal(other.branches[m].raw_path[0].weight, first.branches[m].raw_path[0].weight)
    assert not torch.equal(other.head.cross.classifier.weight, first.head.cross.classifier.weight)
    # member 0 is exactly the plain model of the same seed
    assert torch.equal(first.head.cross.classifier.weight, FedDiffNet(BANDS, 3, SMALL, 4).head.cross.classifier.weight)
    # the shared denoiser is one set of parameters, not three
    unet_params = sum(p.numel() for p in first.branches["hsi"].unet.parameters())
    single = sum(p.numel() for p in FedDiffNet(BANDS, 3, SMALL, 4).parameters())
    total = sum(p.numel() for p in net.parameters())
    lidar_unet = sum(p.numel() for p in first.branches["lidar"].unet.parameters())
    assert total == 3 * single - 2 * (unet_params + lidar_unet)


def test_prediction_is_the_log_of_the_members_mean_probability():
    net = build_net(BANDS, 3, dataclasses.replace(SMALL, members=3), seed=1).eval()
    x = patches()
    with torch.no_grad():
        out = net(x)[0]
        probs = torch.stack([torch.softmax(m(x)[0], 1) for m in net.members]).mean(0)
    assert torch.allclose(out.exp(), probs, atol=1e-6)
    assert torch.allclose(out.exp().sum(1), torch.ones(6), atol=1e-5)


def test_each_member_has_its_own_stage_two_seed():
    cfg = config_from_dict({"scene": {"synthetic": {"seed": 1}}, "train": {"seed": 3}}, "c.yaml")
    seeds = {member_config(cfg, k).train.seed for k in range(4)}
    assert member_config(cfg, 0) is cfg and len(seeds) == 4


def test_federation_refuses_an_ensemble_in_one_line():
    check_federable(SMALL, "job.yaml")
    with pytest.raises(FedDiffError) as e:
        check_federable(dataclasses.replace(SMALL, members=3), "job.yaml")
    msg = str(e.value)
    assert "\n" not in msg and "model.members" in msg and "job.yaml" in msg


def test_members_config_is_range_checked():
    with pytest.raises(FedDiffError, match="model.members"):
        config_from_dict({"scene": {"synthetic": {"seed": 1}}, "model": {"members": 0}}, "c.yaml")


CFG = {
    "scene": {"synthetic": {"seed": 2, "rows": 40, "cols": 48, "bands": 8, "train_per_class": 20}},
    "model": {"unet": {"base_channels": 8, "num_res_blocks": 1}, "head_channels": 16, "feature_timesteps": [5, 100], "comm": {"rank": 8}, "members": 2},
    "train": {"min_steps": 0, "pretrain_steps": 10, "pretrain_batch": 32, "epochs": 4, "batch_size": 16, "threads": 2},
}


def test_ensemble_trains_every_member_and_its_checkpoint_round_trips(tmp_path):
    cfg = config_from_dict(CFG, str(tmp_path / "c.yaml"))
    scene = load_scene(cfg)
    res = train_centralised(cfg, scene, ["hsi", "lidar"], progress=False)
    assert [r["member"] for r in res.history.epochs] == [0] * 4 + [1] * 4
    assert res.metrics["oa"] > 1 / scene.num_classes
    stats = {m: s.stats for m, s in res.sources.items()}
    save_checkpoint(tmp_path / "m.pt", res.net, cfg, stats, scene.class_names, res.metrics)
    net2, _ = load_checkpoint(tmp_path / "m.pt")
    assert isinstance(net2, EnsembleNet)
    assert net2.members[1].branches["hsi"].unet is net2.members[0].branches["hsi"].unet  # still tied after loading
    x = {m: res.sources[m].patches(np.arange(5), np.arange(5)) for m in ("hsi", "lidar")}
    res.net.eval()
    with torch.no_grad():
        assert torch.equal(res.net(x)[0], net2(x)[0])
