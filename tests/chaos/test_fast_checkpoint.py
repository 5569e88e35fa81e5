"""A full disk while writing a checkpoint: one clear line, and the previous file intact.

Tests run as root, where a read-only chmod stops nothing, so the failures here are ones the
kernel really raises for root too:

* ENOSPC from /dev/full: the temp file's descriptor is swapped for one on /dev/full, so the
  very bytes of the checkpoint hit a device that is always full;
* EFBIG from RLIMIT_FSIZE: a `feddiff train` child process may not grow any file past 64 KB.

The daemon-level version of this (the aggregator's disk fills mid-job, then it resumes) is in
test_faults.py (chaos marker).
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import tempfile

import pytest
import yaml

from feddiff.errors import FedDiffError

needs_dev_full = pytest.mark.skipif(not os.path.exists("/dev/full"), reason="/dev/full is Linux-only")


@pytest.fixture
def full_disk(monkeypatch):
    """Every temp file created from now on is backed by /dev/full (writes fail with ENOSPC);
    its name still exists in the target folder, so a leftover would be visible."""
    real = tempfile.mkstemp

    def on_full_device(*args, **kwargs):
        fd, name = real(*args, **kwargs)
        os.close(fd)
        return os.open("/dev/full", os.O_WRONLY), name

    monkeypatch.setattr(tempfile, "mkstemp", on_full_device)


@needs_dev_full
def test_checkpoint_on_a_full_disk_keeps_the_previous_one(tmp_path, full_disk):
    import torch

    from feddiff.model.checkpoint import atomic_torch_save

    path = tmp_path / "aggregator_state.pt"
    path.write_bytes(b"round 7, committed")
    with pytest.raises(FedDiffError) as err:
        atomic_torch_save({"w": torch.zeros(10_000)}, path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "No space left on device" in msg, msg
    assert path.read_bytes() == b"round 7, committed"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # the temp file is gone too


@needs_dev_full
def test_status_and_report_on_a_full_disk_keep_the_previous_file(tmp_path, full_disk):
    from feddiff.state.atomic import write_json_atomic

    path = tmp_path / "status.json"
    path.write_text('{"round": 7}')
    with pytest.raises(FedDiffError, match="No space left on device"):
        write_json_atomic(path, {"round": 8})
    assert path.read_text() == '{"round": 7}'
    assert [p.name for p in tmp_path.iterdir()] == [path.name]


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (64 * 1024, 64 * 1024))


def test_train_on_a_full_disk_exits_2_with_one_line_and_keeps_the_old_model(tmp_path):
    """`feddiff train` into a folder holding last week's model.pt, with a 64 KB file-size
    limit: the new ~290 KB checkpoint cannot be written."""
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump({
        "name": "tiny",
        "scene": {"synthetic": {"seed": 3, "rows": 16, "cols": 16, "bands": 4, "train_per_class": 5}},
        "model": {"unet": {"base_channels": 4, "num_res_blocks": 1, "groups": 4}, "head_channels": 8, "feature_timesteps": [5], "comm": {"rank": 4}},
        "train": {"min_steps": 0, "pretrain_steps": 1, "pretrain_batch": 8, "epochs": 1, "batch_size": 16, "threads": 1},
    }))
    out = tmp_path / "out"
    out.mkdir()
    (out / "model.pt").write_bytes(b"last week's model")
    r = subprocess.run([sys.executable, "-m", "feddiff_app.cli", "train", "--config", str(cfg), "--out", str(out)],
                       capture_output=True, text=True, timeout=300, preexec_fn=_limit_file_size)
    errors = [ln for ln in r.stderr.splitlines() if "error" in ln.lower()]
    assert r.returncode == 2, r.stderr[-2000:]
    assert "Traceback" not in r.stderr
    assert len(errors) == 1 and str(out / "model.pt") in errors[0] and "File too large" in errors[0], r.stderr[-2000:]
    assert (out / "model.pt").read_bytes() == b"last week's model"
    assert sorted(p.name for p in out.iterdir()) == ["model.pt"]
