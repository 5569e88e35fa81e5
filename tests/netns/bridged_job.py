"""A signed federated job across namespaces: the central broker and the aggregator at the
central site, each station with its own bridged Mosquitto (crypto.bridge_conf) in its own
namespace, the station process pointed at 127.0.0.1 like any other.

The job is the chaos suite's smallest one that still learns, so that a reference run and a run
with a cut fit in a few minutes on two cores. Everything to look at is on disk: the
aggregator's status.json, report.json (with the round ledger) and its JSON-lines log, read by
the chaos suite's ``jobkit.AggregatorFiles``.
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Callable

import yaml

from crypto.bridge_conf import write_bridge_config
from crypto.provision import init_job, issue
from feddiff_app.broker import mosquitto_binary
from tests.chaos.jobkit import AggregatorFiles
from tests.netns.topology import CENTRAL_IP, Topology

CENTRAL_PORT = 8883
LOCAL_PORT = 8883  # each station's broker, on 127.0.0.1 of the station's namespace
STATIONS = ["hsi_station", "lidar_station"]
JOB = {
    "scene": {"synthetic": {"seed": 3, "rows": 40, "cols": 48, "bands": 12, "train_per_class": 25}},
    "model": {"unet": {"base_channels": 8, "num_res_blocks": 1}, "head_channels": 16, "feature_timesteps": [5, 100], "comm": {"rank": 8}},
    "train": {"min_steps": 0, "pretrain_steps": 20, "pretrain_batch": 32, "epochs": 5, "batch_size": 8, "threads": 1, "seed": 0},
    "federation": {
        "clients": {"hsi_station": {"modalities": ["hsi"]}, "lidar_station": {"modalities": ["lidar"]}},
        "security": "signed",
        # longer than a 20 s cut plus the bridge noticing it and reconnecting: the edge broker
        # is meant to hide the cut, so no round may time out
        "round_timeout_s": 90,
        "max_retries": 5,
        "write_map": False,
    },
}


def _conf_as(conf: Path) -> Path:
    """As root, Mosquitto would drop to its own user and lose the 0600 files: ``user root``."""
    if os.geteuid() != 0:
        return conf
    copy = conf.with_name("run_as_root.conf")
    copy.write_text("user root\n" + conf.read_text())
    copy.chmod(0o600)
    return copy


class BridgedJob(AggregatorFiles):
    """Keys, configs, brokers and parties of one job in ``topo``."""

    def __init__(self, topo: Topology, root: Path, name: str) -> None:
        self.topo, self.root, self.name = topo, Path(root), name
        self.keys = self.root / "keys"
        init_job(name, self.keys, broker_host=CENTRAL_IP)
        issue(self.keys, "aggregator", "aggregator")
        for s in STATIONS:
            issue(self.keys, "edge", s)
        self.state = self.root / "state"
        self.procs: dict = {}

    def config(self, party: str, host: str, port: int) -> Path:
        doc = json.loads(json.dumps(JOB))
        doc["name"] = self.name
        doc["federation"].update(job=self.name, keys_dir=str(self.keys), state_dir=str(self.state), broker={"host": host, "port": port})
        path = self.root / f"job-{party}.yaml"
        path.write_text(yaml.safe_dump(doc))
        return path

    def start_brokers(self) -> None:
        central = _conf_as(self.keys / "broker" / "mosquitto.conf")
        self.topo.spawn(self.topo.central, [mosquitto_binary(), "-c", str(central)], "central-broker.log")
        self.topo.wait_port(self.topo.central, CENTRAL_IP, CENTRAL_PORT)
        for s in STATIONS:
            conf = write_bridge_config(self.keys, s, CENTRAL_IP, CENTRAL_PORT, self.root / f"edge-broker-{s}", local_port=LOCAL_PORT)
            self.topo.spawn(self.topo.ns[s], [mosquitto_binary(), "-c", str(_conf_as(conf))], f"edge-broker-{s}.log")
            self.topo.wait_port(self.topo.ns[s], "127.0.0.1", LOCAL_PORT)

    def start_parties(self) -> None:
        cli = [sys.executable, "-m", "feddiff_app.cli"]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
        agg = self.config("aggregator", CENTRAL_IP, CENTRAL_PORT)
        self.procs["aggregator"] = self.topo.spawn(self.topo.central, [*cli, "aggregator", "--config", str(agg)], "aggregator.log", env)
        for s in STATIONS:
            cfg = self.config(s, "127.0.0.1", LOCAL_PORT)
            self.procs[s] = self.topo.spawn(self.topo.ns[s], [*cli, "edge", "--config", str(cfg), "--id", s], f"{s}.log", env)

    def finish(self, timeout: float = 600) -> None:
        """Every party exits 0 (the aggregator after its report, the stations after DONE)."""
        deadline = time.monotonic() + timeout
        for name, p in self.procs.items():
            rc = p.wait(max(1.0, deadline - time.monotonic()))
            assert rc == 0, f"{name} exited {rc}: {(self.root / f'{name}.log').read_text()[-1500:]}"

    # -- what is on disk ----------------------------------------------------------------------
    @property
    def agg_dir(self) -> Path:
        return self.state / "aggregator"

    def wait_for(self, what: str, pred: Callable[[], object], timeout: float = 300):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = pred()
            if got:
                return got
            gone = {n: p.returncode for n, p in self.procs.items() if p.poll() is not None}
            if gone:
                raise AssertionError(f"while waiting for {what}: exited {gone}; logs in {self.root}")
            time.sleep(0.05)
        raise AssertionError(f"{what} did not happen within {timeout:.0f}s; status {self.status()}; logs in {self.root}")

    def wait_mid_round(self, first_round: int, min_step: int) -> dict:
        """Until a round >= ``first_round`` (not the last) is training at step >= ``min_step``.

        Why not one exact round: status.json is rewritten at most once a second in training,
        and on an idle machine a round of this small job can pass between two writes."""
        last = int(JOB["train"]["epochs"]) - 1

        def mid():
            s = self.status()
            ok = s.get("phase") == "training" and first_round <= s.get("round", -1) < last and s.get("step", 0) >= min_step
            return s if ok else None

        return self.wait_for(f"a round >= {first_round} at step {min_step}", mid)


def run_job(root: Path, name: str, cut: Callable[[BridgedJob], None] | None = None) -> BridgedJob:
    """Build the namespaces, run the job to its end (``cut`` runs once the parties are up)
    and tear everything down, pass or fail."""
    root.mkdir(parents=True, exist_ok=True)
    topo = Topology(STATIONS, root)
    try:
        job = BridgedJob(topo, root, name)
        job.start_brokers()
        job.start_parties()
        if cut is not None:
            cut(job)
        job.finish()
        return job
    finally:
        topo.close()
