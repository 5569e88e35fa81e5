"""Job status for operators: a JSON file the daemon rewrites, read by ``feddiff status``.

A file, not a socket, so status survives the daemon (the last error of a crashed daemon is
still there) and needs no port on a locked-down host.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from feddiff.config import load_config
from feddiff.errors import FedDiffError
from feddiff.state.atomic import write_json_atomic


class StatusBoard:
    def __init__(self, path: Path, job: str, clients: list[str], min_interval_s: float = 1.0) -> None:
        self.path = Path(path)
        self.min_interval_s = float(min_interval_s)
        self.doc: dict[str, Any] = {
            "job": job,
            "phase": "starting",
            "round": 0,
            "clients": {c: {"last_seen": None} for c in clients},
            "bytes_sent": 0,
            "bytes_received": 0,
            "rejected": {},
            "last_error": None,
            "pid": None,
        }
        self._last_write = 0.0

    def seen(self, client: str) -> None:
        self.doc["clients"].setdefault(client, {})["last_seen"] = time.time()

    def update(self, **fields: Any) -> None:
        self.doc.update(fields)
        now = time.monotonic()
        if now - self._last_write >= self.min_interval_s or "phase" in fields and fields["phase"] != "training" or "last_error" in fields:
            self.flush()

    def flush(self) -> None:
        self.doc["updated"] = time.time()
        write_json_atomic(self.path, self.doc)
        self._last_write = time.monotonic()


def status_path(state_dir: Path) -> Path:
    return Path(state_dir) / "status.json"


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    state_dir = Path(args.state_dir) if args.state_dir else Path(cfg.resolve(cfg.federation.state_dir)) / "aggregator"
    path = status_path(state_dir)
    if not path.exists():
        raise FedDiffError(f"{path}: no status yet (has the aggregator for job {cfg.federation.job!r} started?)")
    doc = json.loads(path.read_text())
    age = time.time() - doc.get("updated", 0)
    print(f"job {doc['job']}: {doc['phase']}, round {doc['round']}/{cfg.train.epochs} (updated {age:.0f}s ago, pid {doc.get('pid')})")
    for c, info in doc["clients"].items():
        seen = info.get("last_seen")
        print(f"  {c}: last seen {time.time() - seen:.0f}s ago" if seen else f"  {c}: not seen")
    print(f"  bytes sent {doc['bytes_sent']}, received {doc['bytes_received']}, rejected {doc['rejected'] or 0}")
    if doc.get("last_error"):
        print(f"  last error: {doc['last_error']}")
    return 0
