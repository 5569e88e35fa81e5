"""``feddiff export`` and ``feddiff infer``: argument handling and the lines a user reads.

``run_infer`` imports nothing from torch (nor from ``export.onnx_export``), so it works on a
base station that installed only onnxruntime.
"""

from __future__ import annotations

import argparse
from pathlib import Path


def run_export(args: argparse.Namespace) -> int:
    from export.onnx_export import PARITY_TOL, export_checkpoint

    res = export_checkpoint(Path(args.checkpoint), Path(args.out), split=args.split, quantize=args.quantize, config=args.config)
    for name, p in res.paths.items():
        print(f"[export] {name}: {p} ({res.sizes.get(name, 0) / 1e6:.2f} MB)")
    src = "held-out scene patches" if args.config else "random normal patches"
    print(f"[export] parity vs PyTorch on {res.parity.n} {src}: max |dlogit| {res.parity.max_abs_diff:.2e} ({parity_spread(res.parity.over_tol, PARITY_TOL)}), argmax identical")
    if res.quantized is not None:
        q = res.quantized
        print(f"[export] {args.quantize} graph vs PyTorch: max |dlogit| {q.max_abs_diff:.2e}, argmax agreement {100 * q.argmax_agree:.2f}%")
    return 0


def parity_spread(over_tol: float, tol: float) -> str:
    """How many patches differ by more than the tolerance, and why that can still pass: the
    check allows a small share within a looser bound, which is what a quantised code sitting on
    a rounding boundary produces (export.parity). It cannot tell that cause from another, so it
    states the allowance rather than naming a cause."""
    from export.parity import BOUNDARY_SHARE, BOUNDARY_TOL

    if over_tol == 0:
        return f"every patch within {tol:g}"
    return f"{100 * over_tol:.1f} % of patches over {tol:g}, within the allowance of {100 * BOUNDARY_SHARE:g} % up to {BOUNDARY_TOL:g} for codes on a rounding boundary"


def run_infer(args: argparse.Namespace) -> int:
    from export.infer import run_inference

    # --strip-pixels: pixels classified per strip (0: the default); memory is a few strips
    res = run_inference(Path(args.model), args.config, Path(args.out), batch=args.batch, provider=args.provider, workers=args.workers,
                        threads=args.threads, strip_pixels=args.strip_pixels)
    print(f"[infer] provider: {res.provider} (from session.get_providers(); requested {args.provider}); {res.schedule}")
    print(f"[infer] {res.pixels} pixels in {res.seconds:.2f}s ({res.pixels_per_s:,.0f} px/s)")
    if res.metrics is not None:
        m = res.metrics
        print(f"[infer] test OA {100 * m['oa']:.2f}%  AA {100 * m['aa']:.2f}%  kappa {m['kappa']:.4f}")
    print(f"[infer] wrote {res.class_map}, {res.png}, {res.class_map.parent / 'metrics.json'}")
    return 0
