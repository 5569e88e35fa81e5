"""A federated epoch over slow links: every station reaches the broker through a delaying proxy.

    python benchmarks/link_delay.py [--rtt-ms 0 50] [--epochs 10] [--repeats 2] [--out benchmarks/results/link_delay.json]

Why a user-space proxy: the kernel here has no netem. The proxy (asyncio, one per station)
holds every chunk it reads for ``rtt/2`` in each direction and then writes it, in order; it
delays without throttling, as a long link does. It also parses the MQTT stream to count the
request/reply exchanges a station takes part in (FORWARD -> FEATURES, JOB -> READY,
COMMIT -> COMMITTED, LOGITS -> CE_GRAD), so the delay an unpipelined protocol would add,
exchanges x RTT, is counted rather than assumed. Both stations sit behind their own proxy (both
links are slow); the aggregator and the broker share the central host.

An epoch is the time between two consecutive ``round_committed`` events of the aggregator
(round 0 is left out: it includes the stations' pretraining); the runs of each RTT alternate
(0, 50, 0, 50, ...) so that load from elsewhere on the machine hits both alike, and the median
epoch of all of a delay's runs is compared. ``hidden`` is the share of
exchanges x RTT that did not show up in the epoch time: 1 means the pipelining hid the link
entirely, 0 that every exchange paid its round trip; it is given from the median epochs and
from the fastest ones (the least disturbed by other load). Writes JSON and prints a table.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feddiff.protocol import jobs  # noqa: E402
from feddiff.protocol.envelope import unpack  # noqa: E402
from feddiff_app.broker import start_mosquitto  # noqa: E402

# The chaos suite's small job: little compute per step, so the link weighs as much as it can.
JOB = {
    "name": "linkdelay",
    "scene": {"synthetic": {"seed": 3, "rows": 40, "cols": 48, "bands": 12, "train_per_class": 25}},
    "model": {"unet": {"base_channels": 8, "num_res_blocks": 1}, "head_channels": 16, "feature_timesteps": [5, 100], "comm": {"rank": 8}},
    "train": {"pretrain_steps": 20, "pretrain_batch": 32, "epochs": 4, "batch_size": 8, "threads": 1, "seed": 0},
    "federation": {"clients": {"hsi_station": {"modalities": ["hsi"]}, "lidar_station": {"modalities": ["lidar"]}},
                   "round_timeout_s": 60, "write_map": False},
}
REQUESTS = {jobs.FORWARD: jobs.FEATURES, jobs.JOB: jobs.READY, jobs.COMMIT: jobs.COMMITTED, jobs.LOGITS: jobs.CE_GRAD}


class MqttCounter:
    """Content types of the PUBLISH packets in one direction of an MQTT 3.1.1 stream."""

    def __init__(self) -> None:
        self.buf = bytearray()
        self.seen: list[tuple[float, str]] = []  # (wall time, content type)

    def feed(self, data: bytes) -> None:
        self.buf += data
        while True:
            length, mult, i = 0, 1, 1
            while i < len(self.buf) and i <= 4:
                b = self.buf[i]
                length += (b & 0x7F) * mult
                mult *= 128
                i += 1
                if not b & 0x80:
                    break
            else:
                return
            if len(self.buf) < i + length:
                return
            packet, self.buf = bytes(self.buf[: i + length]), self.buf[i + length:]
            if packet[0] >> 4 == 3:
                self._publish(packet, i)

    def _publish(self, packet: bytes, i: int) -> None:
        qos = (packet[0] >> 1) & 3
        tlen = int.from_bytes(packet[i:i + 2], "big")
        topic = packet[i + 2:i + 2 + tlen].decode("utf-8", "replace")
        body = packet[i + 2 + tlen + (2 if qos else 0):]
        try:
            self.seen.append((time.time(), unpack(topic, body, 10**9).header.content_type))
        except Exception:  # noqa: BLE001 - presence flags and the like are not envelopes
            pass

    def count(self, kind: str, t0: float, t1: float) -> int:
        return sum(1 for t, k in self.seen if k == kind and t0 <= t < t1)


class DelayProxy:
    """127.0.0.1:<port> -> the broker, ``one_way_s`` added to each direction."""

    def __init__(self, broker_port: int, one_way_s: float) -> None:
        self.broker_port, self.delay = broker_port, one_way_s
        self.up, self.down = MqttCounter(), MqttCounter()  # station -> broker, broker -> station
        self.loop = asyncio.new_event_loop()
        started = threading.Event()
        threading.Thread(target=self._run, args=(started,), daemon=True).start()
        started.wait(10)

    def _run(self, started: threading.Event) -> None:
        asyncio.set_event_loop(self.loop)
        self.server = self.loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", 0))
        self.port = self.server.sockets[0].getsockname()[1]
        started.set()
        self.loop.run_forever()

    async def _client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_r, up_w = await asyncio.open_connection("127.0.0.1", self.broker_port)
        for w in (writer, up_w):
            w.transport.get_extra_info("socket").setsockopt(6, 1, 1)  # TCP_NODELAY, like the broker
        await asyncio.gather(self._pipe(reader, up_w, self.up), self._pipe(up_r, writer, self.down))

    async def _pipe(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, counter: MqttCounter) -> None:
        """Reader and writer apart, joined by a queue of (due, chunk): chunks in flight overlap,
        so the delay adds latency and takes no bandwidth."""
        queue: asyncio.Queue = asyncio.Queue()

        async def deliver() -> None:
            while (item := await queue.get()) is not None:
                due, chunk = item
                await asyncio.sleep(max(0.0, due - self.loop.time()))
                dst.write(chunk)
                await dst.drain()
            dst.close()

        sender = self.loop.create_task(deliver())
        try:
            while chunk := await src.read(65536):
                counter.feed(chunk)
                queue.put_nowait((self.loop.time() + self.delay, chunk))
        except (ConnectionError, OSError):
            pass
        queue.put_nowait(None)
        await sender

    def exchanges(self, t0: float, t1: float) -> dict[str, int]:
        """Request/reply exchanges this station answered between wall times t0 and t1."""
        return {req: min(self.down.count(req, t0, t1), self.up.count(rep, t0, t1)) for req, rep in REQUESTS.items()}

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.server.close)


def run_job(work: Path, rtt_s: float, epochs: int) -> dict:
    """One federated job with both stations behind ``rtt_s`` links; epoch times and exchanges."""
    shutil.rmtree(work, ignore_errors=True)  # a state folder of an earlier run belongs to another job
    work.mkdir(parents=True)
    broker = start_mosquitto(workdir=work / "broker")
    proxies = {s: DelayProxy(broker.port, rtt_s / 2) for s in JOB["federation"]["clients"]}
    job_name = f"linkdelay{round(rtt_s * 1000)}x{time.time_ns() % 10**6}"  # fresh: no session of an earlier run applies
    procs = []
    try:
        def config(party: str, port: int) -> Path:
            doc = json.loads(json.dumps(JOB))
            doc["train"]["epochs"] = epochs
            doc["federation"].update(job=job_name, state_dir=str(work / "state"), broker={"port": port})
            path = work / f"job-{party}.yaml"
            path.write_text(yaml.safe_dump(doc))
            return path

        cli = [sys.executable, "-m", "feddiff_app.cli"]
        for party in ["aggregator", *proxies]:
            args = ["aggregator"] if party == "aggregator" else ["edge", "--id", party]
            cfg = config(party, broker.port if party == "aggregator" else proxies[party].port)
            with open(work / f"{party}.log", "wb") as log:
                procs.append(subprocess.Popen([*cli, *args, "--config", str(cfg)], stdout=log, stderr=subprocess.STDOUT))
        for p in procs:
            if p.wait(1800) != 0:
                raise SystemExit(f"{p.args[3:5]} exited {p.returncode}; logs in {work}")
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
        for px in proxies.values():
            px.close()
        broker.kill()
    events = [json.loads(ln) for ln in (work / "state" / "aggregator" / "aggregator.log.jsonl").read_text().splitlines() if ln.strip()]
    commits = [e["ts"] for e in events if e.get("event") == "round_committed"]
    epoch_s = [b - a for a, b in zip(commits, commits[1:])]
    # what the timed epochs (after round 0's commit, up to the last commit) exchanged
    per_station = {s: px.exchanges(commits[0], commits[-1]) for s, px in proxies.items()}
    return {"rtt_ms": round(rtt_s * 1000), "epochs": epochs, "epoch_s": epoch_s, "epoch_median_s": statistics.median(epoch_s),
            "exchanges_timed_epochs": per_station, "exchanges_per_epoch": {s: sum(v.values()) / len(epoch_s) for s, v in per_station.items()}}


def merge(jobs_of_one_rtt: list[dict]) -> dict:
    """One row per RTT: the median over every timed epoch of its jobs."""
    epochs = [e for j in jobs_of_one_rtt for e in j["epoch_s"]]
    first = jobs_of_one_rtt[0]
    return {"rtt_ms": first["rtt_ms"], "epoch_median_s": statistics.median(epochs), "epoch_min_s": min(epochs), "epoch_s": epochs,
            "exchanges_per_epoch": first["exchanges_per_epoch"], "jobs": jobs_of_one_rtt}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rtt-ms", type=float, nargs="+", default=[0.0, 50.0])
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=2, help="jobs per RTT, alternating between the RTTs")
    ap.add_argument("--work", default=str(ROOT / "benchmarks" / "work" / "link-delay"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "link_delay.json"))
    args = ap.parse_args()
    jobs_run = [run_job(Path(args.work) / f"rtt{int(r)}-{i}", r / 1000, args.epochs) for i in range(args.repeats) for r in args.rtt_ms]
    runs = [merge([j for j in jobs_run if j["rtt_ms"] == round(r)]) for r in args.rtt_ms]
    base = runs[0]
    print(f"{'RTT ms':>7} {'epoch s':>8} {'added s':>8} {'min epoch s':>12} {'added s':>8} {'exchanges/epoch':>16} {'x RTT s':>8} {'hidden':>7} {'(min)':>6}")
    for run in runs:
        n = max(run["exchanges_per_epoch"].values())  # the stations answer in parallel: the busier one bounds
        unhidden = n * run["rtt_ms"] / 1000
        added = run["epoch_median_s"] - base["epoch_median_s"]
        added_min = run["epoch_min_s"] - base["epoch_min_s"]
        run.update(added_s=added, added_min_s=added_min, exchanges_x_rtt_s=unhidden,
                   hidden=(1 - added / unhidden) if unhidden else None, hidden_min=(1 - added_min / unhidden) if unhidden else None)
        pct = {k: f"{100 * run[k]:.0f} %" if run[k] is not None else "-" for k in ("hidden", "hidden_min")}
        print(f"{run['rtt_ms']:>7} {run['epoch_median_s']:>8.2f} {added:>8.2f} {run['epoch_min_s']:>12.2f} {added_min:>8.2f} "
              f"{n:>16.1f} {unhidden:>8.2f} {pct['hidden']:>7} {pct['hidden_min']:>6}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"job": JOB, "command": " ".join(sys.argv), "runs": runs}, indent=1) + "\n")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
