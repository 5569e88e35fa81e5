"""Inference benchmark on Trento: PyTorch eager vs ONNX Runtime (fp32, fp16-weights, int8).

Why each variant runs in its own subprocess: peak RSS is a per-process high-water mark, so
measuring the variants in one process would charge each one with its predecessors' memory.
Every worker classifies the same pixels with the same batch, from the same normalised, padded
rasters, through the batch loop ``feddiff infer`` runs (``export.infer.classify_pixels``).

Why schedules (``variant@WxT``: W batches side by side, T intra-op threads each): a batch of
8 x 8 patches is a long chain of small operators that two intra-op threads barely share, while
two single-threaded batches side by side keep both cores busy. That holds for PyTorch too, so
PyTorch runs under both schedules and every ONNX variant is compared with the *faster* PyTorch
schedule of the same round, never only with the one ONNX Runtime is best at.

    python benchmarks/inference.py --checkpoint out/trento/model.pt
    python benchmarks/inference.py                       # trains a small model first (minutes)
    python benchmarks/inference.py --max-pixels 20000 --test-pixels 3000   # a quicker look
    python benchmarks/inference.py --config C --as-configured --set model.members=1   # time C's own architecture
    python benchmarks/inference.py --checkpoint C --batch 2048 --out benchmarks/results/inference_batch2048.json

The variants run in interleaved rounds (``--repeats``, default 3): this machine's speed drifts
by tens of percent from one minute to the next, so each variant's median is reported, and each
ONNX variant is also compared with the fastest PyTorch schedule of the same round. Writes
benchmarks/results/inference.json (or ``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
CONFIG = ROOT / "configs" / "trento_sim.yaml"
RESULTS = ROOT / "benchmarks" / "results" / "inference.json"
SMALL = {"unet": {"base_channels": 16}, "head_channels": 32, "comm": {"rank": 16}}

from inference_runners import make_runner, peak_rss_mib, pixel_sets, runtime_of  # noqa: E402


def worker(args: argparse.Namespace) -> None:
    """One variant under one schedule: classify the timed pixels and the test pixels; print one
    JSON line."""
    from export.infer import padded_sources
    from feddiff.metrics import classification_metrics

    scene, (tr, tc), (er, ec, ey) = pixel_sets(args.config, args.max_pixels, args.test_pixels)
    r = make_runner(args.variant, args.threads, Path(args.checkpoint), Path(args.model) if args.model else None)
    padded = padded_sources(r.meta, scene.modalities)
    r.classify(padded, tr[: args.batch * r.workers], tc[: args.batch * r.workers], args.batch)  # warm-up (allocations, lazy init)
    t0 = time.perf_counter()
    r.classify(padded, tr, tc, args.batch)
    seconds = time.perf_counter() - t0
    m = classification_metrics(ey, r.classify(padded, er, ec, args.batch), len(r.meta.class_names))
    rss = peak_rss_mib()
    print(json.dumps({"variant": args.variant, "runtime": r.name, "workers": r.workers, "threads_per_worker": r.threads, "provider": r.provider, "pixels": int(tr.shape[0]), "seconds": seconds, "pixels_per_s": tr.shape[0] / seconds, "peak_rss_mib": rss, "oa": m["oa"], "aa": m["aa"], "kappa": m["kappa"], "test_pixels": int(ey.shape[0])}))


def paired_worker(args: argparse.Namespace) -> None:
    """Every variant in one process, in alternating phases of ``--phase-pixels`` (a second or
    so each, order reversed every other phase), so a slow spell of the machine hits every
    variant alike; each phase's ONNX speed is divided by the fastest PyTorch schedule of the
    same phase. Prints one JSON line."""
    from export.infer import padded_sources

    scene, (tr, tc), _ = pixel_sets(args.config, args.max_pixels, 1)
    runners = [make_runner(v, args.threads, Path(args.checkpoint), Path(args.work) / f"model.{runtime_of(v)}.onnx") for v in args.variants.split(",")]
    padded = padded_sources(runners[0].meta, scene.modalities)
    for r in runners:
        r.classify(padded, tr[: args.batch * r.workers], tc[: args.batch * r.workers], args.batch)
    speeds: dict[str, list[float]] = {r.spec: [] for r in runners}
    n = args.phase_pixels
    for phase in range(args.paired_phases):
        idx = np.arange(phase * n, (phase + 1) * n) % tr.shape[0]
        for r in runners if phase % 2 == 0 else runners[::-1]:
            t0 = time.perf_counter()
            r.classify(padded, tr[idx], tc[idx], args.batch)
            speeds[r.spec].append(n / (time.perf_counter() - t0))
    torch_best = np.max([v for k, v in speeds.items() if runtime_of(k) == "torch"], axis=0)
    doc = {"phase_pixels": n, "phases": args.paired_phases, "variants": {}}
    for spec, v in speeds.items():
        ratio = np.asarray(v) / torch_best
        doc["variants"][spec] = {"pixels_per_s_median": float(np.median(v)), "ratio_vs_fastest_torch": {"median": float(np.median(ratio)), "min": float(ratio.min()), "max": float(ratio.max())}}
    print(json.dumps(doc))


def train_small(config: str, out: Path, as_configured: bool = False, sets: tuple[str, ...] = ()) -> Path:
    """A Trento model trained briefly (minutes on 2 cores): enough to compare runtimes and
    quantisation. Small unless ``as_configured`` keeps the config's sizes (to time a deployed
    architecture; its OA then says nothing); ``sets``: ``--set`` overrides of the config."""
    from feddiff.config import config_from_dict, config_to_dict, load_config
    from feddiff.data.loader import load_scene
    from feddiff.model.checkpoint import save_checkpoint
    from feddiff.model.centralised import train_centralised
    from overrides import apply_sets

    cfg = load_config(config)
    d = apply_sets(config_to_dict(cfg), list(sets))
    if not as_configured:
        d["model"]["unet"].update(SMALL["unet"])
        d["model"]["head_channels"] = SMALL["head_channels"]
        d["model"]["comm"].update(SMALL["comm"])
    d["train"].update({"pretrain_steps": 150, "epochs": 8})
    cfg = config_from_dict(d, config)
    scene = load_scene(cfg)
    res = train_centralised(cfg, scene, list(scene.modalities), progress=True)
    path = out / "model.pt"
    save_checkpoint(path, res.net, cfg, {m: s.stats for m, s in res.sources.items()}, scene.class_names, res.metrics)
    return path


def run_worker(args: argparse.Namespace, variant: str, ck: Path, model: Path | None) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--variant", variant, "--config", args.config, "--checkpoint", str(ck), "--batch", str(args.batch), "--threads", str(args.threads), "--max-pixels", str(args.max_pixels), "--test-pixels", str(args.test_pixels)]
    if model is not None:
        cmd += ["--model", str(model)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"worker {variant} failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def run_paired(args: argparse.Namespace, ck: Path) -> dict:
    print(f"paired: {args.paired_phases} phases of {args.phase_pixels} px per variant, one process", flush=True)
    cmd = [sys.executable, __file__, "--paired-worker", "--variants", args.variants, "--config", args.config, "--checkpoint", str(ck), "--work", args.work, "--batch", str(args.batch), "--threads", str(args.threads), "--max-pixels", str(args.max_pixels), "--paired-phases", str(args.paired_phases), "--phase-pixels", str(args.phase_pixels)]
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"paired worker failed:\n{r.stderr[-3000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def summarise(runs: list[dict], export_info: dict) -> dict:
    """Median speed over the rounds (every run listed beside it); accuracy from the first run,
    since every run classifies the same pixels with the same model."""
    row = dict(runs[0])
    speeds = [r["pixels_per_s"] for r in runs]
    row["pixels_per_s"] = float(np.median(speeds))
    row["seconds"] = float(np.median([r["seconds"] for r in runs]))
    row["runs_pixels_per_s"] = speeds
    row["peak_rss_mib"] = max(r["peak_rss_mib"] for r in runs)
    row.update(export_info)
    return row


def same_round_ratios(runs: dict[str, list[dict]]) -> dict[str, dict]:
    """Each ONNX variant's speed over the fastest PyTorch schedule of the same round, then the
    median: the fair comparison on a machine whose speed drifts between minutes, and one that
    gives PyTorch its best schedule too rather than only the one ONNX Runtime is best at."""
    torch_runs = [rs for v, rs in runs.items() if runtime_of(v) == "torch"]
    if not torch_runs:
        return {}
    out = {}
    for v, rs in runs.items():
        if runtime_of(v) == "torch":
            continue
        best = [max(t[i]["pixels_per_s"] for t in torch_runs) for i in range(len(rs))]
        ratios = [r["pixels_per_s"] / b for r, b in zip(rs, best)]
        out[v] = {"median": float(np.median(ratios)), "rounds": ratios}
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", default=None, help="trained Trento checkpoint (default: train a small one)")
    p.add_argument("--config", default=str(CONFIG))
    p.add_argument("--work", default=str(ROOT / "benchmarks" / "results" / "inference_work"))
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--max-pixels", type=int, default=0, help="time only the first N pixels (0: the whole scene)")
    p.add_argument("--test-pixels", type=int, default=0, help="OA on N random test pixels (0: all)")
    p.add_argument("--variants", default="torch,torch@2x1,fp32,fp32@2x1,fp16@2x1,int8@2x1", help="comma list of torch|fp32|fp16|int8, each optionally @WxT: W batches side by side on T intra-op threads each (default schedule: 1 x --threads)")
    p.add_argument("--out", default=str(RESULTS), help="results JSON (default: benchmarks/results/inference.json)")
    p.add_argument("--repeats", type=int, default=3, help="interleaved rounds of every variant (median reported)")
    p.add_argument("--paired-phases", type=int, default=24, help="phases of the one-process paired comparison (0: skip it)")
    p.add_argument("--phase-pixels", type=int, default=4096, help="pixels per variant per paired phase")
    p.add_argument("--as-configured", action="store_true", help="without --checkpoint: train the config's own sizes briefly (timing only)")
    p.add_argument("--set", nargs="*", default=[], dest="sets", help="without --checkpoint: dotted.key=value over the config")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--paired-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--variant", default=None, help=argparse.SUPPRESS)
    p.add_argument("--model", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        worker(args)
        return 0
    if args.paired_worker:
        paired_worker(args)
        return 0
    if not Path(args.config).exists():
        print(f"skip: {args.config} not found")
        return 0
    try:
        from feddiff.config import load_config
        from feddiff.data.loader import load_scene

        load_scene(load_config(args.config))
    except Exception as exc:  # noqa: BLE001 - missing shared data is a skip, not a failure
        print(f"skip: Trento scene not loadable ({exc})")
        return 0
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    ck = Path(args.checkpoint) if args.checkpoint else train_small(args.config, work, args.as_configured, tuple(args.sets))

    from export.onnx_export import export_checkpoint

    variants = args.variants.split(",")
    models: dict[str, Path] = {}
    export_info: dict[str, dict] = {}
    for name in dict.fromkeys(runtime_of(v) for v in variants):
        if name == "torch":
            continue
        path = work / f"model.{name}.onnx"
        res = export_checkpoint(ck, path, quantize="none" if name == "fp32" else name, config=args.config)
        models[name] = path
        q = res.quantized or res.parity
        export_info[name] = {"size_bytes": path.stat().st_size, "vs_torch_max_abs_logit_diff": q.max_abs_diff, "vs_torch_argmax_agree": q.argmax_agree}
    runs: dict[str, list[dict]] = {v: [] for v in variants}
    for rep in range(args.repeats):  # interleaved rounds: a slow spell of the machine hits every variant
        for v in variants:
            print(f"round {rep + 1}/{args.repeats}: {v}", flush=True)
            runs[v].append(run_worker(args, v, ck, models.get(runtime_of(v))))
    paired = run_paired(args, ck) if args.paired_phases > 0 else None
    rows = [summarise(runs[v], export_info.get(runtime_of(v), {"size_bytes": ck.stat().st_size})) for v in variants]
    doc = {"config": args.config, "checkpoint": str(ck), "batch": args.batch, "threads": args.threads, "max_pixels": args.max_pixels, "test_pixels": args.test_pixels, "repeats": args.repeats, "results": rows, "ratios_vs_torch": same_round_ratios(runs), "paired": paired}
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print(f"{'variant':<12} {'runtime':<22} {'schedule':>9} {'px/s':>9} {'pixels':>8} {'peak RSS MiB':>13} {'size MB':>8} {'OA %':>7}")
    for r in rows:
        sched = f"{r['workers']}x{r['threads_per_worker']}"
        print(f"{r['variant']:<12} {r['provider']:<22} {sched:>9} {r['pixels_per_s']:>9.0f} {r['pixels']:>8} {r['peak_rss_mib']:>13.0f} {r['size_bytes'] / 1e6:>8.2f} {100 * r['oa']:>7.2f}")
    for v, r in doc["ratios_vs_torch"].items():
        print(f"{v} vs the fastest torch schedule, same round: {r['median']:.2f}x (rounds: {', '.join(f'{x:.2f}' for x in r['rounds'])})")
    if paired is not None:
        for v, r in paired["variants"].items():
            if runtime_of(v) != "torch":
                q = r["ratio_vs_fastest_torch"]
                print(f"{v} vs the fastest torch schedule, paired in one process ({paired['phases']} phases of {paired['phase_pixels']} px): median {q['median']:.2f}x (min {q['min']:.2f}, max {q['max']:.2f})")
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
