"""How far does stage 2 alone move test OA, and does the head's dropout narrow it?

The accuracy benchmark gives each seed its own denoisers, so its spread mixes stage 1 with
stage 2. This one holds stage 1 fixed (the seed-0 denoisers, cached like the federated
benchmark's) and repeats only stage 2 (head and conv-path initialisation, feature noise, batch
order) over several seeds, once per dropout value and ensemble size (``model.members``): with
819 training pixels the head fits them all within ten epochs and the test OA of that fit is the
spread measured here.

    python benchmarks/stage2_spread.py [--config configs/trento_sim_accurate.yaml] [--seeds 0 1 2 3 4] [--dropouts 0 0.5] [--members 1]

Writes benchmarks/results/stage2_spread.json and prints a table (OA mean +- sd, min, max).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from jobrunner import ROOT, WORK, centralised_stage2, pretrain, sample_sd, with_model, with_train  # also puts the project on sys.path

from feddiff.config import load_config  # noqa: E402
from feddiff.data.loader import load_scene  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "trento_sim_accurate.yaml"))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4], help="stage-2 seeds (stage 1 is seed 0's)")
    ap.add_argument("--dropouts", type=float, nargs="+", default=[0.0, 0.5])
    ap.add_argument("--members", type=int, nargs="+", default=[1], help="stage-2 ensemble sizes")
    ap.add_argument("--cache", default=str(WORK / "bench" / "cache"), help="stage-1 cache shared with the other benchmarks")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "stage2_spread.json"))
    args = ap.parse_args()
    cfg0 = load_config(args.config)
    scene = load_scene(cfg0)
    t0 = time.perf_counter()
    pre = pretrain(with_train(cfg0, seed=0), scene, Path(args.cache))
    print(f"stage 1 (seed 0) took {pre['seconds']:.0f} s when it ran; now {time.perf_counter() - t0:.0f} s", flush=True)
    rows = {}
    for k in args.members:
        for p in args.dropouts:
            oas = []
            for seed in args.seeds:
                r = centralised_stage2(with_model(with_train(cfg0, seed=seed), dropout=p, members=k), scene, pre)
                oas.append(100 * r["oa"])
                print(f"members {k} dropout {p:g} stage-2 seed {seed}: OA {oas[-1]:.2f}", flush=True)
            name = f"dropout_{p:g}" if k == 1 else f"members_{k}_dropout_{p:g}"
            rows[name] = {"dropout": p, "members": k, "oas": oas, "oa_mean": float(np.mean(oas)), "oa_sd": sample_sd(oas)}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": args.config, "stage1_seed": 0, "seeds": args.seeds, "rows": rows}, indent=2))
    print("\n| members | head dropout | OA % (mean +- sd) | min | max | per seed |\n|---|---|---|---|---|---|")
    for r in rows.values():
        per = ", ".join(f"{o:.2f}" for o in r["oas"])
        print(f"| {r['members']} | {r['dropout']:g} | {r['oa_mean']:.2f} +- {r['oa_sd']:.2f} | {min(r['oas']):.2f} | {max(r['oas']):.2f} | {per} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
