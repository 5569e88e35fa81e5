"""Cost of security on Trento: plaintext vs signed (Ed25519 + X25519/AES-GCM, TLS, ACL) vs HE
(CKKS additive fusion with a third-party label holder), same seed and stage-1 denoisers.

    python benchmarks/security_overhead.py [--config configs/trento_sim.yaml] [--seed 0] [--modes none signed he]
                                           [--stage2-seeds 0 1 2] [--resume]
    python benchmarks/security_overhead.py --filters-only     # per-message cost of the filter chain
    python benchmarks/security_overhead.py --label-dp 0 1 4 [--label-dp-modes he signed] [--stage2-seeds 0 1 2]

``--filters-only`` writes benchmarks/results/security_filters.json: the production filter chain
(compress, seal, replay, dedup, chunk) sending and receiving one message of each size in
``none`` and ``signed`` mode (median of repeats, replay state on disk as in a job), and the
cost of verifying the label holder's CKKS context; it needs no data set.

``--label-dp SIGMA ...`` writes benchmarks/results/security_label_dp.json instead: label DP's
accuracy cost, one job per noise multiplier (0 = off) in HE mode (third-party label holder) and
in signed mode with a station holding the labels, with the epsilon (at ``train.label_dp_delta``)
the label holder published for the job.

Otherwise it writes benchmarks/results/security_overhead.json and prints a table: epoch wall time (median
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
from jobrunner import ROOT, WORK, cached, federated_job, pretrain, with_train

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


def _chain_round_trip_s(mode: str, size: int, keys_dir: Path, state: Path, repeats: int) -> float:
    """Median seconds to send (outbound chain + pack) and receive (unpack + inbound chain) one
    ``size``-byte message of incompressible floats from station ``hsi`` to the aggregator."""
    import time

    from crypto import security_filters
    from crypto.directory import load_directory
    from crypto.keys import load_party
    from feddiff.config import Config
    from feddiff.protocol.endpoint import build_chain, fresh_seq
    from feddiff.protocol.envelope import pack, unpack
    from feddiff.protocol.message import Header, Message

    cfg = Config()
    seal = {}
    if mode == "signed":
        directory = load_directory(keys_dir)
        seal = {p: security_filters("sizes", load_party(keys_dir, p), directory, replay_state=state / f"{p}-{size}.json") for p in ("hsi", "agg")}
    tx, rx = build_chain(cfg, seal.get("hsi")), build_chain(cfg, seal.get("agg"))
    payload = np.random.default_rng(0).standard_normal(size // 4).astype(np.float32).tobytes()
    topic, seq, times = "feddiff/sizes/up/hsi", fresh_seq(), []
    for _ in range(repeats):
        seq += 1
        t0 = time.perf_counter()
        h = Header(job="sizes", round=1, step=1, sender="hsi", seq=seq, content_type="features", timestamp=time.time())
        wire = [pack(m) for m in tx.outbound(Message(topic, h, payload))]
        got = [rx.inbound(unpack(topic, w, cfg.federation.max_message_bytes)) for w in wire][-1]
        times.append(time.perf_counter() - t0)
        assert got is not None and got.payload == payload
    return float(np.median(times))


def filter_costs(out: Path, sizes: tuple[int, ...] = (1024, 65536, 1 << 20, 8 << 20), repeats: int = 20) -> dict:
    import time

    from crypto.he_context import HOLDER_PUBLIC, HOLDER_SIG, verify_public_context
    from crypto.directory import load_directory
    from crypto.provision import init_job, issue, provision_he_holder

    doc: dict = {"repeats": repeats, "round_trip_ms": {}}
    with tempfile.TemporaryDirectory() as d:
        keys = Path(d) / "keys"
        init_job("sizes", keys)
        for role, name in (("aggregator", "agg"), ("edge", "hsi"), ("labels", "lab")):
            issue(keys, role, name)
        for size in sizes:
            doc["round_trip_ms"][size] = {m: 1e3 * _chain_round_trip_s(m, size, keys, Path(d), repeats) for m in ("none", "signed")}
        pdir = provision_he_holder(keys, "lab")
        public, sig, directory = (pdir / HOLDER_PUBLIC).read_bytes(), (pdir / HOLDER_SIG).read_text(), load_directory(keys)
        t0 = time.perf_counter()
        for _ in range(repeats):
            verify_public_context(directory, "lab", public, sig)
        doc["verify_public_context_ms"] = 1e3 * (time.perf_counter() - t0) / repeats
        doc["ckks_public_context_bytes"] = len(public)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2))
    print("| message bytes | none ms | signed ms | signed / none |\n|---|---|---|---|")
    for size, r in doc["round_trip_ms"].items():
        print(f"| {size} | {r['none']:.2f} | {r['signed']:.2f} | {r['signed'] / r['none']:.2f} |")
    print(f"\nverify_public_context: {doc['verify_public_context_ms']:.1f} ms per call (context of {len(public)} bytes)")
    return doc


def dp_job(cfg, pre: dict, work: Path, mode: str, holder: str) -> dict:
    """One federated job, plus the label DP ledger the label holder published to the aggregator."""
    result = federated_job(cfg, pre, work, security=mode, label_holder=holder)
    status = json.loads((work / "state" / "aggregator" / "status.json").read_text())
    return {**result, "label_dp": status.get("label_dp", {"enabled": False})}


def label_dp_sweep(cfg, pre: dict, args: argparse.Namespace, seeds: list[int]) -> dict:
    """OA per (mode, sigma), mean over ``seeds``, and its cost against sigma 0 of the same mode."""
    work, rows = Path(args.work), []
    for mode in args.label_dp_modes:
        holder = "label_holder" if mode == "he" else next(iter(cfg.federation.clients))
        for sigma in args.label_dp:
            runs = []
            for s in seeds:
                c = with_train(cfg, seed=s, label_dp_sigma=float(sigma))
                runs.append(cached(work / f"result_dp_{mode}_{sigma:g}_seed{s}.json", args.resume, lambda: dp_job(c, pre, work / f"dp_{mode}", mode, holder)))
                print(f"{mode:<7} sigma {sigma:g} seed {s}  OA {100 * runs[-1]['oa']:.2f}  epsilon {runs[-1]['label_dp'].get('epsilon')}", flush=True)
            dp = runs[0]["label_dp"]
            rows.append({"mode": mode, "holder": holder, "sigma": float(sigma), "clip": cfg.train.label_dp_clip, "delta": cfg.train.label_dp_delta,
                         "epsilon": dp.get("epsilon") if dp.get("enabled") else None, "oa_runs": [r["oa"] for r in runs],
                         "oa_mean": float(np.mean([r["oa"] for r in runs])), "epoch_s": float(np.median([r["epoch_s"] for r in runs])), "stage2_seeds": seeds})
    for r in rows:
        off = next((o for o in rows if o["mode"] == r["mode"] and o["sigma"] == 0), None)
        r["oa_cost_points"] = None if off is None else 100 * (off["oa_mean"] - r["oa_mean"])
    doc = {"config": args.config, "seed": args.seed, "rows": rows}
    out = Path(args.out).with_name("security_label_dp.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2, default=str))
    print(f"\n| mode (label holder) | sigma | epsilon at delta | OA % (mean of seeds {seeds}) | OA cost (points) | epoch s |\n|---|---|---|---|---|---|")
    for r in rows:
        eps = "off" if r["epsilon"] is None else f"{r['epsilon']:.3g} at {r['delta']:g}"
        cost = "-" if r["oa_cost_points"] is None else f"{r['oa_cost_points']:.2f}"
        print(f"| {r['mode']} ({r['holder']}) | {r['sigma']:g} | {eps} | {100 * r['oa_mean']:.2f} | {cost} | {r['epoch_s']:.2f} |")
    return doc


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "trento_sim.yaml"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--modes", nargs="+", default=["none", "signed", "he"], choices=["none", "signed", "he"])
    ap.add_argument("--stage2-seeds", type=int, nargs="+", default=None, help="stage-2 seeds (head init, batch order) on the --seed denoisers; default: --seed only")
    ap.add_argument("--resume", action="store_true", help="reuse job results kept in --work by an earlier run")
    ap.add_argument("--work", default=str(WORK / "security"))
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "security_overhead.json"))
    ap.add_argument("--filters-only", action="store_true", help="only the per-message filter-chain costs (no data set needed)")
    ap.add_argument("--label-dp", type=float, nargs="+", default=None, metavar="SIGMA", help="label DP sweep: noise multipliers (0 = off)")
    ap.add_argument("--label-dp-modes", nargs="+", default=["he", "signed"], choices=["he", "signed"])
    args = ap.parse_args()
    if args.filters_only:
        filter_costs(Path(args.out).with_name("security_filters.json"))
        return 0
    cfg = load_config(args.config)
    cfg = with_train(cfg, seed=args.seed)
    scene = load_scene(cfg)
    pre = pretrain(cfg, scene, Path(args.work) / "cache")
    rows = {}
    seeds = args.stage2_seeds or [args.seed]
    if args.label_dp:
        label_dp_sweep(cfg, pre, args, seeds)
        return 0
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
