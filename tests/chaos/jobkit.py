"""A federated job run the way operators run it: one Mosquitto, one `feddiff aggregator`
process, one `feddiff edge` process per station, all talking over loopback MQTT.

Copied in spirit from tests/federation (not imported from there, so the chaos suite stands on
its own). Everything a fault test needs to look at is on disk: status.json (rewritten every
second), report.json (with the round ledger), and the aggregator's JSON-lines log.
``AggregatorFiles`` reads them and ``assert_ledger_exact`` / ``assert_same_model_as`` state
what a job that survived a fault must show; the netns suite's bridged job shares all three.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Optional

import pytest
import yaml

# The smallest job that still learns: a 40 x 48 synthetic scene, an 8-channel U-Net, 20
# pretraining steps. One round is ~14 steps of batch 8; 6 rounds take well under a minute.
JOB = {
    "name": "chaos",
    "scene": {"synthetic": {"seed": 3, "rows": 40, "cols": 48, "bands": 12, "train_per_class": 25}},
    "model": {"unet": {"base_channels": 8, "num_res_blocks": 1}, "head_channels": 16, "feature_timesteps": [5, 100], "comm": {"rank": 8}},
    "train": {"min_steps": 0, "pretrain_steps": 20, "pretrain_batch": 32, "epochs": 6, "batch_size": 8, "threads": 1, "seed": 0},
    "federation": {
        "job": "chaos",
        "clients": {"hsi_station": {"modalities": ["hsi"]}, "lidar_station": {"modalities": ["lidar"]}},
        "round_timeout_s": 5,
        "max_retries": 50,
        "write_map": False,
        "status_interval_s": 0,  # every step in status.json: the fault tests wait for a given step
    },
}

PY = sys.executable


def deep_copy(doc: dict) -> dict:
    return json.loads(json.dumps(doc))


def cli(*args: str, cwd: Optional[Path] = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`feddiff <args>` as a user types it; returns the finished process (text output)."""
    return subprocess.run([PY, "-m", "feddiff_app.cli", *args], capture_output=True, text=True, timeout=timeout, cwd=cwd)


class AggregatorFiles:
    """What the aggregator leaves under ``agg_dir`` (its state folder), read as a test sees it."""

    agg_dir: Path

    def status(self) -> dict:
        try:
            return json.loads((self.agg_dir / "status.json").read_text())
        except (OSError, ValueError):
            return {}

    def report(self) -> dict:
        return json.loads((self.agg_dir / "report.json").read_text())

    def agg_log(self) -> list[dict]:
        path = self.agg_dir / "aggregator.log.jsonl"
        if not path.exists():
            return []
        out = []
        for line in path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                pass  # a line cut by SIGKILL
        return out

    def events(self, name: str) -> list[dict]:
        return [e for e in self.agg_log() if e.get("event") == name]


class Job(AggregatorFiles):
    """One job directory: job.yaml, state/<role>/..., and a log file per spawned process."""

    def __init__(self, root: Path, port: int, job: Optional[dict] = None, **federation) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        doc = deep_copy(job or JOB)
        doc["federation"].update(federation)
        # a job name of its own: stations keep persistent MQTT sessions keyed by client id, and
        # a finished job's DONE broadcast waits in them for the next process of that name
        doc["federation"]["job"] = f"{doc['federation']['job']}-{self.root.name}-{os.getpid()}-{time.time_ns() % 10**6}"
        doc["federation"]["broker"] = {"port": port}
        doc["federation"]["state_dir"] = str(self.root / "state")
        self.doc = doc
        self.config = self.root / "job.yaml"
        self.config.write_text(yaml.safe_dump(doc))
        self.procs: list[subprocess.Popen] = []
        self.ended: list[subprocess.Popen] = []

    # -- processes ----------------------------------------------------------------------------
    @property
    def stations(self) -> list[str]:
        return list(self.doc["federation"]["clients"])

    @property
    def epochs(self) -> int:
        return int(self.doc["train"]["epochs"])

    def spawn(self, *args: str) -> subprocess.Popen:
        tag = f"{args[0]}-{os.path.basename(args[-1])}-{time.time_ns()}"
        log = open(self.root / f"{tag}.log", "wb")
        p = subprocess.Popen([PY, "-m", "feddiff_app.cli", *args], stdout=log, stderr=subprocess.STDOUT)
        log.close()
        self.procs.append(p)
        return p

    def kill(self, p: subprocess.Popen) -> None:
        """SIGKILL: no handler runs, nothing is flushed, exactly like a power cut."""
        self.ended.append(p)
        p.send_signal(signal.SIGKILL)
        p.wait()

    def expect_exit(self, p: subprocess.Popen, timeout: float = 120) -> int:
        """Wait for a process the test made fail; its exit is not an error of the job."""
        self.ended.append(p)
        return p.wait(timeout)

    def aggregator(self) -> subprocess.Popen:
        return self.spawn("aggregator", "--config", str(self.config))

    def edge(self, name: str, port: Optional[int] = None) -> subprocess.Popen:
        """A station; ``port`` points it at another broker port (a proxy) than the others."""
        config = self.config
        if port is not None:
            doc = deep_copy(self.doc)
            doc["federation"]["broker"] = {"port": port}
            config = self.root / f"job-{name}-{port}.yaml"
            config.write_text(yaml.safe_dump(doc))
        return self.spawn("edge", "--config", str(config), "--id", name)

    def edges(self) -> dict[str, subprocess.Popen]:
        return {c: self.edge(c) for c in self.stations}

    def start(self) -> tuple[subprocess.Popen, dict[str, subprocess.Popen]]:
        return self.aggregator(), self.edges()

    def finish(self, procs, timeout: float = 240) -> None:
        """Every process exits 0 (the aggregator after the report, stations after DONE)."""
        deadline = time.monotonic() + timeout
        for p in procs:
            rc = p.wait(max(1.0, deadline - time.monotonic()))
            assert rc == 0, f"{p.args[3:]} exited {rc}; logs in {self.root}"

    def cleanup(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.kill()
                p.wait()

    # -- what is on disk ----------------------------------------------------------------------
    @property
    def agg_dir(self) -> Path:
        return self.root / "state" / "aggregator"

    def wait_for(self, what: str, pred: Callable[[], object], timeout: float = 180, poll: float = 0.1):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = pred()
            if got:
                return got
            gone = [(p.args[3:], p.returncode) for p in self.procs if p not in self.ended and p.poll() is not None]
            if gone:
                raise AssertionError(f"while waiting for {what}: a process exited: {gone}; logs in {self.root}")
            time.sleep(poll)
        raise AssertionError(f"{what} did not happen within {timeout:.0f}s; status: {self.status()}; logs in {self.root}")

    def wait_round(self, rnd: int, timeout: float = 180) -> None:
        """Until round ``rnd`` is committed (status 'round' counts committed rounds)."""
        self.wait_for(f"round {rnd} committed", lambda: self.status().get("round", 0) >= rnd, timeout)

    def wait_mid_round(self, rnd: int, min_step: int = 2, timeout: float = 180) -> dict:
        """Until round ``rnd`` is in training at step >= ``min_step``: a fault now hits a round
        with steps already applied, the case where all-or-nothing matters."""
        def mid():
            s = self.status()
            return s if s.get("phase") == "training" and s.get("round") == rnd and s.get("step", 0) >= min_step else None

        return self.wait_for(f"round {rnd} step {min_step}", mid, timeout, poll=0.05)


def assert_ledger_exact(report: dict, epochs: int, config: Path) -> None:
    """Every round committed exactly once, in order, with every step of its plan applied."""
    ledger = report["ledger"]
    assert [row["round"] for row in ledger] == list(range(epochs)), ledger
    steps = plan_length(config)
    assert [row["steps_applied"] for row in ledger] == [steps] * epochs, (ledger, steps)


def assert_same_model_as(reference: dict, report: dict) -> None:
    """Same training trajectory as the uninterrupted run: per-round loss and accuracy, and OA."""
    got = [(h["round"], h["total"], h["train_acc"]) for h in report["history"]]
    want = [(h["round"], h["total"], h["train_acc"]) for h in reference["history"]]
    assert [g[0] for g in got] == [w[0] for w in want]
    for (r, loss, acc), (_, loss_ref, acc_ref) in zip(got, want):
        assert math.isclose(loss, loss_ref, rel_tol=1e-5), f"round {r}: loss {loss} != {loss_ref} of the uninterrupted run"
        assert acc == pytest.approx(acc_ref, abs=1e-9), f"round {r}: train acc {acc} != {acc_ref}"
    assert abs(report["oa"] - reference["oa"]) <= 0.005, (report["oa"], reference["oa"])


def plan_length(config: Path) -> int:
    """Steps in one round, computed independently of the aggregator: whole passes over the
    training pixels in batches of train.batch_size (the last one short), as many passes as
    train.min_steps spread over train.epochs needs."""
    from feddiff.config import load_config
    from feddiff.data.loader import load_labels

    cfg = load_config(config)
    train, _, _ = load_labels(cfg)
    n = int((train > 0).sum())
    per_pass = -(-n // cfg.train.batch_size)
    wanted = -(-cfg.train.min_steps // cfg.train.epochs)
    return per_pass * max(1, -(-wanted // per_pass))
