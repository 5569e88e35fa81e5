"""A whole job as real processes: the aggregator and each named party, one `feddiff` process
each, run to completion. Shared by the tests that watch a job from outside (a spy on the
broker, the parties' state afterwards)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def run_parties(cfg_path: Path, parties: list[str], log_dir: Path, timeout: float = 300) -> None:
    """Start ``aggregator`` (if named) and every other party on ``cfg_path``; each must exit 0
    within ``timeout`` (its log's tail is the failure message). Whatever still runs is killed."""
    procs, logs = [], {name: Path(log_dir) / f"{name}.log" for name in parties}
    try:
        for name, log in logs.items():
            args = ["aggregator"] if name == "aggregator" else ["edge", "--id", name]
            with open(log, "wb") as fh:
                procs.append(subprocess.Popen([sys.executable, "-m", "feddiff_app.cli", *args, "--config", str(cfg_path)],
                                              stdout=fh, stderr=subprocess.STDOUT))
        for p, log in zip(procs, logs.values()):
            assert p.wait(timeout) == 0, log.read_text()[-2000:]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
