"""Inference: torch-free whole-scene classification, maps, metrics, honest provider, clear errors."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from feddiff.errors import FedDiffError

from .conftest import write_config

ROOT = Path(__file__).resolve().parents[2]


def test_infer_writes_maps_and_metrics_without_torch(exported, tiny):
    path, _ = exported
    out = tiny.folder / "infer"
    code = textwrap.dedent(
        f"""
        import sys
        from feddiff_app.cli import main
        rc = main(["infer", "--model", {str(path)!r}, "--config", {str(tiny.config)!r}, "--out", {str(out)!r}, "--batch", "256"])
        assert rc == 0, rc
        assert "torch" not in sys.modules, "infer imported torch"
        """
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "[infer] provider: CPUExecutionProvider" in r.stdout or "[infer] provider: CUDAExecutionProvider" in r.stdout
    for name in ("class_map.tif", "classification_map.png", "metrics.json"):
        assert (out / name).is_file(), name
    m = json.loads((out / "metrics.json").read_text())
    assert 0.0 <= m["oa"] <= 1.0 and "kappa" in m and len(m["per_class"]) == 6
    assert m["provider"] in ("CPUExecutionProvider", "CUDAExecutionProvider")
    import rasterio

    with rasterio.open(out / "class_map.tif") as ds:
        assert ds.shape == (32, 40) and ds.colormap(1)


def test_provider_is_what_the_session_runs(exported):
    from export.infer import open_session

    sess, used = open_session(exported[0], "auto")
    assert used == sess.get_providers()[0]
    _, cpu = open_session(exported[0], "cpu")
    assert cpu == "CPUExecutionProvider"


def test_wrong_band_count_is_one_line_error(exported, tiny):
    from export.infer import run_inference

    bad = write_config(tiny.folder / "bad.yaml", {"bands": 12})
    with pytest.raises(FedDiffError) as err:
        run_inference(exported[0], str(bad), tiny.folder / "bad_out", progress=False)
    msg = str(err.value)
    assert "\n" not in msg and "hsi" in msg and "expected 16" in msg and "got 12" in msg


def test_missing_modality_is_named(exported):
    import numpy as np

    from export.infer import check_scene, open_session, session_meta

    meta = session_meta(open_session(exported[0], "cpu")[0])
    with pytest.raises(FedDiffError, match="modality lidar"):
        check_scene(meta, {"hsi": np.zeros((4, 4, 16), np.float32)}, "scene.yaml")


def test_int8_and_fp16_models_run_and_report_oa(tiny):
    from export.infer import run_inference
    from export.onnx_export import export_checkpoint

    fp32_size = None
    for q in ("int8", "fp16"):
        path = tiny.folder / f"model.{q}.onnx"
        res = export_checkpoint(tiny.checkpoint, path, quantize=q, config=str(tiny.config), parity_n=64)
        assert res.quantized is not None and res.quantized.argmax_agree >= 0.8
        inf = run_inference(path, str(tiny.config), tiny.folder / f"infer_{q}", batch=512, progress=False)
        assert inf.metrics is not None and 0.0 <= inf.metrics["oa"] <= 1.0
        print(f"{q}: OA {inf.metrics['oa']:.4f}, argmax agreement with PyTorch {res.quantized.argmax_agree:.4f}")


def test_cpu_schedule_is_one_single_threaded_worker_per_core_unless_told():
    from export.infer import plan_schedule, usable_cores

    auto = plan_schedule(cuda=False)
    assert (auto.workers, auto.threads) == (usable_cores(), 1 if usable_cores() > 1 else 0)
    assert (plan_schedule(cuda=True).workers, plan_schedule(cuda=True).threads) == (1, 0)
    told = plan_schedule(cuda=False, workers=1, threads=2)
    assert (told.workers, told.threads) == (1, 2)
    assert str(plan_schedule(cuda=False, workers=2, threads=1)) == "2 workers x 1 intra-op thread"


def test_negative_schedule_is_one_line_error():
    from export.infer import plan_schedule

    with pytest.raises(FedDiffError, match="--workers and --threads must be >= 0") as err:
        plan_schedule(cuda=False, workers=-1)
    assert "\n" not in str(err.value)


def test_parallel_workers_give_the_same_map_as_one(exported, tiny):
    """Batches finish out of order across workers; every pixel must still land in its place."""
    from export.infer import classify_scene, open_session, session_meta
    from feddiff.config import load_config
    from feddiff.data.loader import load_scene

    scene = load_scene(load_config(tiny.config))
    one_sess = open_session(exported[0], "cpu")[0]
    meta = session_meta(one_sess)
    one = classify_scene(one_sess, meta, scene.modalities, batch=97, progress=False, workers=1)
    par_sess = open_session(exported[0], "cpu", threads=1)[0]
    many = classify_scene(par_sess, meta, scene.modalities, batch=97, progress=False, workers=3)
    assert one.shape == scene.shape
    assert (one == many).all()
    assert len(set(one.ravel().tolist())) > 1  # a constant map would pass trivially


def test_infer_reports_its_schedule(exported, tiny):
    from export.infer import run_inference

    res = run_inference(exported[0], str(tiny.config), tiny.folder / "sched", batch=256, progress=False, workers=2, threads=1)
    assert (res.schedule.workers, res.schedule.threads) == (2, 1)
    doc = json.loads((tiny.folder / "sched" / "metrics.json").read_text())
    assert doc["workers"] == 2 and doc["threads_per_worker"] == 1
