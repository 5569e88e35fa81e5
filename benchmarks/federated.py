"""Federated vs centralised FedDiff on Trento, and the communication module's rank trade-off.

    python benchmarks/federated.py [--config configs/trento_sim.yaml] [--seed 0] [--ranks 4 8 16 32 64] [--sweep-seeds 0 1 2]

1. centralised stage 2 (the upper bound), with the federated processes' thread count (the OA
reference: same model, same float arithmetic) and with the config's (the speed reference: the
whole machine for one process); 2. the same model as a real federated job (Mosquitto,
aggregator + two station processes, 1 thread each); 3. a rank sweep of the comm module
(centralised runs through the very module the stations use), averaged over stage-2 seeds
because one 40-epoch run on 819 training pixels moves by several points with the float noise
alone. Stage 1 is pretrained once and shared (see jobrunner.py). Writes
benchmarks/results/federated.json and prints tables.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from jobrunner import ROOT, WORK, cached, centralised_stage2, federated_job, pretrain, sample_sd, with_comm, with_train

from feddiff.config import load_config
from feddiff.data.loader import load_scene
from feddiff.model.comm import payload_bytes, raw_bytes

FED_THREADS = 1  # per federated process: 3 processes share this machine's 2 cores (jobrunner.federated_job)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "trento_sim.yaml"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ranks", type=int, nargs="+", default=[4, 8, 16, 32, 64])
    ap.add_argument("--sweep-seeds", type=int, nargs="+", default=[0, 1, 2], help="stage-2 seeds the rank sweep averages over")
    ap.add_argument("--work", default=str(WORK / "bench"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "federated.json"))
    ap.add_argument("--resume", action="store_true", help="reuse centralised/federated results saved in --work by an earlier run")
    args = ap.parse_args()
    cfg = load_config(args.config)
    cfg = with_train(cfg, seed=args.seed)
    scene = load_scene(cfg)
    work = Path(args.work)
    pre = pretrain(cfg, scene, work / "cache")
    print(f"stage 1 (pretraining both denoisers): {pre.get('seconds', float('nan')):.0f}s", flush=True)

    one = with_train(cfg, threads=FED_THREADS)
    ref = cached(work / "central_1thread.json", args.resume, lambda: centralised_stage2(one, scene, pre))
    print(f"centralised, {FED_THREADS} thread:  OA {100 * ref['oa']:.2f}  epoch {ref['epoch_s']:.2f}s", flush=True)
    central = cached(work / "central.json", args.resume, lambda: centralised_stage2(cfg, scene, pre))
    print(f"centralised, {cfg.train.threads} threads: OA {100 * central['oa']:.2f}  epoch {central['epoch_s']:.2f}s", flush=True)
    fed = cached(work / "federated.json", args.resume, lambda: federated_job(cfg, pre, work / "job", threads=FED_THREADS))
    print(f"federated:   OA {100 * fed['oa']:.2f}  epoch {fed['epoch_s']:.2f}s  bytes {fed['bytes']}", flush=True)

    dim = 2 * cfg.model.head_channels * 4
    sweep = {}
    for r in [*args.ranks, None]:
        oas = []
        for s in args.sweep_seeds:
            c = with_train(with_comm(cfg, r), seed=s)
            key = work / f"sweep_{'raw' if r is None else r}_seed{s}.json"
            oas.append(cached(key, args.resume, lambda: centralised_stage2(c, scene, pre))["oa"])
        per_sample = payload_bytes(1, r, cfg.model.comm.bits) if r else raw_bytes(1, dim)
        sweep["raw_float32" if r is None else f"rank_{r}"] = {"oa": float(np.mean(oas)), "oa_sd": sample_sd(oas),
                                                              "oa_runs": oas, "bytes_per_sample": per_sample, "reduction": raw_bytes(1, dim) / per_sample}
        print(f"  {'raw float32' if r is None else f'rank {r}':<12} OA {100 * np.mean(oas):.2f} (runs {', '.join(f'{100 * o:.2f}' for o in oas)})  {per_sample} B/sample/modality", flush=True)

    doc = {"config": args.config, "seed": args.seed, "federated_threads": FED_THREADS, "centralised_same_threads": ref, "centralised": central,
           "federated": fed, "rank_sweep": sweep, "sweep_seeds": args.sweep_seeds,
           "protocol_overhead": fed["epoch_s"] / central["epoch_s"], "oa_gap_points": 100 * (ref["oa"] - fed["oa"]),
           "oa_gap_vs_config_threads_points": 100 * (central["oa"] - fed["oa"])}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2, default=str))
    print("\n| run | OA % | epoch s | bytes/epoch/station (sent) |\n|---|---|---|---|")
    print(f"| centralised, {FED_THREADS} thread | {100 * ref['oa']:.2f} | {ref['epoch_s']:.2f} | - |")
    print(f"| centralised, {cfg.train.threads} threads | {100 * central['oa']:.2f} | {central['epoch_s']:.2f} | - |")
    sent = {k: v['sent_per_epoch'] for k, v in fed['bytes'].items()}
    print(f"| federated (MQTT) | {100 * fed['oa']:.2f} | {fed['epoch_s']:.2f} | {sent} |")
    print(f"\n| comm module (mean of stage-2 seeds {args.sweep_seeds}) | OA % | bytes/sample/modality | reduction vs float32 |\n|---|---|---|---|")
    for k, v in sweep.items():
        print(f"| {k} | {100 * v['oa']:.2f} +- {100 * v['oa_sd']:.2f} | {v['bytes_per_sample']} | {v['reduction']:.0f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
