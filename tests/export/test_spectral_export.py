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

PIXELS = {
    "name": "pixels",
    "scene": {"synthetic": {"seed": 2, "rows": 32, "cols": 40, "bands": 20, "train_per_class": 10, "sar": True}},
    "model": {
        "patch_size": 1,
        "unet": {"base_channels": 16, "channel_mult": [1, 2], "num_res_blocks": 1},
        "feature_timesteps": [5, 50, 150],
        "head_channels": 16,
        "comm": {"rank": 8, "bits": 8},
    },
    "train": {"seed": 0, "threads": 1, "pretrain_steps": 30, "pretrain_batch": 32, "epochs": 2, "batch_size": 16},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from feddiff.config import load_config
    from feddiff.data.loader import load_scene
    from feddiff.model.checkpoint import save_checkpoint
    from feddiff.model.centralised import train_centralised

    folder = tmp_path_factory.mktemp("pixels")
    config = folder / "pixels.yaml"
    config.write_text(yaml.safe_dump(PIXELS))
    cfg = load_config(config)
    scene = load_scene(cfg)
    res = train_centralised(cfg, scene, list(scene.modalities), progress=False)
    ck = folder / "model.pt"
    save_checkpoint(ck, res.net, cfg, {m: s.stats for m, s in res.sources.items()}, scene.class_names, res.metrics)
    return folder, config, ck


def test_checkpoint_rebuilds_the_spectral_three_modality_model(trained):
    _, _, ck = trained
    net, _ = load_checkpoint(ck)
    assert net.modalities == ["hsi", "lidar", "sar"]
    assert all(isinstance(b.unet, SpectralDenoiser) for b in net.branches.values())
    assert len(net.head.pairs) == 2  # (hsi, sar) and (lidar, sar) beside the cross stream


def test_whole_graph_parity(trained):
    folder, config, ck = trained
    res = export_checkpoint(ck, folder / "whole.onnx", config=str(config), parity_n=128)
    assert res.parity.max_abs_diff <= PARITY_TOL and res.parity.argmax_agree == 1.0
    net, _ = load_checkpoint(ck)
    rng = np.random.default_rng(1)
    wild = {m: 3 * rng.standard_normal((64, b.in_channels, 1, 1)).astype(np.float32) for m, b in net.branches.items()}
    assert np.abs(torch_logits(net, wild) - ort_whole_logits(folder / "whole.onnx", wild)).max() <= PARITY_TOL


def test_split_graphs_parity(trained):
    folder, config, ck = trained
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
