"""Multiply-adds per classified pixel for the model sizes the README compares.

Why count instead of time: timings on a shared 2-core machine move by 30 % from run to run,
while the compute a size costs is exact. Counts convolutions and linear layers (everything
else is a few percent), for one pixel's patches through both branches and the head.

    python benchmarks/compute_cost.py [--config configs/trento_sim.yaml]
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from feddiff.config import ModelSpec, load_config  # noqa: E402
from feddiff.model.ensemble import build_net  # noqa: E402

CUTS = [(32, [5, 50, 150], 64), (16, [5, 50, 150], 64), (16, [5, 50, 150], 32), (16, [5, 50], 32), (16, [50], 32)]


def macs_per_pixel(spec: ModelSpec, bands: dict[str, int], classes: int) -> float:
    net = build_net(bands, classes, spec, 0).eval()  # an ensemble's shared feature pass counts once
    total = [0]

    def hook(mod: torch.nn.Module, _inp: tuple, out: torch.Tensor) -> None:
        if isinstance(mod, torch.nn.Conv2d):
            total[0] += out.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
        else:
            total[0] += out.numel() * mod.in_features

    for mod in net.modules():
        if isinstance(mod, (torch.nn.Conv2d, torch.nn.Linear)):
            mod.register_forward_hook(hook)
    p = spec.patch_size
    with torch.no_grad():
        net({m: torch.zeros(1, c, p, p) for m, c in bands.items()})
    return total[0] / 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", default=str(ROOT / "configs" / "trento_sim.yaml"))
    ap.add_argument("--bands", default="hsi=63,lidar=2", help="band count per modality (Trento: hsi=63,lidar=2)")
    ap.add_argument("--classes", type=int, default=6)
    args = ap.parse_args()
    cfg = load_config(args.config)
    bands = {k: int(v) for k, v in (kv.split("=") for kv in args.bands.split(","))}
    print("| U-Net base | timesteps | head | M MAC / pixel |\n|---|---|---|---|")
    for base, ts, hc in CUTS:
        spec = dataclasses.replace(cfg.model, unet=dataclasses.replace(cfg.model.unet, base_channels=base), feature_timesteps=ts, head_channels=hc)
        print(f"| {base} | {', '.join(map(str, ts))} | {hc} | {macs_per_pixel(spec, bands, args.classes):.1f} |")
    m = cfg.model
    one = dataclasses.replace(m, members=1)
    print(f"\n{cfg.name} as configured (base {m.unet.base_channels}, timesteps {m.feature_timesteps}, head {m.head_channels}, "
          f"{m.members} stage-2 member(s)): {macs_per_pixel(m, bands, args.classes):.1f} M MAC / pixel; one member: {macs_per_pixel(one, bands, args.classes):.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
