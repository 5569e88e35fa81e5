"""Load: one aggregator and many edge stations on one Mosquitto, horizontal mode.

    python benchmarks/load.py                              # 16 stations x 20 rounds (minutes on 2 cores)
    python benchmarks/load.py --stations 4 --rounds 3      # a quick check of the set-up

Every station is a separate `feddiff edge` process holding BOTH modalities (hsi, lidar) over
its own region of the synthetic scene (a grid of federation.clients.<name>.region tiles); the
aggregator asks, per training step, the stations whose regions hold the batch's pixels for
their codes, and after each round averages each modality's branch weights over all stations,
weighted by their training samples (aggregator.averaging.FedAvg). Small model, threads: 1.

Measured, and written to benchmarks/results/load.json:
* rounds completed (all of them, or the run fails) and the ledger check;
* message rate: the broker's own counters ($SYS/broker/messages/received and .../sent,
  published every second with sys_interval 1) over the training window (from the first
  training step to evaluation, read from the aggregator's status.json); 1 s resolution, so
  a run shorter than ~20 s gives a rough rate;
* round latency p50 / p95 from report.json history 'seconds' (round 0 also waits for the
  stations' one-off local pretraining, so it is reported apart and left out of p50/p95);
* RSS of the aggregator and of the broker (psutil, sampled every 0.5 s: peak and mean), and of
  the largest station.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feddiff_app.broker import start_mosquitto  # noqa: E402


def grid_regions(n: int, rows: int, cols: int) -> list[list[int]]:
    """n tiles [row0, row1, col0, col1] covering the scene: a gr x gc grid, gr * gc == n."""
    gr = int(math.sqrt(n))
    while n % gr:
        gr -= 1
    gc = n // gr
    r_edges = [round(i * rows / gr) for i in range(gr + 1)]
    c_edges = [round(j * cols / gc) for j in range(gc + 1)]
    return [[r_edges[i], r_edges[i + 1], c_edges[j], c_edges[j + 1]] for i in range(gr) for j in range(gc)]


def job_doc(args, port: int, state: Path) -> dict:
    clients = {f"station_{k:02d}": {"modalities": ["hsi", "lidar"], "region": reg} for k, reg in enumerate(grid_regions(args.stations, args.rows, args.cols))}
    return {
        "name": "load",
        "scene": {"synthetic": {"seed": args.seed, "rows": args.rows, "cols": args.cols, "bands": args.bands, "train_per_class": args.train_per_class}},
        "model": {"unet": {"base_channels": 8, "num_res_blocks": 1}, "head_channels": 16, "feature_timesteps": [5, 100], "comm": {"rank": 8}},
        "train": {"seed": args.seed, "pretrain_steps": args.pretrain_steps, "pretrain_batch": 16, "epochs": args.rounds, "batch_size": args.batch, "threads": 1},
        "federation": {"job": f"load{args.stations}x{args.rounds}-{os.getpid()}", "clients": clients, "broker": {"port": port}, "state_dir": str(state),
                       "round_timeout_s": args.round_timeout, "max_retries": 3, "write_map": False},
    }


class BrokerCounters:
    """The broker's own message counters, from its $SYS topics (sys_interval 1)."""

    TOPICS = ("$SYS/broker/messages/received", "$SYS/broker/messages/sent", "$SYS/broker/bytes/received", "$SYS/broker/bytes/sent", "$SYS/broker/clients/connected")

    def __init__(self, port: int) -> None:
        import paho.mqtt.client as mqtt

        self.samples: list[tuple[float, dict[str, int]]] = []
        self.latest: dict[str, int] = {}
        self.lock = threading.Lock()
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"load-bench-sys-{os.getpid()}")
        self.client.on_message = self._on_message
        self.client.on_connect = lambda c, *a: [c.subscribe(t, 0) for t in self.TOPICS]
        self.client.connect("127.0.0.1", port, 30)
        self.client.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        try:
            value = int(float(msg.payload.decode()))
        except ValueError:
            return
        with self.lock:
            self.latest[msg.topic.rsplit("broker/", 1)[1]] = value
            self.samples.append((time.time(), dict(self.latest)))

    def at(self, t: float) -> dict[str, int]:
        """The last counters published at or before ``t`` (else the first ones)."""
        with self.lock:
            before = [s for ts, s in self.samples if ts <= t]
            return before[-1] if before else (self.samples[0][1] if self.samples else {})

    def close(self) -> None:
        self.client.loop_stop()
        self.client.disconnect()


class RssSampler(threading.Thread):
    def __init__(self, pids: dict[str, int], period: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.period = period
        self.rss: dict[str, list[int]] = {name: [] for name in pids}
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            for name, p in self.procs.items():
                try:
                    self.rss[name].append(p.memory_info().rss)
                except psutil.Error:
                    pass
            self.stop.wait(self.period)

    def summary(self, name: str) -> dict:
        xs = self.rss.get(name) or [0]
        return {"peak_mb": round(max(xs) / 2**20, 1), "mean_mb": round(statistics.fmean(xs) / 2**20, 1)}


def percentile(xs: list[float], q: float) -> float:
    xs = sorted(xs)
    if not xs:
        return float("nan")
    k = (len(xs) - 1) * q
    lo, hi = math.floor(k), math.ceil(k)
    return xs[lo] + (xs[hi] - xs[lo]) * (k - lo)


def status(state: Path) -> dict:
    try:
        return json.loads((state / "aggregator" / "status.json").read_text())
    except (OSError, ValueError):
        return {}


def run(args) -> dict:
    work = Path(args.work) / f"load-{args.stations}x{args.rounds}-{time.strftime('%Y%m%d-%H%M%S')}"
    work.mkdir(parents=True, exist_ok=True)
    broker = start_mosquitto(workdir=work / "broker", conf_extra="sys_interval 1")
    procs: list[subprocess.Popen] = []
    try:
        counters = BrokerCounters(broker.port)
        doc = job_doc(args, broker.port, work / "state")
        cfg = work / "job.yaml"
        cfg.write_text(yaml.safe_dump(doc))

        def spawn(*a: str) -> subprocess.Popen:
            log = open(work / f"{a[0]}-{a[-1] if a[0] == 'edge' else 'agg'}.log", "wb")
            p = subprocess.Popen([sys.executable, "-m", "feddiff_app.cli", *a], stdout=log, stderr=subprocess.STDOUT, cwd=ROOT)
            log.close()
            procs.append(p)
            return p

        t_launch = time.time()
        agg = spawn("aggregator", "--config", str(cfg))
        stations = [spawn("edge", "--config", str(cfg), "--id", name) for name in doc["federation"]["clients"]]
        sampler = RssSampler({"aggregator": agg.pid, "broker": broker.pid, **{f"s{i}": p.pid for i, p in enumerate(stations)}})
        sampler.start()

        t_train = t_eval = None
        deadline = time.monotonic() + args.timeout
        last_print = 0.0
        while agg.poll() is None:
            if time.monotonic() > deadline:
                raise SystemExit(f"load: the job did not finish within {args.timeout}s; logs in {work}")
            s = status(work / "state")
            if t_train is None and s.get("phase") == "training":
                t_train = time.time()
            if t_eval is None and s.get("phase") == "evaluating":
                t_eval = time.time()
            if time.monotonic() - last_print > 15:
                print(f"  [{time.time() - t_launch:5.0f}s] {s.get('phase', 'starting')}, round {s.get('round', 0)}/{args.rounds}, step {s.get('step', '-')}", flush=True)
                last_print = time.monotonic()
            time.sleep(0.2)
        t_done = time.time()
        if agg.returncode != 0:
            raise SystemExit(f"load: the aggregator exited {agg.returncode}; see {work / 'aggregator-agg.log'}")
        for p in stations:
            if p.wait(120) != 0:
                raise SystemExit(f"load: a station exited {p.returncode}; logs in {work}")
        sampler.stop.set()
        sampler.join()
        time.sleep(1.5)  # one more $SYS publication after the last message
        report = json.loads((work / "state" / "aggregator" / "report.json").read_text())
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        try:
            counters.close()
        except Exception:  # noqa: BLE001 - best effort
            pass
        broker.kill()

    t_train = t_train or t_launch
    t_eval = t_eval or t_done
    c0, c1 = counters.at(t_train), counters.at(t_eval)
    window = max(t_eval - t_train, 1e-9)
    n_in = c1.get("messages/received", 0) - c0.get("messages/received", 0)
    n_out = c1.get("messages/sent", 0) - c0.get("messages/sent", 0)
    rate_in, rate_out = n_in / window, n_out / window
    end = counters.at(time.time())
    secs = [h["seconds"] for h in report["history"]]
    later = secs[1:] or secs
    ledger_ok = [row["round"] for row in report["ledger"]] == list(range(args.rounds))
    station_peaks = [sampler.summary(f"s{i}")["peak_mb"] for i in range(len(stations))]
    return {
        "stations": args.stations,
        "mode": "horizontal: every station holds hsi + lidar over its own region",
        "regions": {name: c["region"] for name, c in doc["federation"]["clients"].items()},
        "rounds_planned": args.rounds,
        "rounds_completed": report["rounds"],
        "ledger_every_round_once": ledger_ok,
        "steps_per_round": report["history"][0]["steps"],
        "oa": report["oa"],
        "seconds": {"launch_to_done": round(t_done - t_launch, 1), "training_window": round(window, 1), "report": report["seconds"]},
        "round_latency_s": {
            "round0_with_pretraining": round(secs[0], 2),
            "p50": round(percentile(later, 0.5), 2),
            "p95": round(percentile(later, 0.95), 2),
            "max": round(max(later), 2),
            "all": [round(x, 2) for x in secs],
        },
        "broker_messages": {
            "received_per_s": round(rate_in, 1),
            "sent_per_s": round(rate_out, 1),
            "received_in_training_window": n_in,
            "sent_in_training_window": n_out,
            "counter_resolution_s": 1.0,
            "received_total": end.get("messages/received"),
            "sent_total": end.get("messages/sent"),
            "bytes_received_total": end.get("bytes/received"),
            "bytes_sent_total": end.get("bytes/sent"),
        },
        "aggregator_channel": {"bytes": report.get("bytes")},
        "rss": {"aggregator": sampler.summary("aggregator"), "broker": sampler.summary("broker"), "largest_station_peak_mb": max(station_peaks)},
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(), "platform": platform.platform()},
        "settings": {k: v for k, v in vars(args).items() if k not in ("out", "work")},
        "work": str(work),
    }


def table(res: dict) -> str:
    lat, msg, rss = res["round_latency_s"], res["broker_messages"], res["rss"]
    rows = [
        ("stations (hsi+lidar each)", f"{res['stations']}"),
        ("rounds completed", f"{res['rounds_completed']}/{res['rounds_planned']} (ledger: every round once: {res['ledger_every_round_once']})"),
        ("steps per round", f"{res['steps_per_round']}"),
        ("round latency p50 / p95 / max", f"{lat['p50']:.2f} / {lat['p95']:.2f} / {lat['max']:.2f} s (rounds 1..; round 0 incl. pretraining {lat['round0_with_pretraining']:.1f} s)"),
        ("broker messages in / out", f"{msg['received_per_s']:.1f} / {msg['sent_per_s']:.1f} per s (training window {res['seconds']['training_window']:.0f} s)"),
        ("broker totals in / out", f"{msg['received_total']} / {msg['sent_total']} messages, {msg['bytes_received_total']} / {msg['bytes_sent_total']} bytes"),
        ("aggregator RSS peak / mean", f"{rss['aggregator']['peak_mb']:.0f} / {rss['aggregator']['mean_mb']:.0f} MB"),
        ("broker RSS peak / mean", f"{rss['broker']['peak_mb']:.1f} / {rss['broker']['mean_mb']:.1f} MB"),
        ("largest station RSS peak", f"{rss['largest_station_peak_mb']:.0f} MB"),
        ("OA (synthetic scene)", f"{100 * res['oa']:.2f} %"),
        ("wall time", f"{res['seconds']['launch_to_done']:.0f} s"),
    ]
    w = max(len(k) for k, _ in rows)
    return "\n".join(f"| {k:<{w}} | {v} |" for k, v in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stations", type=int, default=16)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--rows", type=int, default=48)
    ap.add_argument("--cols", type=int, default=48)
    ap.add_argument("--bands", type=int, default=12)
    ap.add_argument("--train-per-class", type=int, default=12)
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--pretrain-steps", type=int, default=5)
    ap.add_argument("--round-timeout", type=float, default=120.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=3600.0, help="give up after this many seconds")
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "work" / "load"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "load.json"))
    args = ap.parse_args()
    print(f"load: {args.stations} stations x {args.rounds} rounds, one Mosquitto, horizontal mode", flush=True)
    res = run(args)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(table(res))
    print(f"wrote {out}")
    ok = res["rounds_completed"] == args.rounds and res["ledger_every_round_once"]
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
