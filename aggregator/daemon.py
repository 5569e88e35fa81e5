"""``feddiff aggregator``: the long-running daemon that drives a job to completion.

Restart-safe: the job state is committed after every round, and a restarted daemon resumes at
the last committed round. SIGTERM stops it cleanly between messages (the round in flight is
simply rerun after the next start). When the job is finished it writes the report and exits 0.
With ``federation.http_port`` set, ``main`` serves /metrics, /healthz and the dashboard
(``feddiff.monitoring``): the recorder is fed by ``Link.observers`` and by every phase the
status board is given, so ``feddiff status`` and the dashboard never disagree.
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
from feddiff.monitoring import JobMonitor
from feddiff.monitoring.feed import start_role_monitoring
from feddiff.model.ensemble import check_federable
from feddiff.protocol import topics
from feddiff.protocol.endpoint import fresh_seq, open_channel
from feddiff.runtime.observe import Observers
from feddiff.state.atomic import write_json_atomic

from aggregator.labels import load_labels, placeholder_labels
from aggregator.link import Link, RoundFailed
from aggregator.rounds import Rounds
from aggregator.state import StateStore
from aggregator.status import StatusBoard, status_path

log = logging.getLogger("feddiff.aggregator")


class MonitoredBoard(StatusBoard):
    """The status board that also tells the monitor the job's phase (``paused`` included) and the
    channel's rejections by reason (bad signature, replay, malformed ...)."""

    def __init__(self, path: Path, job: str, clients: list[str], monitor: JobMonitor | None, min_interval_s: float = 1.0) -> None:
        super().__init__(path, job, clients, min_interval_s)
        self.monitor = monitor

    def update(self, **fields) -> None:
        super().update(**fields)
        if self.monitor is not None and "phase" in fields:
            self.monitor.phase(fields["phase"])
        if self.monitor is not None and "rejected" in fields:
            self.monitor.rejections_seen(fields["rejected"])


class MonitoredLink(Link):
    """The link that counts the bytes of each request against the party it goes to (the channel
    only keeps totals), so the dashboard's per-station bytes out are real."""

    def __init__(self, cfg: Config, channel, status: StatusBoard, observers: Observers | None, monitor: JobMonitor | None) -> None:
        super().__init__(cfg, channel, status, observers)
        self.monitor = monitor

    def send(self, party: str, payload, *, round: int = 0, step: int = 0) -> None:
        before = self.channel.stats.bytes_sent
        super().send(party, payload, round=round, step=step)
        if self.monitor is not None:
            self.monitor.bytes(party, "out", self.channel.stats.bytes_sent - before)


def state_dir_of(cfg: Config, override: str | None) -> Path:
    return Path(override) if override else Path(cfg.resolve(cfg.federation.state_dir)) / "aggregator"


def report_of(cfg: Config, rounds: Rounds, link: Link, metrics: dict, seconds: dict) -> dict:
    stats = link.channel.stats
    return {
        "job": cfg.federation.job,
        **{k: metrics[k] for k in ("oa", "aa", "kappa")},
        "per_class": dict(zip(rounds.labels.class_names, metrics["per_class"])),
        "confusion": metrics["confusion"],
        "rounds": rounds.state.round,
        "history": rounds.state.history,
        "ledger": rounds.state.ledger,
        "bytes": {"aggregator_sent": stats.bytes_sent, "aggregator_received": stats.bytes_received},
        "rejected": dict(stats.rejected),
        "seconds": seconds,
        **({"label_dp": metrics["label_dp"]} if "label_dp" in metrics else {}),
    }


def finish_job(cfg: Config, state_dir: Path, rounds: Rounds, link: Link, t0: float) -> None:
    """Evaluate, map, write the report and commit the job as finished."""
    t_train = time.perf_counter() - t0
    metrics = rounds.evaluate()
    report = report_of(cfg, rounds, link, metrics, {"train": t_train, "evaluate": time.perf_counter() - t0 - t_train})
    if cfg.federation.write_map and link.scene_shape:
        class_map = rounds.classify_scene(link.scene_shape)  # in HE mode this drives the label holder's map
        if cfg.federation.security != "he":  # there the aggregator holds no class of any pixel
            write_png_map(class_map, rounds.labels.class_names, state_dir / "classification_map.png")
        report["seconds"]["map"] = time.perf_counter() - t0 - sum(report["seconds"].values())
    write_json_atomic(state_dir / "report.json", report)
    rounds.state.finished = True
    rounds.state.final = {k: report[k] for k in ("oa", "aa", "kappa")}
    rounds.commit_state()
    print(json.dumps({k: report[k] for k in ("oa", "aa", "kappa", "rounds")}))


def run(cfg: Config, state_dir: Path, observers: Observers | None = None, monitor: JobMonitor | None = None) -> int:
    """The job to completion (or SIGTERM); ``monitor`` (fed by ``observers``) gets the phases and
    the classification map."""
    from crypto.chain import party_security

    t0 = time.perf_counter()
    state_dir.mkdir(parents=True, exist_ok=True)
    store = StateStore(state_dir)
    labels = placeholder_labels() if cfg.federation.label_holder != "aggregator" else load_labels(cfg)
    status = MonitoredBoard(status_path(state_dir), cfg.federation.job, list(cfg.federation.clients), monitor,
                            cfg.federation.status_interval_s)
    status.update(pid=os.getpid(), phase="connecting")
    existing, _, _ = store.load(cfg.federation.job)
    channel = open_channel(cfg, "aggregator", [topics.uplink(cfg.federation.job, "+")], seq_start=fresh_seq(existing.seq if existing else 0),
                           presence=False, **party_security(cfg, "aggregator", state_dir))
    link = MonitoredLink(cfg, channel, status, observers, monitor)
    rounds = Rounds(cfg, link, labels, store)
    signal.signal(signal.SIGTERM, lambda *_: setattr(link, "stop_requested", True))
    signal.signal(signal.SIGINT, lambda *_: setattr(link, "stop_requested", True))
    try:
        if not rounds.state.finished:
            rounds.train()
            if link.stop_requested:
                status.update(phase="stopped")
                log.info("stopped by signal at round %d (committed)", rounds.state.round)
                return 0
            finish_job(cfg, state_dir, rounds, link, t0)
            publish_map(monitor, state_dir)
        link.finish(rounds.state.round)
        status.update(phase="finished", **rounds.state.final)
        return 0
    except RoundFailed as exc:
        if exc.reason == "stopping":
            status.update(phase="stopped")
            return 0
        raise
    finally:
        status.flush()
        channel.close()


def publish_map(monitor: JobMonitor | None, state_dir: Path) -> None:
    path = state_dir / "classification_map.png"
    if monitor is not None and path.exists():
        monitor.map_png(path.read_bytes())


def main(args: argparse.Namespace) -> int:
    cfg = load_config(args.config)
    check_federable(cfg.model, args.config)
    state_dir = state_dir_of(cfg, args.state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    configure_logging(getattr(args, "verbose", False), str(state_dir / "aggregator.log.jsonl"), name="aggregator")
    if cfg.train.val_fraction > 0 or cfg.train.self_train != "off":
        log.warning("train.val_fraction and train.self_train apply to feddiff train only: this federated job trains on "
                    "every training pixel for train.epochs rounds")
    mon = start_role_monitoring(cfg, "aggregator", dashboard=True)
    try:
        return run(cfg, state_dir, mon.observers, mon.monitor)
    finally:
        mon.close()
