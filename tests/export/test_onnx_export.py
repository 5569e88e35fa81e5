"""Export: one graph that ONNX Runtime runs like PyTorch, carrying what a station needs."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from feddiff.errors import FedDiffError


def test_whole_export_matches_pytorch(exported):
    path, res = exported
    assert path.is_file()
    assert res.parity.max_abs_diff <= 1e-4 and res.parity.argmax_agree == 1.0
    print(f"parity max |dlogit| {res.parity.max_abs_diff:.2e}")


def test_metadata_present(exported, tiny):
    import onnx

    path, _ = exported
    model = onnx.load(str(path))
    props = {p.key: p.value for p in model.metadata_props}
    for key in ("class_names", "bands", "modalities", "patch_size", "stats", "timesteps", "version", "config_hash"):
        assert f"feddiff.{key}" in props, key
    assert json.loads(props["feddiff.modalities"]) == ["hsi", "lidar"]
    bands = json.loads(props["feddiff.bands"])
    assert set(bands) == {"hsi", "lidar"} and bands["hsi"] == 16 and bands["lidar"] >= 1
    assert len(json.loads(props["feddiff.stats"])["hsi"]["mean"]) == 16
    assert min(op.version for op in model.opset_import if op.domain in ("", "ai.onnx")) >= 17
    assert model.graph.input[0].type.tensor_type.shape.dim[0].dim_param  # dynamic batch axis


def test_bare_onnxruntime_runs_model_without_feddiff(exported):
    """What a base station does: onnxruntime + numpy, nothing of this project, no torch."""
    path, _ = exported
    code = textwrap.dedent(
        f"""
        import sys, json, numpy as np, onnxruntime as ort
        s = ort.InferenceSession({str(path)!r}, providers=["CPUExecutionProvider"])
        meta = s.get_modelmeta().custom_metadata_map
        bands = json.loads(meta["feddiff.bands"]); p = int(meta["feddiff.patch_size"])
        feeds = {{m: np.random.randn(3, c, p, p).astype(np.float32) for m, c in bands.items()}}
        out = s.run(["logits"], feeds)[0]
        assert out.shape == (3, len(json.loads(meta["feddiff.class_names"])))
        assert not any(m == "torch" or m.startswith("feddiff") for m in sys.modules), "imported"
        print("ok", s.get_providers()[0])
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd="/")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ok")


def test_split_export_equals_whole(exported, tiny):
    from export.onnx_export import export_split, ort_split_logits, ort_whole_logits
    from feddiff.model.checkpoint import load_checkpoint

    path, _ = exported
    net, ck = load_checkpoint(tiny.checkpoint)
    paths = export_split(net, ck, tiny.folder / "split")
    assert set(paths) == {"hsi", "lidar", "fusion"}
    rng = np.random.default_rng(1)
    x = {m: rng.standard_normal((32, net.branches[m].in_channels, 8, 8)).astype(np.float32) for m in net.modalities}
    whole, split = ort_whole_logits(path, x), ort_split_logits(paths, x)
    assert np.abs(whole - split).max() <= 1e-4
    assert (whole.argmax(1) == split.argmax(1)).all()


def test_parity_failure_deletes_output(tmp_path):
    from export.onnx_export import Parity, require_parity

    f = tmp_path / "bad.onnx"
    f.write_bytes(b"x")
    with pytest.raises(FedDiffError, match="disagrees"):
        require_parity(Parity(1.0, 1.0, 4), [f], "export")
    assert not f.exists()


def test_parity_allows_a_rare_code_on_a_rounding_boundary_but_not_more():
    from export.parity import PARITY_TOL, compare

    ref = np.random.default_rng(0).standard_normal((200, 4)).astype(np.float32)
    assert compare(ref, ref + PARITY_TOL / 2).ok
    assert not compare(ref, ref + 2 * PARITY_TOL).ok  # every patch off: a different model
    one = ref.copy()
    one[7] += 1e-3  # one patch one int8 step away
    assert compare(ref, one).ok
    three = ref.copy()
    three[:3] += 1e-3  # 1.5 % of the patches: more than a boundary explains
    assert not compare(ref, three).ok
    far = ref.copy()
    far[7] += 0.1
    assert not compare(ref, far).ok


def test_ensemble_exports_as_one_graph_with_parity_and_refuses_split(tmp_path):
    """model.members > 1: the members share one feature pass inside the graph; the split form
    (one model cut at the wire) cannot hold them, and says so in one line."""
    import yaml

    from export.onnx_export import export_checkpoint
    from feddiff.config import load_config
    from feddiff.data.loader import load_scene
    from feddiff.model.checkpoint import save_checkpoint
    from feddiff.model.centralised import train_centralised
    from tests.export.conftest import write_config

    config = write_config(tmp_path / "scene.yaml")
    doc = yaml.safe_load(config.read_text())
    doc["model"]["members"] = 2
    config.write_text(yaml.safe_dump(doc))
    cfg = load_config(config)
    scene = load_scene(cfg)
    res = train_centralised(cfg, scene, ["hsi", "lidar"], progress=False)
    ck = tmp_path / "model.pt"
    save_checkpoint(ck, res.net, cfg, {m: s.stats for m, s in res.sources.items()}, scene.class_names, res.metrics)
    out = export_checkpoint(ck, tmp_path / "model.onnx", config=str(config), parity_n=64)
    assert out.parity.max_abs_diff <= 1e-4 and out.parity.argmax_agree == 1.0
    import onnx

    props = {p.key: p.value for p in onnx.load(str(tmp_path / "model.onnx")).metadata_props}
    assert props["feddiff.members"] == "2"
    with pytest.raises(FedDiffError) as e:
        export_checkpoint(ck, tmp_path / "split", split=True, config=str(config))
    assert "ensemble of 2" in str(e.value) and "\n" not in str(e.value)
