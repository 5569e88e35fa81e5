"""The spectral denoiser: picked by patch size, a drop-in under DiffusionFeatures, and it learns."""

import dataclasses

import numpy as np
import pytest
import torch

from feddiff.config import ConfigError, ModelSpec, UNetSpec, config_from_dict
from feddiff.model.branch import denoiser_kind, make_schedule
from feddiff.model.net import FedDiffNet, build_branch
from feddiff.model.schedule import denoising_loss
from feddiff.model.spectral import SpectralDenoiser
from feddiff.model.unet import DenoisingUNet

SMALL = ModelSpec(unet=UNetSpec(base_channels=8, num_res_blocks=1), head_channels=16, feature_timesteps=[5, 50], patch_size=1)


@pytest.mark.parametrize("patch, denoiser, want", [(1, "auto", SpectralDenoiser), (8, "auto", DenoisingUNet), (1, "unet", DenoisingUNet), (8, "spectral", SpectralDenoiser)])
def test_denoiser_is_picked_by_patch_size_unless_named(patch, denoiser, want):
    spec = dataclasses.replace(SMALL, patch_size=patch, denoiser=denoiser)
    assert isinstance(build_branch(6, spec, 0, "hsi").unet, want)
    assert denoiser_kind(spec) == ("spectral" if want is SpectralDenoiser else "unet")


def test_denoiser_field_is_validated_in_one_line():
    with pytest.raises(ConfigError, match="model.denoiser: expected one of auto, unet, spectral"):
        config_from_dict({"model": {"denoiser": "mlp"}}, check_files=False)
    assert config_from_dict({"model": {"denoiser": "spectral"}}, check_files=False).model.denoiser == "spectral"


@pytest.mark.parametrize("bands, patch", [(65, 1), (2, 1), (200, 1), (5, 3)])
def test_shapes_and_feature_width_match_the_unet_spec(bands, patch):
    d = SpectralDenoiser(bands, patch, UNetSpec(8, [1, 2], 2))
    x, t = torch.randn(4, bands, patch, patch), torch.tensor([0, 3, 250, 499])
    assert d(x, t).shape == x.shape
    assert d.encode(x, t).shape == (4, 16, patch, patch) and d.mid_channels == DenoisingUNet(bands, 8, UNetSpec(8, [1, 2], 2)).mid_channels


def test_each_pixel_is_denoised_from_its_own_spectrum():
    """Per pixel by construction: changing one pixel of a patch changes no other pixel's output."""
    d = SpectralDenoiser(6, 3, UNetSpec(8, [1, 2], 1)).eval()
    x = torch.randn(2, 6, 3, 3)
    y = x.clone()
    y[:, :, 1, 1] += 5.0
    t = torch.tensor([10, 10])
    with torch.no_grad():
        diff = (d(x, t) - d(y, t)).abs().sum(dim=1)
    assert diff[:, 1, 1].min() > 0 and diff.flatten(1)[:, [0, 1, 2, 3, 5, 6, 7, 8]].max() == 0


def test_diffusion_features_work_unchanged_over_it():
    """The stem shortcut of DiffusionFeatures must equal the direct noisy encode for this
    denoiser too, and features are deterministic and branch-seeded as for the U-Net."""
    f = build_branch(12, SMALL, 0, "hsi").features
    assert isinstance(f.unet, SpectralDenoiser)
    with torch.no_grad():
        x = torch.randn(5, 12, 1, 1)
        assert torch.equal(f(x), build_branch(12, SMALL, 0, "hsi").features(x))
        for p in f.unet.conv_in.parameters():
            p.add_(0.5 * torch.randn_like(p))
        x = torch.randn(5, 12, 1, 1)
        got = f(x)
        c = f.unet.mid_channels
        assert got.shape == (5, 2 * c, 1, 1)
        for k, t in enumerate(f.timesteps):
            want = f.unet.encode(f.sqrt_ab[k] * x + f.sqrt_1mab[k] * f.noise[k], torch.full((5,), t, dtype=torch.long))
            assert torch.allclose(got[:, k * c : (k + 1) * c], want, atol=1e-5)


def test_it_learns_to_denoise_spectra():
    """Trained with the schedule's loss on smooth spectra, its noise prediction over random
    timesteps beats both the zero guess (L1 = E|n| = 0.80) and itself untrained."""
    torch.manual_seed(0)
    bands = 16
    wl = torch.linspace(0, 1, bands)

    def spectra(n):
        a, c = torch.rand(n, 1), torch.rand(n, 1)
        return (a * torch.sin(3 * wl + 2 * c) + c * wl)[:, :, None, None]

    d = SpectralDenoiser(bands, 1, UNetSpec(16, [1, 2], 1))
    sched = make_schedule(SMALL)
    x0, t, n = spectra(512), sched.sample_timesteps(512), torch.randn(512, bands, 1, 1)

    def held_out_loss():
        with torch.no_grad():
            return denoising_loss(d(sched.add_noise(x0, t, n), t), n).item()

    before = held_out_loss()
    opt = torch.optim.AdamW(d.parameters(), lr=3e-3)
    for _ in range(150):
        xb, tb = spectra(64), sched.sample_timesteps(64)
        nb = torch.randn_like(xb)
        loss = denoising_loss(d(sched.add_noise(xb, tb, nb), tb), nb)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = held_out_loss()
    assert after < 0.7 and after < 0.8 * before, (before, after)


def test_a_pixel_table_model_trains_and_predicts():
    """The whole classifier at patch size 1 with the spectral branch: a forward and backward
    through both branches and the head reach every trainable weight."""
    net = FedDiffNet({"hsi": 30, "lidar": 2}, 4, SMALL)
    for b in net.branches.values():
        b.freeze_denoiser()
    logits, singles = net({"hsi": torch.randn(8, 30, 1, 1), "lidar": torch.randn(8, 2, 1, 1)})
    assert logits.shape == (8, 4) and set(singles) == {"hsi", "lidar"}
    logits.sum().backward()
    trainable = [(n, p) for n, p in net.named_parameters() if p.requires_grad]
    assert trainable and all(p.grad is not None for n, p in trainable if "pairs" not in n and "single" not in n)
    assert not any(p.requires_grad for b in net.branches.values() for p in b.unet.parameters())
    assert np.isfinite(logits.detach().numpy()).all()
