"""Checkpoints rebuild the network they were written from, including ones from before a
config key existed."""

from __future__ import annotations

import dataclasses

import torch

from feddiff.config import Config, ModelSpec, UNetSpec
from feddiff.data.normalise import BandStats
from feddiff.model.checkpoint import load_checkpoint, save_checkpoint
from feddiff.model.ensemble import build_net


def _tiny_pixel_model(denoiser: str):
    model = ModelSpec(patch_size=1, denoiser=denoiser, unet=UNetSpec(base_channels=8, channel_mult=[1], num_res_blocks=1, attention=False, freq_block=False, groups=4),
                      feature_timesteps=[5], head_channels=8)
    cfg = Config(model=model)
    net = build_net({"hsi": 8, "lidar": 2}, 3, cfg.model, 0)
    stats = {m: BandStats(mean=torch.zeros(b).numpy(), std=torch.ones(b).numpy()) for m, b in (("hsi", 8), ("lidar", 2))}
    return cfg, net, stats


def test_a_pixel_model_saved_before_the_denoiser_key_loads_with_its_unet(tmp_path):
    cfg, net, stats = _tiny_pixel_model("unet")
    path = tmp_path / "old.pt"
    save_checkpoint(path, net, cfg, stats, ["a", "b", "c"])
    ck = torch.load(path, weights_only=True)
    del ck["config"]["model"]["denoiser"]  # as written before model.denoiser existed
    torch.save(ck, path)
    loaded, meta = load_checkpoint(path)
    assert meta["cfg"].model.denoiser == "unet"
    for (k, a), (k2, b) in zip(net.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b)


def test_a_spectral_pixel_model_round_trips(tmp_path):
    cfg, net, stats = _tiny_pixel_model("auto")
    save_checkpoint(tmp_path / "m.pt", net, cfg, stats, ["a", "b", "c"])
    loaded, meta = load_checkpoint(tmp_path / "m.pt")
    assert meta["cfg"].model.denoiser == "auto"
    assert dataclasses.asdict(meta["cfg"].model) == dataclasses.asdict(cfg.model)
    assert sum(p.numel() for p in loaded.parameters()) == sum(p.numel() for p in net.parameters())
