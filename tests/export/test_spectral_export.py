"""A pixel-table model (patch size 1, spectral denoiser) exports like the U-Net one: ONNX
Runtime's logits within 1e-4 of PyTorch's, as one graph and cut at the wire; three modalities
too, so the pairwise fusion head and a third station graph go through the same check."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from export.onnx_export import PARITY_TOL, export_checkpoint, ort_split_logits, ort_whole_logits, torch_logits
from feddiff.model.checkpoint import load_checkpoint
from feddiff.model.spectral import SpectralDenoiser
from tests.export.conftest import TINY, Tiny, train_tiny, with_overrides

PIXELS = {  # TINY's scene and model, per pixel and with a third modality
    **with_overrides(TINY, {
        "name": "pixels",
        "scene": {"synthetic": {"seed": 2, "bands": 20, "sar": True}},
        "model": {"patch_size": 1, "unet": {"base_channels": 16}},
    }),
    # its own training: longer pretraining, the default validation split and self-training
    "train": {"min_steps": 0, "seed": 0, "threads": 1, "pretrain_steps": 30, "pretrain_batch": 32, "epochs": 2, "batch_size": 16},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Tiny:
    config = tmp_path_factory.mktemp("pixels") / "pixels.yaml"
    config.write_text(yaml.safe_dump(PIXELS))
    return train_tiny(config)


def test_checkpoint_rebuilds_the_spectral_three_modality_model(trained):
    net, _ = load_checkpoint(trained.checkpoint)
    assert net.modalities == ["hsi", "lidar", "sar"]
    assert all(isinstance(b.unet, SpectralDenoiser) for b in net.branches.values())
    assert len(net.head.pairs) == 2  # (hsi, sar) and (lidar, sar) beside the cross stream


def test_whole_graph_parity(trained):
    folder, config, ck = trained.folder, trained.config, trained.checkpoint
    res = export_checkpoint(ck, folder / "whole.onnx", config=str(config), parity_n=128)
    assert res.parity.max_abs_diff <= PARITY_TOL and res.parity.argmax_agree == 1.0
    net, _ = load_checkpoint(ck)
    rng = np.random.default_rng(1)
    wild = {m: 3 * rng.standard_normal((64, b.in_channels, 1, 1)).astype(np.float32) for m, b in net.branches.items()}
    assert np.abs(torch_logits(net, wild) - ort_whole_logits(folder / "whole.onnx", wild)).max() <= PARITY_TOL


def test_split_graphs_parity(trained):
    folder, config, ck = trained.folder, trained.config, trained.checkpoint
    res = export_checkpoint(ck, folder / "split", split=True, config=str(config), parity_n=128)
    assert set(res.paths) == {"hsi", "lidar", "sar", "fusion"}
    assert res.parity.max_abs_diff <= PARITY_TOL and res.parity.argmax_agree == 1.0
    net, _ = load_checkpoint(ck)
    rng = np.random.default_rng(2)
    patches = {m: rng.standard_normal((32, b.in_channels, 1, 1)).astype(np.float32) for m, b in net.branches.items()}
    ref = torch_logits(net, patches)
    # codes are int8 on both sides; a code rounding the other way moves a logit far more than
    # 1e-4, so agreement is checked where it is defined: the same argmax, near-equal logits
    got = ort_split_logits(res.paths, patches)
    assert (ref.argmax(1) == got.argmax(1)).mean() >= 0.97 and np.median(np.abs(ref - got)) <= PARITY_TOL
