"""Pixel tables (patch size 1): the spectral denoiser against the 2-D U-Net and an RBF SVM.

Scenes (all read from ../shared/data, never copied):
* ``trento_pixels``: trento_sim (simulated HSI + real LiDAR) as a pixel table: patch size 1,
  ``--per-class`` (50) training pixels per class drawn with the run's seed from the full label
  map, every other labelled pixel for testing; the denoisers pretrain on the whole raster.
* ``tree_species``: real airborne spectra (65 bands, 8 species), HSI only, 50 per class drawn.
* ``indian_pines``: the 695 real AVIRIS training spectra (200 bands, 16 classes), HSI only, half
  of each class drawn for training (the table has only 15 pixels in three classes).

Rows: FedDiff with ``model.denoiser: spectral`` and with ``unet`` (otherwise the defaults of
feddiff/config.py at patch size 1, nothing tuned per scene), and two baselines: the RBF SVM
every train report carries (feddiff.baselines: C and gamma by 3-fold CV on the training
pixels), and the two-branch CNN of benchmarks/accuracy.py (at patch size 1 an MLP per modality,
FedDiff's step budget). Three seeds: each seed redraws the split and reseeds training.
Writes benchmarks/results/spectral.json and prints one table.

    python benchmarks/spectral.py [--scenes trento_pixels tree_species indian_pines] [--seeds 0 1 2]
                                  [--methods spectral unet svm cnn] [--set model.comm.rank=8 ...]
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feddiff.baselines import svm_baseline  # noqa: E402
from feddiff.config import load_config  # noqa: E402
from feddiff.data.loader import load_scene  # noqa: E402
from feddiff.data.scene import Scene  # noqa: E402
from feddiff.data.splits import merge_maps, per_class_split  # noqa: E402
from feddiff.model.centralised import train_centralised  # noqa: E402

DATA = ROOT.parent / "shared" / "data"
SCENES = ["trento_pixels", "tree_species", "indian_pines"]
METHODS = ["spectral", "unet", "svm", "cnn"]


def trento_pixels(seed: int, per_class: int) -> Scene:
    scene = load_scene(load_config(ROOT / "configs" / "trento_sim.yaml"))
    full = merge_maps(scene.train_labels, scene.test_labels)
    scene.train_labels, scene.test_labels = per_class_split(full, seed, per_class=per_class)
    return scene


def table_scene(name: str, hsi: np.ndarray, labels: np.ndarray, seed: int, **split) -> Scene:
    """A one-modality pixel table as an N x 1 scene, split per class with ``seed``."""
    lab = labels.astype(np.int64).reshape(-1, 1)
    train, test = per_class_split(lab, seed, **split)
    k = int(lab.max())
    return Scene(name, {"hsi": hsi.astype(np.float32)[:, None, :]}, train, test, [f"class {c}" for c in range(1, k + 1)]).validate()


def load(name: str, seed: int, per_class: int) -> Scene:
    if name == "trento_pixels":
        return trento_pixels(seed, per_class)
    folder = DATA / "real_spectra"
    if name == "tree_species":
        return table_scene(name, np.load(folder / "tree_species_hsi.npy"), np.load(folder / "tree_species_labels.npy"), seed, per_class=per_class)
    return table_scene(name, np.load(folder / "indian_pines_train_hsi.npy"), np.load(folder / "indian_pines_train_labels.npy"), seed, fraction=0.5)


def table_config(sets: list[str], seed: int, threads: int):
    """The defaults (plus ``sets``) at patch size 1, as every learned row here trains."""
    from generalise import recipe

    return recipe([*sets, "model.patch_size=1", f"train.threads={threads}"], seed)


def run_feddiff(scene: Scene, denoiser: str, seed: int, threads: int, sets: list[str]) -> dict:
    cfg = table_config([*sets, f"model.denoiser={denoiser}"], seed, threads)
    res = train_centralised(cfg, scene, list(scene.modalities), progress=False)
    return {**res.metrics, "train_s": res.history.seconds["pretrain"] + res.history.seconds["classifier"]}


def run_cnn(scene: Scene, seed: int, threads: int) -> dict:
    from accuracy import run_cnn as two_branch_cnn

    return two_branch_cnn(table_config([], seed, threads), scene)


def run_method(method: str, scene: Scene, seed: int, threads: int, sets: list[str]) -> dict:
    """One row's run: a baseline, or FedDiff with the denoiser the method names."""
    if method == "svm":
        return run_svm(scene, seed)
    if method == "cnn":
        return run_cnn(scene, seed, threads)
    return run_feddiff(scene, method, seed, threads, sets)


def run_svm(scene: Scene, seed: int) -> dict:
    """The RBF-SVM row every train report carries (feddiff.baselines), on this seed's split."""
    r = svm_baseline(scene, list(scene.modalities), seed)
    return {**r, "train_s": r["seconds"]["fit"], "chosen": {"C": r["C"], "gamma": r["gamma"]}}


def summarise(rs: list[dict], seeds: list[int]) -> dict:
    oa = np.array([r["oa"] for r in rs]) * 100
    return {
        "oa_mean": float(oa.mean()), "oa_sd": float(oa.std(ddof=1)) if len(oa) > 1 else 0.0,
        "aa_mean": float(np.mean([r["aa"] for r in rs]) * 100), "kappa_mean": float(np.mean([r["kappa"] for r in rs])),
        "train_s": float(np.mean([r["train_s"] for r in rs])), "peak_rss_mb": float(max(r["peak_rss_mb"] for r in rs)),
        "seeds": seeds, "oa_runs": [float(v) for v in oa],
    }


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--scenes", nargs="+", choices=SCENES, default=SCENES)
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=METHODS)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--per-class", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--set", nargs="*", default=[], dest="sets", help="FedDiff rows only: dotted.key=value over the defaults")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "spectral.json"))
    args = ap.parse_args()
    if not (DATA / "real_spectra").is_dir():
        print(f"{DATA} is absent: nothing to measure", file=sys.stderr)
        return 2
    out = Path(args.out)
    result = json.loads(out.read_text()) if out.exists() else {"scenes": {}}
    for name in args.scenes:
        runs: dict[str, list[dict]] = {m: [] for m in args.methods}
        for i, seed in enumerate(args.seeds):
            scene = load(name, seed, args.per_class)
            for m in args.methods:
                r = run_method(m, scene, seed, args.threads, args.sets)
                r["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
                runs[m].append(r)
                print(f"{name} seed {seed} {m:<9} OA {100 * r['oa']:.2f}  AA {100 * r['aa']:.2f}  kappa {r['kappa']:.4f}  train {r['train_s']:.0f}s", flush=True)
            # after each seed: an interrupted run keeps what it measured, under the seeds it ran
            result["scenes"].setdefault(name, {}).update({m: summarise(rs, args.seeds[: i + 1]) for m, rs in runs.items()})
            out.parent.mkdir(parents=True, exist_ok=True)
            out.write_text(json.dumps(result, indent=2))
    print(f"\n{'scene':<14} {'method':<9} {'OA':>14} {'AA':>7} {'kappa':>7} {'train s':>8}")
    for name, rows in result["scenes"].items():
        for m, row in rows.items():
            print(f"{name:<14} {m:<9} {row['oa_mean']:7.2f} +- {row['oa_sd']:4.2f} {row['aa_mean']:7.2f} {row['kappa_mean']:7.4f} {row['train_s']:8.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
