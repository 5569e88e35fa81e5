"""The mechanism: clipping bounds every released row, noise has the stated scale, the DP head
step equals the plain gradient when noise is off and the clip is loose, and the ledger of
releases survives a restart."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from feddiff.privacy.label_dp import clip_rows, make_ledger, noisy_head_step, noisy_mean_grad, noisy_rows


def test_clip_rows_bounds_norms_and_keeps_short_rows():
    rows = torch.tensor([[3.0, 4.0], [0.3, 0.4], [0.0, 0.0]])
    out = clip_rows(rows, 1.0)
    assert torch.allclose(out[0], torch.tensor([0.6, 0.8]))
    assert torch.allclose(out[1:], rows[1:])


def test_noise_has_the_stated_scale():
    gen = torch.Generator().manual_seed(0)
    out = noisy_rows(torch.zeros(20000, 8), sigma=2.0, clip=0.5, gen=gen)
    assert abs(float(out.std()) - 1.0) < 0.02 and abs(float(out.mean())) < 0.02


def test_noisy_mean_grad_without_noise_is_the_clipped_mean_grad():
    g = torch.randn(16, 4) / 16
    assert torch.allclose(noisy_mean_grad(g, 0.0, 1e6), g, atol=1e-7)
    assert float((noisy_mean_grad(g, 0.0, 1e-3) * 16).norm(dim=1).max()) <= 1e-3 + 1e-7


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_dp_head_step_without_noise_is_the_ordinary_gradient(smoothing):
    torch.manual_seed(0)
    head = nn.Sequential(nn.SiLU(), nn.Linear(6, 5), nn.SiLU(), nn.Linear(5, 3))
    z = torch.randn(10, 6, requires_grad=True)
    y = torch.randint(0, 3, (10,))
    F.cross_entropy(head(z), y, label_smoothing=smoothing).backward()
    params, gz, logits = noisy_head_step(head, z, y, sigma=0.0, clip=1e6, smoothing=smoothing)
    assert torch.allclose(gz, z.grad, atol=1e-6)
    for k, p in head.named_parameters():
        assert torch.allclose(params[k], p.grad, atol=1e-6)
    assert logits.shape == (10, 3)


def test_dp_head_step_clips_the_joint_per_sample_gradient():
    torch.manual_seed(1)
    head = nn.Sequential(nn.SiLU(), nn.Linear(6, 5), nn.SiLU(), nn.Linear(5, 3))
    z, y = torch.randn(4, 6) * 10, torch.randint(0, 3, (4,))
    params, gz, _ = noisy_head_step(head, z, y, sigma=0.0, clip=0.01)
    # each sample contributes at most clip in the joint norm; the rows are mean-form (/ B)
    assert float((gz * 4).norm(dim=1).max()) <= 0.01 + 1e-6
    total = sum(float((g * 4).pow(2).sum()) for g in params.values())
    assert total ** 0.5 <= 4 * 0.01 + 1e-5


def test_ledger_counts_every_release_and_survives_a_restart(tmp_path):
    ledger = make_ledger(tmp_path, 5, sigma=4.0, clip=1.0, delta=1e-5)
    ledger.record([0, 1, 2])
    ledger.record([0, 0, 3])  # sample 0 twice in one step: 4 units
    assert ledger.units.tolist() == [5.0, 1.0, 1.0, 1.0, 0.0]
    saved = json.loads((tmp_path / "label_dp.json").read_text())
    assert saved["max_units"] == 5.0 and saved["epsilon"] > 0
    again = make_ledger(tmp_path, 5, sigma=4.0, clip=1.0, delta=1e-5)
    assert again.units.min() == 5.0  # conservatively, everyone is the worst sample
