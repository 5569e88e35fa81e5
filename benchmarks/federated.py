"""Federated vs centralised FedDiff on Trento, and the communication module's rank trade-off.

    python benchmarks/federated.py [--config configs/trento_sim.yaml] [--seed 0] [--ranks 4 8 16 32 64]

1. centralised stage 2 (the upper bound), 2. the same model as a real federated job (Mosquitto,
aggregator + two station processes), 3. a rank sweep of the comm module (centralised runs
through the very module the stations use; federated = centralised for a given seed, row 1 and 2
show how close). Stage 1 is pretrained once and shared (see jobrunner.py). Writes
benchmarks/results/federated.json and prints tables.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path

from jobrunner import ROOT, centralised_stage2, federated_job, pretrain, with_comm

from feddiff.config import load_config
from feddiff.data.loader import load_scene
from feddiff.model.comm import payload_bytes, raw_bytes


def cached(path: Path, resume: bool, compute) -> dict:
    """Long runs are saved as they finish, so a sweep can be extended without redoing them."""
    if resume and path.exists():
        return json.loads(path.read_text())
    doc = compute()
    path.write_text(json.dumps(doc, default=str))
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "trento_sim.yaml"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ranks", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--work", default="/tmp/feddiff-bench")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "federated.json"))
    ap.add_argument("--resume", action="store_true", help="reuse centralised/federated results saved in --work by an earlier run")
    args = ap.parse_args()
    cfg = load_config(args.config)
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, seed=args.seed))
    scene = load_scene(cfg)
    work = Path(args.work)
    pre = pretrain(cfg, scene, work / "cache")
    print(f"stage 1 (pretraining both denoisers): {pre.get('seconds', float('nan')):.0f}s", flush=True)

    central = cached(work / "central.json", args.resume, lambda: centralised_stage2(cfg, scene, pre))
    print(f"centralised: OA {100 * central['oa']:.2f}  epoch {central['epoch_s']:.2f}s", flush=True)
    fed = cached(work / "federated.json", args.resume, lambda: federated_job(cfg, pre, work / "job"))
    print(f"federated:   OA {100 * fed['oa']:.2f}  epoch {fed['epoch_s']:.2f}s  bytes {fed['bytes']}", flush=True)

    dim = 2 * cfg.model.head_channels * 4
    sweep = {}
    for r in [*args.ranks, None]:
        res = central if r == cfg.model.comm.rank and cfg.model.comm.enabled else centralised_stage2(with_comm(cfg, r), scene, pre)
        per_sample = payload_bytes(1, r, cfg.model.comm.bits) if r else raw_bytes(1, dim)
        sweep["raw_float32" if r is None else f"rank_{r}"] = {"oa": res["oa"], "bytes_per_sample": per_sample, "reduction": raw_bytes(1, dim) / per_sample}
        print(f"  {'raw float32' if r is None else f'rank {r}':<12} OA {100 * res['oa']:.2f}  {per_sample} B/sample/modality", flush=True)

    doc = {"config": args.config, "seed": args.seed, "centralised": central, "federated": fed, "rank_sweep": sweep,
           "protocol_overhead": fed["epoch_s"] / central["epoch_s"], "oa_gap_points": 100 * (central["oa"] - fed["oa"])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2, default=str))
    print("\n| run | OA % | epoch s | bytes/epoch/station (sent) |\n|---|---|---|---|")
    print(f"| centralised | {100 * central['oa']:.2f} | {central['epoch_s']:.2f} | - |")
    sent = {k: v['sent_per_epoch'] for k, v in fed['bytes'].items()}
    print(f"| federated (MQTT) | {100 * fed['oa']:.2f} | {fed['epoch_s']:.2f} | {sent} |")
    print("\n| comm module | OA % | bytes/sample/modality | reduction vs float32 |\n|---|---|---|---|")
    for k, v in sweep.items():
        print(f"| {k} | {100 * v['oa']:.2f} | {v['bytes_per_sample']} | {v['reduction']:.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
