"""Bad input at the command line: one line on stderr, exit code 2, no traceback, and nothing
the command would have written is overwritten.

Part of the default run (no chaos marker): each case is a `feddiff` subprocess on a tiny
scene, so the whole file takes seconds. The "nothing overwritten" half matters because an
operator reruns a command into the folder holding last week's model: a bad input must fail
before the first write, not halfway through.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.io
import yaml

from tests.chaos.jobkit import cli

ROWS, COLS = 16, 16
OLD = {"model.pt": b"previous checkpoint, must survive", "train_report.json": b'{"oa": 0.9}'}


def assert_one_line_error(r, *needles: str) -> str:
    """Exit 2; stderr is exactly one line, names the problem; no Python traceback anywhere."""
    assert r.returncode == 2, (r.returncode, r.stdout[-500:], r.stderr[-2000:])
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


def old_outputs(out: Path) -> dict[str, bytes]:
    out.mkdir(parents=True, exist_ok=True)
    for name, data in OLD.items():
        (out / name).write_bytes(data)
    return {p.name: p.read_bytes() for p in out.iterdir()}


def unchanged(out: Path, before: dict[str, bytes]) -> bool:
    return {p.name: p.read_bytes() for p in out.iterdir()} == before


def scene(tmp_path: Path, hsi=None, lidar=None, train=None, test=None, hsi_name="hsi.npy") -> Path:
    """A file-based scene (16 x 16, 6 HSI bands, 1 LiDAR band, 3 classes); any array can be
    replaced by a broken one."""
    rng = np.random.default_rng(0)
    labels = rng.integers(1, 4, (ROWS, COLS))
    half = rng.random((ROWS, COLS)) < 0.5
    arrays = {
        hsi_name: rng.random((ROWS, COLS, 6)).astype(np.float32) if hsi is None else hsi,
        "lidar.npy": rng.random((ROWS, COLS)).astype(np.float32) if lidar is None else lidar,
        "train.npy": np.where(half, labels, 0) if train is None else train,
        "test.npy": np.where(half, 0, labels) if test is None else test,
    }
    for name, arr in arrays.items():
        if isinstance(arr, bytes):
            (tmp_path / name).write_bytes(arr)
        elif name.endswith(".mat"):
            scipy.io.savemat(tmp_path / name, {"X": arr})
        else:
            np.save(tmp_path / name, arr)
    hsi_src = {"path": hsi_name, "key": "X"} if hsi_name.endswith(".mat") else {"path": hsi_name}
    doc = {
        "name": "bad",
        "scene": {"modalities": {"hsi": hsi_src, "lidar": {"path": "lidar.npy"}}, "train_labels": {"path": "train.npy"}, "test_labels": {"path": "test.npy"}},
        "model": {"unet": {"base_channels": 4, "num_res_blocks": 1, "groups": 4}, "head_channels": 8, "feature_timesteps": [5], "comm": {"rank": 4}},
        "train": {"min_steps": 0, "pretrain_steps": 1, "epochs": 1, "threads": 1},
    }
    cfg = tmp_path / "scene.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    return cfg


def train_into(cfg: Path, out: Path):
    return cli("train", "--config", str(cfg), "--out", str(out))


def test_malformed_yaml(tmp_path):
    """A tab or an unclosed bracket: the line and column, not a PyYAML traceback."""
    cfg = tmp_path / "job.yaml"
    cfg.write_text("name: x\nscene: {synthetic: {seed: 1}\ntrain:\n  epochs: [1\n")
    before = old_outputs(tmp_path / "out")
    line = assert_one_line_error(train_into(cfg, tmp_path / "out"), str(cfg), "malformed YAML", "line")
    assert unchanged(tmp_path / "out", before), line


def test_nans_in_a_raster(tmp_path):
    """One NaN in 1,536 values is enough to poison a model: refused, and located."""
    hsi = np.random.default_rng(1).random((ROWS, COLS, 6)).astype(np.float32)
    hsi[3, 4, 5] = np.nan
    before = old_outputs(tmp_path / "out")
    assert_one_line_error(train_into(scene(tmp_path, hsi=hsi), tmp_path / "out"), "NaN", "row 3, col 4, band 5")
    assert unchanged(tmp_path / "out", before)


def test_label_map_of_another_size(tmp_path):
    """A test map cut from another scene (12 x 16 against 16 x 16 rasters)."""
    test = np.ones((12, COLS), dtype=np.int64)
    before = old_outputs(tmp_path / "out")
    assert_one_line_error(train_into(scene(tmp_path, test=test), tmp_path / "out"), "12 x 16", "16 x 16")
    assert unchanged(tmp_path / "out", before)


def test_truncated_mat(tmp_path):
    """A .mat cut off mid-download: the file is named, scipy's traceback is not shown."""
    good = tmp_path / "good.mat"
    scipy.io.savemat(good, {"X": np.random.default_rng(2).random((ROWS, COLS, 6))})
    data = good.read_bytes()
    before = old_outputs(tmp_path / "out")
    cfg = scene(tmp_path, hsi=data[: len(data) // 2], hsi_name="hsi.mat")
    assert_one_line_error(train_into(cfg, tmp_path / "out"), "hsi.mat", "unreadable")
    assert unchanged(tmp_path / "out", before)


# -- inference: a cube of the wrong band count, an ONNX file of another model ------------------

@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A FedDiff model trained for 6 HSI bands, exported to ONNX (skipped where export has not
    landed)."""
    pytest.importorskip("export.onnx_export", reason="ONNX export (feddiff export) is not built")
    from feddiff.config import load_config
    from feddiff.data.loader import load_scene
    from feddiff.model.checkpoint import save_checkpoint
    from feddiff.model.centralised import train_centralised
    from export.onnx_export import export_checkpoint

    folder = tmp_path_factory.mktemp("onnx")
    cfg_path = scene(folder)
    cfg = load_config(cfg_path)
    sc = load_scene(cfg)
    res = train_centralised(cfg, sc, ["hsi", "lidar"], progress=False)
    save_checkpoint(folder / "model.pt", res.net, cfg, {m: s.stats for m, s in res.sources.items()}, sc.class_names, res.metrics)
    onnx_path = folder / "model.onnx"
    export_checkpoint(folder / "model.pt", onnx_path, parity_n=16)
    return onnx_path


def old_maps(out: Path) -> dict[str, bytes]:
    out.mkdir(parents=True, exist_ok=True)
    for name in ("class_map.tif", "classification_map.png", "metrics.json"):
        (out / name).write_bytes(f"last week's {name}".encode())
    return {p.name: p.read_bytes() for p in out.iterdir()}


def test_cube_with_the_wrong_band_count_for_the_model(tmp_path, exported):
    """A 9-band cube given to a model trained on 6 bands: expected and actual counts."""
    cfg = scene(tmp_path, hsi=np.random.default_rng(3).random((ROWS, COLS, 9)).astype(np.float32))
    before = old_maps(tmp_path / "out")
    r = cli("infer", "--model", str(exported), "--config", str(cfg), "--out", str(tmp_path / "out"), "--provider", "cpu")
    assert_one_line_error(r, "hsi", "expected 6 bands, got 9")
    assert unchanged(tmp_path / "out", before)


def test_onnx_file_of_another_model(tmp_path):
    """A valid ONNX graph that is not a FedDiff classifier (no FedDiff metadata)."""
    pytest.importorskip("export.infer", reason="inference (feddiff infer) is not built")
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3])
    model = helper.make_model(helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "other", [x], [y]), opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    other = tmp_path / "other.onnx"
    onnx.save(model, str(other))
    before = old_maps(tmp_path / "out")
    r = cli("infer", "--model", str(other), "--config", str(scene(tmp_path)), "--out", str(tmp_path / "out"), "--provider", "cpu")
    assert_one_line_error(r, "other.onnx", "not a FedDiff ONNX model")
    assert unchanged(tmp_path / "out", before)


# -- keys of another job ---------------------------------------------------------------------

@pytest.fixture(scope="module")
def two_jobs(tmp_path_factory):
    from crypto.provision import init_job, issue

    root = tmp_path_factory.mktemp("keys")
    for job in ("job_a", "job_b"):
        init_job(job, root / job)
        for role, name in (("aggregator", "aggregator"), ("edge", "hsi_station"), ("edge", "lidar_station")):
            issue(root / job, role, name)
    return root


def test_party_keys_of_another_job_are_refused(two_jobs, tmp_path):
    """job_a's folder with hsi_station's keys copied in from job_b (a mixed-up deployment)."""
    from crypto.keys import load_party
    from feddiff.errors import FedDiffError

    mixed = tmp_path / "job_a"
    shutil.copytree(two_jobs / "job_a", mixed)
    shutil.rmtree(mixed / "parties" / "hsi_station")
    shutil.copytree(two_jobs / "job_b" / "parties" / "hsi_station", mixed / "parties" / "hsi_station")
    with pytest.raises(FedDiffError, match="job_b"):
        load_party(mixed, "hsi_station")
    load_party(mixed, "lidar_station")  # the rest of the folder is still fine


def test_directory_of_another_job_is_refused(two_jobs, tmp_path):
    """job_b's signed directory dropped into job_a's folder: the signature does not verify
    under job_a's root key."""
    from crypto.directory import load_directory
    from feddiff.errors import FedDiffError

    mixed = tmp_path / "job_a"
    shutil.copytree(two_jobs / "job_a", mixed)
    for f in ("directory.json", "directory.json.sig"):
        shutil.copy(two_jobs / "job_b" / f, mixed / f)
    with pytest.raises(FedDiffError, match="does not verify|job_b"):
        load_directory(mixed)


def test_station_started_with_another_jobs_keys_exits_2_before_touching_its_state(two_jobs, tmp_path):
    """The whole path an operator hits: `feddiff edge` of a signed job whose keys_dir is job_b's
    while the job is job_a. One line, exit 2, before any connection or state write."""
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "k",
        "scene": {"synthetic": {"rows": 16, "cols": 16, "bands": 4, "train_per_class": 2}},
        "model": {"unet": {"base_channels": 4, "num_res_blocks": 1, "groups": 4}, "head_channels": 8, "feature_timesteps": [5], "comm": {"rank": 4}},
        "train": {"threads": 1, "min_steps": 0},
        "federation": {"job": "job_a", "security": "signed", "keys_dir": str(two_jobs / "job_b"), "state_dir": str(tmp_path / "state"),
                       "broker": {"port": 1}, "clients": {"hsi_station": {"modalities": ["hsi"]}, "lidar_station": {"modalities": ["lidar"]}}},
    }))
    sdir = tmp_path / "state" / "hsi_station"
    sdir.mkdir(parents=True)
    (sdir / "station.json").write_text(json.dumps({"committed_round": 4, "seq": 99}))
    before = {p.name: p.read_bytes() for p in sdir.iterdir() if p.suffix != ".jsonl"}
    r = cli("edge", "--config", str(cfg), "--id", "hsi_station")
    assert_one_line_error(r, "job_b", "job_a")
    assert {p.name: p.read_bytes() for p in sdir.iterdir() if p.suffix != ".jsonl"} == before
