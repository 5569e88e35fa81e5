"""Does one config win everywhere? FedDiff with the DEFAULTS of feddiff/config.py on six scenes
nobody tuned for, against an RBF SVM and a two-branch CNN (benchmarks/generalise_scenes.py
says how each scene is made).

Rows per scene: feddiff (per seed), feddiff_no_diffusion, svm (C/gamma by 3-fold CV on the
training pixels; deterministic, run once), cnn_two_branch; OA/AA/kappa mean +- sd, train
seconds, peak RSS. Every run is its own subprocess, so its peak RSS is its own. Writes
benchmarks/results/generalise.json as {"scenes": {scene: {method: {"oa_mean", "oa_sd", ...}}}}
and prints one table with FedDiff's margin over the SVM and the CNN.

    python benchmarks/generalise.py [--scenes trento_std syn_12x10] [--seeds 0 1 2] [--jobs 2]
        [--methods feddiff svm] [--merge] [--set model.dropout=0.5 train.self_train=off --out x.json]

``--set`` runs a candidate recipe (dotted keys over the defaults, YAML values) on every scene:
the recipe search is this benchmark rerun per candidate, never a per-scene change, and never
a look at test pixels beyond the final report each run writes. ``--reuse-denoisers`` keeps each
scene's and seed's stage 1 in benchmarks/work/denoisers (``denoiser_cache``), so a stage-2
candidate costs stage 2 only; its rows are those of a full run, but its train seconds are not.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

METHODS = ["feddiff", "feddiff_no_diffusion", "svm", "cnn_two_branch"]
OUT = ROOT / "benchmarks" / "results" / "generalise.json"


def recipe(sets: list[str], seed: int):
    """The default config with ``--set`` overrides and the run's seed."""
    from feddiff.config import config_from_dict
    from overrides import apply_sets

    data = apply_sets({"name": "generalise", "train": {"seed": seed}}, sets)
    return config_from_dict(data, "<generalise>", check_files=False)


def run_one(scene_name: str, method: str, seed: int, sets: list[str], reuse: bool = False) -> dict:
    """One (scene, method, seed) in this process; returns its row. ``reuse``: load stage 1 from
    (or store it in) the denoiser cache of ``denoiser_cache``."""
    from accuracy import run_cnn
    from generalise_scenes import SCENES

    if reuse:
        from denoiser_cache import reuse_denoisers

        reuse_denoisers()

    from feddiff.baselines import svm_baseline
    from feddiff.model.centralised import effective_config, train_centralised

    scene = SCENES[scene_name]()
    mods = list(scene.modalities)
    cfg = effective_config(recipe(sets, seed), scene)
    t0 = time.perf_counter()
    if method == "svm":
        r = svm_baseline(scene, mods, seed)
        row = {**r, "train_s": r["seconds"]["fit"]}
    elif method == "cnn_two_branch":
        row = run_cnn(cfg, scene)
    else:
        if method == "feddiff_no_diffusion":
            cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, use_diffusion=False))
        res = train_centralised(cfg, scene, mods, progress=False)
        sel = res.history.selection
        row = {**res.metrics, "train_s": res.history.seconds["pretrain"] + res.history.seconds["classifier"],
               "chosen": sel.get("chosen"), "val_oa": {c["name"]: c["best_val_oa"] for c in sel.get("candidates", [])}}
    row = {k: row[k] for k in ("oa", "aa", "kappa", "train_s", "chosen", "val_oa", "C", "gamma") if k in row}
    row["wall_s"] = time.perf_counter() - t0
    row["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return row


def run_subprocess(name: str, method: str, seed: int, sets: list[str], timeout: float, reuse: bool = False) -> dict | None:
    """One run in its own process (so its peak RSS is its own); None when it failed or ran over."""
    cmd = [sys.executable, __file__, "--one", name, method, str(seed), *(["--reuse-denoisers"] if reuse else []), "--set", *sets]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        print(f"{name} {method} seed {seed}: over {timeout:.0f} s, skipped", flush=True)
        return None
    if p.returncode != 0:
        print(f"{name} {method} seed {seed}: failed\n{p.stderr[-2000:]}", flush=True)
        return None
    r = {**json.loads(p.stdout.strip().splitlines()[-1]), "seed": seed}
    print(f"{name} {method} seed {seed}: OA {100 * r['oa']:.2f}  train {r['train_s']:.0f} s  RSS {r['peak_rss_mb']:.0f} MB {r.get('chosen') or ''}", flush=True)
    return r


def summarise(rows: list[dict], seeds: list[int]) -> dict:
    """Mean +- sd over the seeds' runs; the runs themselves are kept (``runs``), so a later
    ``--merge`` with other seeds adds to them instead of redoing them."""
    def stat(key: str, scale: float = 100.0) -> tuple[float, float]:
        v = np.array([r[key] for r in rows]) * scale
        return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0

    (oa, oa_sd), (aa, aa_sd), (ka, ka_sd) = stat("oa"), stat("aa"), stat("kappa", 1.0)
    out = {"oa_mean": oa, "oa_sd": oa_sd, "aa_mean": aa, "aa_sd": aa_sd, "kappa_mean": ka, "kappa_sd": ka_sd,
           "train_s": float(np.mean([r["train_s"] for r in rows])), "peak_rss_mb": float(max(r["peak_rss_mb"] for r in rows)),
           "seeds": seeds, "per_seed_oa": [round(100 * r["oa"], 2) for r in rows],
           "runs": rows}
    for extra in ("chosen", "val_oa", "C", "gamma"):
        if extra in rows[0]:
            out[extra] = [r[extra] for r in rows]
    return out


def table(scenes: dict) -> str:
    lines = ["| scene | method | OA % | AA % | kappa | train s | peak RSS MB | seeds |", "|---|---|---|---|---|---|---|---|"]
    for name, rows in scenes.items():
        for m, r in rows.items():
            lines.append(f"| {name} | {m} | {r['oa_mean']:.2f} +- {r['oa_sd']:.2f} | {r['aa_mean']:.2f} | {r['kappa_mean']:.4f} "
                         f"| {r['train_s']:.0f} | {r['peak_rss_mb']:.0f} | {len(r['seeds'])} |")
    lines += ["", "| scene | FedDiff - SVM (target >= +1.0) | FedDiff - CNN (target >= 0) |", "|---|---|---|"]
    for name, rows in scenes.items():
        if "feddiff" in rows:
            gap = {b: f"{rows['feddiff']['oa_mean'] - rows[b]['oa_mean']:+.2f}" if b in rows else "n/a" for b in ("svm", "cnn_two_branch")}
            lines.append(f"| {name} | {gap['svm']} | {gap['cnn_two_branch']} |")
    return "\n".join(lines)


def main() -> int:
    from generalise_scenes import SCENES

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", choices=list(SCENES), default=list(SCENES))
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    ap.add_argument("--set", nargs="*", default=[], dest="sets", help="candidate recipe: dotted.key=value over the defaults")
    ap.add_argument("--out", default=str(OUT))
    ap.add_argument("--merge", action="store_true", help="keep the other scenes/methods/seeds of an existing --out")
    ap.add_argument("--jobs", type=int, default=1, help="runs at a time (each run is single-threaded with train.threads=1)")
    ap.add_argument("--timeout", type=float, default=1200, help="seconds per run (the 20 min target)")
    ap.add_argument("--reuse-denoisers", action="store_true", help="screening: load stage 1 from benchmarks/work/denoisers "
                    "when this scene, seed and stage-1 config were fitted before (train s then counts stage 2 only)")
    ap.add_argument("--one", nargs=3, metavar=("SCENE", "METHOD", "SEED"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.one:
        print(json.dumps(run_one(args.one[0], args.one[1], int(args.one[2]), args.sets, args.reuse_denoisers)))
        return 0
    out = Path(args.out)
    doc = json.loads(out.read_text()) if args.merge and out.exists() else {}
    if doc.get("set", []) != args.sets:
        doc = {}
    doc.update({"config": "defaults of feddiff/config.py", "set": args.sets})
    scenes = doc.setdefault("scenes", {})
    todo = [(name, m, seed) for name in args.scenes for m in args.methods for seed in (args.seeds[:1] if m == "svm" else args.seeds)]
    with ThreadPoolExecutor(args.jobs) as pool:  # each run is its own subprocess: threads only wait
        futures = {pool.submit(run_subprocess, *job, args.sets, args.timeout, args.reuse_denoisers): job for job in todo}
        for fut in as_completed(futures):
            (name, m, seed), row = futures[fut], fut.result()
            if row is None:
                continue
            kept = [r for r in scenes.get(name, {}).get(m, {}).get("runs", []) if r["seed"] != seed]
            runs = sorted(kept + [row], key=lambda r: r["seed"])
            scenes.setdefault(name, {})[m] = summarise(runs, [r["seed"] for r in runs])
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(doc, indent=2))  # after every run: a stopped sweep keeps what it measured
    print(table(scenes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
