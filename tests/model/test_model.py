"""The FedDiff model's parts, each pinned by a property that can fail."""

import dataclasses

import numpy as np
import pytest
import torch

from feddiff.config import ModelSpec, UNetSpec
from feddiff.model.comm import LowRankDecoder, LowRankEncoder, init_from_pca, payload_bytes, quantise, raw_bytes
from feddiff.model.fusion import FusionHead, GatedFusion
from feddiff.model.losses import feddiff_loss, l2_penalty
from feddiff.model.net import FedDiffNet, build_branch
from feddiff.model.schedule import NoiseSchedule, denoising_loss
from feddiff.model.unet import DenoisingUNet, SpectralMixing

SMALL = ModelSpec(unet=UNetSpec(base_channels=8, num_res_blocks=1), head_channels=16, feature_timesteps=[5, 50])


@pytest.mark.parametrize("kind", ["linear", "cosine"])
def test_alpha_bar_decreases_monotonically(kind):
    s = NoiseSchedule(500, kind)
    ab = s.alpha_bar
    assert (ab[1:] < ab[:-1]).all() and 0 < ab[-1] < ab[0] <= 1


def test_add_noise_statistics():
    s = NoiseSchedule(500)
    x0 = torch.full((20000, 1), 2.0)
    t = torch.full((20000,), 300)
    xt = s.add_noise(x0, t, torch.randn_like(x0))
    ab = s.alpha_bar[300]
    assert xt.mean().item() == pytest.approx(2.0 * ab.sqrt().item(), abs=0.03)
    assert xt.std().item() == pytest.approx((1 - ab).sqrt().item(), abs=0.03)
    assert denoising_loss(torch.zeros(3), torch.ones(3)) == 1.0 and denoising_loss(torch.zeros(3), 2 * torch.ones(3), "mse") == 4.0


@pytest.mark.parametrize("h, w", [(6, 8), (8, 8), (4, 4), (7, 5), (1, 1)])
def test_spectral_block_is_the_complex_fft_filter(h, w):
    m = SpectralMixing(4, h, w)
    with torch.no_grad():
        m.wi.normal_()  # a strong imaginary part: the phase-shifting half must be exact too
    x = torch.randn(3, 4, h, w)
    ref = torch.fft.irfft2(torch.einsum("oc,bchw->bohw", torch.complex(m.wr, m.wi), torch.fft.rfft2(x)), s=(h, w))
    assert torch.allclose(m(x), ref, atol=1e-5)


@pytest.mark.parametrize("bands, patch", [(63, 8), (2, 8), (144, 7), (5, 11), (3, 1)])
def test_unet_shapes(bands, patch):
    u = DenoisingUNet(bands, patch, UNetSpec(8, [1, 2], 1))
    x, t = torch.randn(2, bands, patch, patch), torch.tensor([3, 400])
    assert u(x, t).shape == x.shape
    m = -(-patch // 2)
    assert u.encode(x, t).shape == (2, 16, m, m)


def test_fr_block_and_head_shapes_are_symmetric():
    fr = GatedFusion(16)
    a, b = torch.randn(4, 16, 2, 2), torch.randn(4, 16, 2, 2)
    assert fr(a, b).shape == fr(b, a).shape == a.shape
    head = FusionHead(["hsi", "lidar"], 16, 5, rank=8)
    logits, singles = head({"hsi": torch.randn(4, 8), "lidar": torch.randn(4, 8)})
    assert logits.shape == (4, 5) and set(singles) == {"hsi", "lidar"} and all(s.shape == (4, 5) for s in singles.values())


def test_head_dropout_acts_only_in_training_and_adds_no_weights():
    """Dropout regularises stage 2 but must leave inference, export and old checkpoints alone."""
    plain, dropped = FusionHead(["hsi", "lidar"], 16, 5, rank=8), FusionHead(["hsi", "lidar"], 16, 5, rank=8, dropout=0.5)
    dropped.load_state_dict(plain.state_dict())  # same weights: a checkpoint from before still loads
    wire = {"hsi": torch.randn(32, 8), "lidar": torch.randn(32, 8)}
    plain.eval()
    dropped.eval()
    assert torch.equal(plain(wire)[0], dropped(wire)[0])
    dropped.train()
    torch.manual_seed(0)
    first = dropped(wire)[0]
    assert not torch.equal(first, dropped(wire)[0])


def test_diffusion_map_drop_zeroes_whole_maps_in_training_only():
    """Dropped pixels keep their raw maps and lose the whole diffusion map; the kept ones are
    rescaled, so inference (and export) see the head exactly as trained on average."""
    plain, dropped = FusionHead(["hsi", "lidar"], 16, 5, rank=8), FusionHead(["hsi", "lidar"], 16, 5, rank=8, diff_dropout=0.5)
    dropped.load_state_dict(plain.state_dict())
    wire = {"hsi": torch.randn(32, 8), "lidar": torch.randn(32, 8)}
    plain.eval()
    dropped.eval()
    assert torch.equal(plain(wire)[0], dropped(wire)[0])
    per_pixel = dropped._drop_map(torch.ones(256, 16, 2, 2), torch.Generator().manual_seed(0)).flatten(1)
    assert set(per_pixel.min(dim=1).values.tolist()) == set(per_pixel.max(dim=1).values.tolist()) == {0.0, 2.0}


def test_lowrank_error_falls_with_rank_and_bytes_match_formula():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 16, generator=g) @ torch.randn(16, 128, generator=g) + 0.05 * torch.randn(256, 128, generator=g)
    errors = []
    for r in (2, 4, 8, 16):
        enc, dec = LowRankEncoder(128, r), LowRankDecoder(128, r)
        init_from_pca(enc, dec, x)
        packed = enc.pack(x)
        assert packed.nbytes() == payload_bytes(256, r, 8) == 256 * r + 256 * 4
        errors.append(((dec(packed.codes.float() * packed.scale[:, None]) - x) ** 2).mean().item())
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert raw_bytes(256, 128) / payload_bytes(256, 16, 8) >= 16


def test_quantiser_straight_through_gradient():
    enc = LowRankEncoder(10, 4)
    x = torch.randn(3, 10, requires_grad=True)
    enc(x).sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    q = quantise(torch.tensor([[0.5, -1.0]]), 8)
    assert q.codes.dtype == torch.int8 and q.codes.abs().max() == 127


def test_l2_term_is_real():
    net = FedDiffNet({"hsi": 4, "lidar": 2}, 3, SMALL)
    logits, singles = net({"hsi": torch.randn(5, 4, 8, 8), "lidar": torch.randn(5, 2, 8, 8)})
    y = torch.tensor([0, 1, 2, 0, 1])
    base, p0 = feddiff_loss(logits, singles, y, net.named_parameters(), 1.0, 0.0)
    reg, p1 = feddiff_loss(logits, singles, y, net.named_parameters(), 1.0, 1e-3)
    assert p0["l2"] == 0 and p1["l2"] > 0
    assert reg.item() == pytest.approx(base.item() + 1e-3 * l2_penalty(net.named_parameters()).item(), rel=1e-5)
    assert p1["mse"] > 0 and p1["ce"] > 0


def test_without_the_mse_tie_skipping_the_single_streams_changes_no_gradient():
    x = {"hsi": torch.randn(5, 4, 8, 8), "lidar": torch.randn(5, 2, 8, 8)}
    y = torch.tensor([0, 1, 2, 0, 1])
    grads = []
    for with_singles in (True, False):
        torch.manual_seed(0)
        net = FedDiffNet({"hsi": 4, "lidar": 2}, 3, SMALL)
        logits, singles = net(x, with_singles=with_singles)
        assert bool(singles) == with_singles
        loss, _ = feddiff_loss(logits, singles, y, net.named_parameters(), 0.0, 1e-3)
        loss.backward()
        grads.append({n: torch.zeros_like(p) if p.grad is None else p.grad for n, p in net.named_parameters()})
    assert all(torch.equal(grads[0][n], grads[1][n]) for n in grads[0])


def test_diffusion_features_are_deterministic_and_branch_seeded():
    a = build_branch(4, SMALL, 0, "hsi")
    b = build_branch(4, SMALL, 0, "hsi")
    x = torch.randn(3, 4, 8, 8)
    with torch.no_grad():
        assert torch.equal(a.features(x), b.features(x))
        assert torch.equal(a.flat_features(x), b.flat_features(x))
    assert a.features(x).shape == (3, 2 * 16, 4, 4)


@pytest.mark.parametrize("patch", [8, 7])
def test_diffusion_features_equal_the_direct_noisy_encode(patch):
    """The shared stem and per-timestep passes are shortcuts, not a different feature: each
    timestep's block must equal encode(sqrt(ab) x + sqrt(1 - ab) noise, t) computed directly
    (7 x 7 patches also check the replicate padding commutes with the shortcut)."""
    spec = dataclasses.replace(SMALL, patch_size=patch)
    f = build_branch(4, spec, 0, "hsi").features
    with torch.no_grad():
        for p in f.unet.conv_in.parameters():
            p.add_(0.5 * torch.randn_like(p))  # a non-trivial bias too
        x = torch.randn(5, 4, patch, patch)
        got = f(x)
        c = f.unet.mid_channels
        for k, t in enumerate(f.timesteps):
            xt = f.sqrt_ab[k] * x + f.sqrt_1mab[k] * f.noise[k]
            want = f.unet.encode(xt, torch.full((5,), t, dtype=torch.long))
            assert torch.allclose(got[:, k * c : (k + 1) * c], want, atol=1e-5)


def test_label_smoothing_charges_a_certain_correct_prediction():
    """A smoothed target keeps eps / K of the mass on every class, so a prediction certain of the
    right class still pays for the wrong ones: (eps / K) * (sum of their log-probability gaps)."""
    logits = torch.tensor([[20.0, -20.0, -20.0]])
    y = torch.tensor([0])
    hard, _ = feddiff_loss(logits, {}, y, (), 0.0, 0.0)
    soft, parts = feddiff_loss(logits, {}, y, (), 0.0, 0.0, smoothing=0.1)
    assert hard.item() < 1e-6
    assert soft.item() == pytest.approx(0.1 / 3 * (40.0 + 40.0), rel=1e-4)
    assert parts["ce"] == pytest.approx(soft.item())
