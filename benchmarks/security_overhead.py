"""Cost of security on Trento: plaintext vs signed (Ed25519 + X25519/AES-GCM, TLS, ACL) vs HE
(CKKS additive fusion with a third-party label holder), same seed and stage-1 denoisers.

    python benchmarks/security_overhead.py [--config configs/trento_sim.yaml] [--seed 0] [--modes none signed he]
                                           [--stage2-seeds 0 1 2] [--resume]

Writes benchmarks/results/security_overhead.json and prints a table: epoch wall time (median
over the stage-2 seeds' jobs), bytes (from the first seed's job), OA (mean over the stage-2
seeds: one 40-epoch run moves by points with float noise alone, so one run cannot tell whether
HE costs accuracy), key and context sizes. Each job's result is kept in --work; --resume reuses them.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
from jobrunner import ROOT, cached, federated_job, pretrain, with_train

from feddiff.config import load_config
from feddiff.data.loader import load_scene


def key_sizes() -> dict:
    from crypto.he import encrypt_batch, make_secret_context, public_bytes
    from crypto.provision import init_job, issue

    ctx = make_secret_context()
    with tempfile.TemporaryDirectory() as d:
        init_job("sizes", Path(d))
        issue(Path(d), "edge", "s")
        party = Path(d) / "parties" / "s"
        files = {p.name: p.stat().st_size for p in party.iterdir()}
    return {"ckks_public_context_bytes": len(public_bytes(ctx)), "ckks_ciphertext_bytes": len(encrypt_batch(ctx, np.zeros((1, 32)))[0]),
            "party_key_files_bytes": files}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "trento_sim.yaml"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", nargs="+", default=["none", "signed", "he"], choices=["none", "signed", "he"])
    ap.add_argument("--stage2-seeds", type=int, nargs="+", default=None, help="stage-2 seeds (head init, batch order) on the --seed denoisers; default: --seed only")
    ap.add_argument("--resume", action="store_true", help="reuse job results kept in --work by an earlier run")
    ap.add_argument("--work", default="/tmp/feddiff-bench-sec")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "security_overhead.json"))
    args = ap.parse_args()
    cfg = load_config(args.config)
    cfg = with_train(cfg, seed=args.seed)
    scene = load_scene(cfg)
    pre = pretrain(cfg, scene, Path(args.work) / "cache")
    rows = {}
    seeds = args.stage2_seeds or [args.seed]
    for mode in args.modes:
        holder = "label_holder" if mode == "he" else "aggregator"
        runs = []
        for s in seeds:
            c = with_train(cfg, seed=s)
            r = cached(Path(args.work) / f"result_{mode}_seed{s}.json", args.resume,
                       lambda: federated_job(c, pre, Path(args.work) / f"sec_{mode}", security=mode, label_holder=holder))
            runs.append(r)
            print(f"{mode:<7} seed {s}  OA {100 * r['oa']:.2f}  epoch {r['epoch_s']:.2f}s  bytes {r['bytes']}", flush=True)
        # epoch time: the median over every seed's job (each already a median over its epochs),
        # since one job's timing moves by 10-20 % with this machine's drift
        rows[mode] = {**runs[0], "epoch_s": float(np.median([r["epoch_s"] for r in runs])), "epoch_s_runs": [r["epoch_s"] for r in runs],
                      "oa_runs": [r["oa"] for r in runs], "oa_mean": float(np.mean([r["oa"] for r in runs])), "stage2_seeds": seeds}
    doc = {"config": args.config, "seed": args.seed, "rows": rows, "sizes": key_sizes()}
    if "none" in rows and "signed" in rows:
        doc["signed_vs_plain"] = rows["signed"]["epoch_s"] / rows["none"]["epoch_s"]
    if "signed" in rows and "he" in rows:
        doc["he_vs_signed"] = rows["he"]["epoch_s"] / rows["signed"]["epoch_s"]
        doc["he_oa_gap_points"] = 100 * (rows["signed"]["oa_mean"] - rows["he"]["oa_mean"])
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2, default=str))
    print(f"\n| mode | OA % (mean of seeds {seeds}) | runs | epoch s | sent/epoch/station (bytes) |\n|---|---|---|---|---|")
    for mode, r in rows.items():
        sent = {k: int(v["sent_per_epoch"]) for k, v in r["bytes"].items() if v["sent_per_epoch"] is not None}
        runs = ", ".join(f"{100 * o:.2f}" for o in r["oa_runs"])
        print(f"| {mode} | {100 * r['oa_mean']:.2f} | {runs} | {r['epoch_s']:.2f} | {sent} |")
    print(f"\nsizes: {doc['sizes']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
