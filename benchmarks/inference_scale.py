"""Does ``feddiff infer`` stay within bounded memory as scenes grow? Peak RSS and px/s on
synthetic GeoTIFF scenes of about 1 and 4 megapixels.

Why synthetic scenes: no real scene of 4 Mpx with both modalities is at hand, and what is
measured here is the strip loop (windowed reads, halo padding, map written as it is made),
not accuracy. The scenes carry the model's band counts (a few land-cover fields with their own
spectra, stored int16 and tiled like a delivered flight line) and sparse test labels, so the
metrics path runs too. Each scene is classified in its own subprocess, because peak RSS is a
per-process high-water mark; each size runs ``--repeats`` times, interleaved, and the median
speed is reported (this machine is shared, its speed drifts).

Why a tiny model by default: the quantity under test is how memory and speed scale with scene
size, and the default model is fast enough to classify 5 Mpx in minutes on 2 cores; pass
``--model`` to measure a deployed one.

    python benchmarks/inference_scale.py                    # tiny model trained first (seconds)
    python benchmarks/inference_scale.py --model out/trento/model.onnx --sizes 1024x1024,2048x2048
    python benchmarks/inference_scale.py --compare configs/trento_sim.yaml   # + whole Trento, strips vs in memory

Targets: the 4 Mpx peak RSS <= 1.2 x the 1 Mpx peak, px/s within 10 %. Writes
benchmarks/results/inference_scale.json (or ``--out``) and prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results" / "inference_scale.json"
TINY_MODEL = {
    "patch_size": 4,
    "unet": {"base_channels": 4, "channel_mult": [1], "num_res_blocks": 1},
    "feature_timesteps": [5],
    "head_channels": 8,
    "comm": {"rank": 4, "bits": 8},
}
TINY_BANDS = 63  # Trento's HSI band count; the synthetic LiDAR has Trento's 2


def train_tiny(folder: Path) -> Path:
    """A tiny model on the synthetic scene with Trento's band counts, exported to ONNX."""
    import yaml

    from export.onnx_export import export_checkpoint
    from feddiff.config import load_config
    from feddiff.data.loader import load_scene
    from feddiff.model.checkpoint import save_checkpoint
    from feddiff.model.centralised import train_centralised

    doc = {"name": "scale", "scene": {"synthetic": {"seed": 0, "rows": 64, "cols": 64, "bands": TINY_BANDS, "train_per_class": 20}}, "model": TINY_MODEL,
           "train": {"seed": 0, "threads": 1, "pretrain_steps": 20, "pretrain_batch": 32, "epochs": 2, "batch_size": 32}}
    config = folder / "train.yaml"
    config.write_text(yaml.safe_dump(doc))
    cfg = load_config(config)
    scene = load_scene(cfg)
    res = train_centralised(cfg, scene, ["hsi", "lidar"], progress=False)
    save_checkpoint(folder / "model.pt", res.net, cfg, {m: s.stats for m, s in res.sources.items()}, scene.class_names, res.metrics)
    export_checkpoint(folder / "model.pt", folder / "model.onnx", config=str(config), parity_n=64)
    return folder / "model.onnx"


def write_scene(folder: Path, rows: int, cols: int, bands: dict[str, int], classes: int, seed: int = 0) -> Path:
    """GeoTIFF rasters of ``rows`` x ``cols`` (int16, tiled, deflate) written strip by strip,
    sparse train/test labels, and the scene config that points at them."""
    import rasterio
    import yaml
    from rasterio.transform import from_origin
    from rasterio.windows import Window

    rng = np.random.default_rng(seed)
    field = 64  # land-cover fields of 64 x 64 pixels
    kinds = rng.integers(0, classes, size=(-(-rows // field), -(-cols // field)))
    spectra = {m: rng.uniform(500, 4000, size=(classes, b)).astype(np.float32) for m, b in bands.items()}
    common = {"driver": "GTiff", "height": rows, "width": cols, "tiled": True, "blockxsize": 256, "blockysize": 256,
              "compress": "deflate", "crs": "EPSG:32632", "transform": from_origin(660000, 5100000, 1, 1)}
    folder.mkdir(parents=True, exist_ok=True)
    outs = {m: rasterio.open(folder / f"{m}.tif", "w", count=b, dtype="int16", **common) for m, b in bands.items()}
    labels = {k: rasterio.open(folder / f"{k}.tif", "w", count=1, dtype="uint8", **common) for k in ("train", "test")}
    for r0 in range(0, rows, 256):
        r1 = min(rows, r0 + 256)
        cls = np.repeat(np.repeat(kinds[r0 // field : -(-r1 // field)], field, 0), field, 1)[: r1 - r0, :cols]
        win = Window(0, r0, cols, r1 - r0)
        for m, ds in outs.items():
            cube = spectra[m][cls] + rng.normal(0, 150, size=(r1 - r0, cols, bands[m])).astype(np.float32)
            ds.write(np.moveaxis(cube, -1, 0).astype(np.int16), window=win)
        draw = rng.random((r1 - r0, cols))
        labels["train"].write(np.where(draw < 0.002, cls + 1, 0).astype(np.uint8)[None], window=win)
        labels["test"].write(np.where(draw > 0.99, cls + 1, 0).astype(np.uint8)[None], window=win)
    for ds in list(outs.values()) + list(labels.values()):
        ds.close()
    doc = {"name": f"scale_{rows}x{cols}", "scene": {"modalities": {m: {"path": f"{m}.tif"} for m in bands},
                                                     "train_labels": {"path": "train.tif"}, "test_labels": {"path": "test.tif"}}}
    (folder / "scene.yaml").write_text(yaml.safe_dump(doc))
    return folder / "scene.yaml"


def peak_rss_mib() -> float:
    """This process's own high-water mark (VmHWM; getrusage would carry the parent's over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def worker(args: argparse.Namespace) -> None:
    """One scene through ``run_inference`` (what ``feddiff infer`` runs), or with ``--in-memory``
    through the whole-raster loop ``feddiff infer`` ran before it read by strips (the scene
    loaded whole, only the classification timed); one JSON line."""
    from export.infer import classify_scene, open_scheduled, run_inference, session_meta

    if args.in_memory:
        from feddiff.config import load_config
        from feddiff.data.loader import load_scene

        sess, _, plan = open_scheduled(Path(args.model), "cpu", args.workers, args.threads)
        scene = load_scene(load_config(args.config))
        t0 = time.perf_counter()
        pred = classify_scene(sess, session_meta(sess), scene.modalities, args.batch, False, plan.workers)
        seconds = time.perf_counter() - t0
        print(json.dumps({"pixels": int(pred.size), "seconds": seconds, "pixels_per_s": pred.size / seconds, "peak_rss_mib": peak_rss_mib(), "oa": None, "schedule": str(plan)}))
        return
    res = run_inference(Path(args.model), args.config, Path(args.work), batch=args.batch, provider="cpu", progress=False, workers=args.workers, threads=args.threads)
    print(json.dumps({"pixels": res.pixels, "seconds": res.seconds, "pixels_per_s": res.pixels_per_s, "peak_rss_mib": peak_rss_mib(),
                      "oa": res.metrics["oa"] if res.metrics else None, "schedule": str(res.schedule)}))


def measure(model: Path, config: Path, work: Path, args: argparse.Namespace, in_memory: bool = False) -> dict:
    cmd = [sys.executable, __file__, "--worker", "--model", str(model), "--config", str(config), "--work", str(work),
           "--batch", str(args.batch), "--workers", str(args.workers), "--threads", str(args.threads)] + (["--in-memory"] if in_memory else [])
    r = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    if r.returncode != 0:
        raise SystemExit(f"worker failed on {config}: {r.stderr.strip().splitlines()[-1] if r.stderr.strip() else r.returncode}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default=None, help="ONNX model (default: a tiny one is trained and exported first)")
    p.add_argument("--sizes", default="1024x1024,2048x2048", help="rows x cols of each scene, smallest first")
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--batch", type=int, default=512)
    p.add_argument("--workers", type=int, default=0)
    p.add_argument("--threads", type=int, default=0)
    p.add_argument("--out", default=str(RESULTS))
    p.add_argument("--compare", default=None, help="also classify this scene config (e.g. configs/trento_sim.yaml) by strips and in memory, interleaved")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--in-memory", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--work", help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.worker:
        return worker(args)

    from export.infer import open_session, session_meta

    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",")]
    with tempfile.TemporaryDirectory(prefix="feddiff-scale-") as tmp:
        tmp = Path(tmp)
        model = Path(args.model) if args.model else train_tiny(tmp)
        meta = session_meta(open_session(model, "cpu")[0], str(model))
        configs = {}
        for rows, cols in sizes:
            t0 = time.perf_counter()
            configs[(rows, cols)] = write_scene(tmp / f"scene_{rows}x{cols}", rows, cols, meta.bands, len(meta.class_names))
            print(f"[scale] wrote {rows} x {cols} scene ({time.perf_counter() - t0:.0f}s)", flush=True)
        runs: dict[tuple, list[dict]] = {s: [] for s in sizes}
        for rep in range(args.repeats):
            for s in sizes if rep % 2 == 0 else sizes[::-1]:
                runs[s].append(measure(model, configs[s], tmp / f"out_{s[0]}x{s[1]}", args))
                print(f"[scale] {s[0]} x {s[1]} run {rep + 1}: {runs[s][-1]['pixels_per_s']:,.0f} px/s, peak {runs[s][-1]['peak_rss_mib']:.0f} MiB", flush=True)
        compare = {"strips": [], "in_memory": []}
        for rep in range(args.repeats if args.compare else 0):
            for mode in ("strips", "in_memory") if rep % 2 == 0 else ("in_memory", "strips"):
                compare[mode].append(measure(model, Path(args.compare), tmp / "out_compare", args, in_memory=mode == "in_memory"))
                print(f"[scale] {args.compare} {mode} run {rep + 1}: {compare[mode][-1]['pixels_per_s']:,.0f} px/s, peak {compare[mode][-1]['peak_rss_mib']:.0f} MiB", flush=True)
    rows = []
    for (h, w), rs in runs.items():
        rows.append({"rows": h, "cols": w, "megapixels": h * w / 1e6, "pixels_per_s_median": statistics.median(r["pixels_per_s"] for r in rs),
                     "pixels_per_s_runs": [r["pixels_per_s"] for r in rs], "peak_rss_mib": max(r["peak_rss_mib"] for r in rs),
                     "peak_rss_mib_runs": [r["peak_rss_mib"] for r in rs], "oa": rs[0]["oa"], "schedule": rs[0]["schedule"]})
    small, large = rows[0], rows[-1]
    doc = {"model": str(args.model or "tiny model trained on the synthetic scene with Trento's band counts"), "bands": meta.bands, "batch": args.batch, "repeats": args.repeats,
           "scenes": rows, "rss_ratio_largest_vs_smallest": large["peak_rss_mib"] / small["peak_rss_mib"],
           "speed_ratio_largest_vs_smallest": large["pixels_per_s_median"] / small["pixels_per_s_median"]}
    if args.compare:
        doc["compare"] = {"config": args.compare, **{m: {"pixels_per_s_median": statistics.median(r["pixels_per_s"] for r in rs), "pixels_per_s_runs": [r["pixels_per_s"] for r in rs],
                                                         "peak_rss_mib": max(r["peak_rss_mib"] for r in rs)} for m, rs in compare.items()}}
        doc["compare"]["speed_ratio_strips_vs_in_memory"] = doc["compare"]["strips"]["pixels_per_s_median"] / doc["compare"]["in_memory"]["pixels_per_s_median"]
    doc["targets_met"] = {"rss_ratio <= 1.2": doc["rss_ratio_largest_vs_smallest"] <= 1.2, "speed within 10 %": abs(doc["speed_ratio_largest_vs_smallest"] - 1) <= 0.10}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(doc, indent=2))
    print(f"\n{'scene':>13} {'Mpx':>6} {'px/s (median)':>14} {'peak RSS MiB':>13}")
    for r in rows:
        print(f"{r['rows']:>6} x {r['cols']:<5} {r['megapixels']:>6.2f} {r['pixels_per_s_median']:>14,.0f} {r['peak_rss_mib']:>13.0f}")
    print(f"largest / smallest: peak RSS {doc['rss_ratio_largest_vs_smallest']:.3f} (target <= 1.2), px/s {doc['speed_ratio_largest_vs_smallest']:.3f} (target 0.9-1.1)")
    if args.compare:
        c = doc["compare"]
        print(f"{args.compare}: strips {c['strips']['pixels_per_s_median']:,.0f} px/s (peak {c['strips']['peak_rss_mib']:.0f} MiB), "
              f"in memory {c['in_memory']['pixels_per_s_median']:,.0f} px/s (peak {c['in_memory']['peak_rss_mib']:.0f} MiB): ratio {c['speed_ratio_strips_vs_in_memory']:.3f}")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
