"""``feddiff aggregator``: the long-running daemon that drives a job to completion.

Restart-safe: the job state is committed after every round, and a restarted daemon resumes at
the last committed round. SIGTERM stops it cleanly between messages (the round in flight is
simply rerun after the next start). When the job is finished it writes the report and exits 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import time
from pathlib import Path

from feddiff.config import Config, load_config
from feddiff.logs import configure_logging
from feddiff.maps import write_png_map
from feddiff.model.ensemble import check_federable
from feddiff.protocol import topics
from feddiff.protocol.endpoint import fresh_seq, open_channel

from aggregator.coordinator import Coordinator, RoundFailed
from aggregator.labels import load_labels, placeholder_labels
from aggregator.state import StateStore, write_json_atomic
from aggregator.status import StatusBoard, status_path

log = logging.getLogger("feddiff.aggregator")


def state_dir_of(cfg: Config, override: str | None) -> Path:
    return Path(override) if override else Path(cfg.resolve(cfg.federation.state_dir)) / "aggregator"


def _security(cfg: Config, state_dir: Path) -> dict:
    if cfg.federation.security == "none" and not cfg.federation.keys_dir:
        return {}
    from crypto.chain import party_security

    return party_security(cfg, "aggregator", state_dir)


def run(cfg: Config, state_dir: Path) -> int:
    t0 = time.perf_counter()
    state_dir.mkdir(parents=True, exist_ok=True)
    store = StateStore(state_dir)
    labels = placeholder_labels() if cfg.federation.label_holder != "aggregator" else load_labels(cfg)
    status = StatusBoard(status_path(state_dir), cfg.federation.job, list(cfg.federation.clients))
    status.update(pid=os.getpid(), phase="connecting")
    existing, _, _ = store.load(cfg.federation.job)
    channel = open_channel(
        cfg,
        "aggregator",
        [topics.uplink(cfg.federation.job, "+")],
        seq_start=fresh_seq(existing.seq if existing else 0),
        presence=False,
        **_security(cfg, state_dir),
    )
    coord = Coordinator(cfg, channel, labels, store, status)
    signal.signal(signal.SIGTERM, lambda *_: setattr(coord, "stop_requested", True))
    signal.signal(signal.SIGINT, lambda *_: setattr(coord, "stop_requested", True))
    try:
        if not coord.state.finished:
            coord.train()
            if coord.stop_requested:
                status.update(phase="stopped")
                log.info("stopped by signal at round %d (committed)", coord.state.round)
                return 0
            t_train = time.perf_counter() - t0
            metrics = coord.evaluate()
            t_eval = time.perf_counter() - t0 - t_train
            report = {
                "job": cfg.federation.job,
                "oa": metrics["oa"],
                "aa": metrics["aa"],
                "kappa": metrics["kappa"],
                "per_class": dict(zip(coord.labels.class_names, metrics["per_class"])),
                "confusion": metrics["confusion"],
                "rounds": coord.state.round,
                "history": coord.state.history,
                "ledger": coord.state.ledger,
                "bytes": {"aggregator_sent": channel.stats.bytes_sent, "aggregator_received": channel.stats.bytes_received},
                "rejected": dict(channel.stats.rejected),
                "seconds": {"train": t_train, "evaluate": t_eval},
            }
            if cfg.federation.write_map and coord.scene_shape:
                class_map = coord.classify_scene(coord.scene_shape)
                write_png_map(class_map, coord.labels.class_names, state_dir / "classification_map.png")
                report["seconds"]["map"] = time.perf_counter() - t0 - t_train - t_eval
            write_json_atomic(state_dir / "report.json", report)
            coord.state.finished = True
            coord.state.final = {k: report[k] for k in ("oa", "aa", "kappa")}
            store.commit(coord.state, coord.head.state_dict(), coord.optimizer.state_dict())
            print(json.dumps({k: report[k] for k in ("oa", "aa", "kappa", "rounds")}))
        coord.finish()
        status.update(phase="finished", **coord.state.final)
        return 0
    except RoundFailed as exc:
        if exc.reason == "stopping":
            status.update(phase="stopped")
            return 0
        raise
    finally:
        status.flush()
        channel.close()


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    check_federable(cfg.model, args.config)
    state_dir = state_dir_of(cfg, args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(getattr(args, "verbose", False), str(state_dir / "aggregator.log.jsonl"), name="aggregator")
    return run(cfg, state_dir)
