"""The ``feddiff`` command. Role packages are imported lazily inside each subcommand, so
``feddiff --help`` is instant and a base station needs only the parts it runs.

Every error a user can cause is a ``FedDiffError``: printed as one line, exit code 2.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Callable

from feddiff.errors import FedDiffError
from feddiff_app.keys_parser import add_keys_actions


def _setup_logging(verbose: bool, log_file: str | None = None) -> None:
    from feddiff.logs import configure_logging

    configure_logging(verbose=verbose, log_file=log_file)


def cmd_data(args: argparse.Namespace) -> int:
    from feddiff.config import load_config
    from feddiff.data.loader import load_scene, scene_summary

    cfg = load_config(args.config)
    print(scene_summary(load_scene(cfg)))
    return 0


def cmd_train(args: argparse.Namespace) -> int:
    from feddiff_app.train_cli import run_train

    return run_train(args)


def _check_mode(args: argparse.Namespace) -> None:
    """``security: none`` warns loudly, and is refused towards a remote broker without
    ``--insecure`` (FedDiffError: one line, exit 2) before a role connects."""
    from crypto.mode_guard import check_security_mode
    from feddiff.config import load_config
    from feddiff.model.ensemble import check_federable

    cfg = load_config(args.config)
    check_federable(cfg.model, args.config)  # a config the role refuses anyway: that one line, not a warning first
    fed = cfg.federation
    check_security_mode(fed.security, fed.broker.host, insecure=bool(getattr(args, "insecure", False)))


def cmd_edge(args: argparse.Namespace) -> int:
    from feddiff.config import load_config

    _check_mode(args)
    fed = load_config(args.config).federation
    if args.id == fed.label_holder and args.id not in fed.clients:
        return cmd_labels(args)  # the HE third-party label holder is its own role
    from edge_client.agent import main

    return main(args)


def cmd_labels(args: argparse.Namespace) -> int:
    from label_holder.holder import main

    _check_mode(args)
    return main(args)


def cmd_aggregator(args: argparse.Namespace) -> int:
    from aggregator.daemon import main

    _check_mode(args)
    return main(args)


def cmd_status(args: argparse.Namespace) -> int:
    from aggregator.status import main

    return main(args)


def cmd_keys(args: argparse.Namespace) -> int:
    from crypto.keys_cli import run

    return run(args)


def cmd_export(args: argparse.Namespace) -> int:
    from export.cli import run_export

    return run_export(args)


def cmd_infer(args: argparse.Namespace) -> int:
    from export.cli import run_infer

    return run_infer(args)


def cmd_demo(args: argparse.Namespace) -> int:
    from feddiff_app.demo import run_demo

    return run_demo(args)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="feddiff",
        description="Federated multi-modal (HSI + LiDAR) land-cover classification with diffusion features.",
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    p.add_argument("--log-file", help="also write JSON-lines logs to this file")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, fn: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(func=fn)
        return sp

    sp = add("data", cmd_data, "validate a scene config and print its summary")
    sp.add_argument("--config", required=True, help="scene YAML")

    sp = add("train", cmd_train, "centralised training (the upper bound for federation)")
    sp.add_argument("--config", required=True)
    sp.add_argument("--modality", default="both", help="hsi, lidar, both, or a comma list of modality names")
    sp.add_argument("--seed", type=int, default=None)
    sp.add_argument("--out", default=None, help="output folder (default: the config's output_dir)")
    sp.add_argument("--epochs", type=int, default=None, help="override train.epochs")
    sp.add_argument("--pretrain-steps", type=int, default=None, help="override train.pretrain_steps")
    sp.add_argument("--no-svm", action="store_true", help="skip the RBF-SVM baseline (huge scenes)")

    sp = add("edge", cmd_edge, "run an edge agent (base station) for one or more modalities")
    sp.add_argument("--config", required=True, help="job YAML (scene + federation)")
    sp.add_argument("--id", required=True, help="this station's client id (a key of federation.clients)")
    sp.add_argument("--state-dir", default=None, help="where this station keeps its resumable state")
    sp.add_argument("--insecure", action="store_true", help="accept security: none towards a broker that is not on this machine")

    sp = add("labels", cmd_labels, "run the third-party label holder of an HE job (holds the CKKS secret key)")
    sp.add_argument("--config", required=True, help="job YAML (scene + federation)")
    sp.add_argument("--id", required=True, help="the label holder's id (federation.label_holder)")
    sp.add_argument("--state-dir", default=None, help="where the label holder keeps its resumable state")
    sp.add_argument("--insecure", action="store_true", help="accept security: none towards a broker that is not on this machine")

    sp = add("aggregator", cmd_aggregator, "run the aggregator daemon until stopped")
    sp.add_argument("--config", required=True)
    sp.add_argument("--state-dir", default=None)
    sp.add_argument("--insecure", action="store_true", help="accept security: none towards a broker that is not on this machine")

    sp = add("status", cmd_status, "report the aggregator's job, round, clients and errors")
    sp.add_argument("--config", required=True)
    sp.add_argument("--state-dir", default=None)

    sp = add("keys", cmd_keys, "provision a job's keys, certificates, broker ACL and station bridges")
    add_keys_actions(sp)

    sp = add("export", cmd_export, "export a checkpoint to ONNX (whole model, or per station with --split)")
    sp.add_argument("--checkpoint", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--split", action="store_true", help="one graph per station plus one for fusion + head")
    sp.add_argument("--quantize", choices=["none", "fp16", "int8"], default="none")
    sp.add_argument("--config", default=None, help="scene config for calibration/parity patches")

    sp = add("infer", cmd_infer, "classify a whole scene with an ONNX model")
    sp.add_argument("--model", required=True)
    sp.add_argument("--config", required=True)
    sp.add_argument("--out", required=True)
    sp.add_argument("--batch", type=int, default=512, help="pixels per batch (the benchmarks measure 512)")
    sp.add_argument("--provider", choices=["auto", "cpu", "cuda"], default="auto")
    sp.add_argument("--workers", type=int, default=0, help="batches run side by side (0: one per CPU core; 1 on CUDA)")
    sp.add_argument("--threads", type=int, default=0, help="intra-op threads per batch (0: 1 when several workers, else onnxruntime's default)")
    sp.add_argument("--strip-pixels", type=int, default=0, help="pixels classified per strip (0: 65536); memory stays a few strips whatever the scene's length")

    sp = add("demo", cmd_demo, "broker + aggregator + two edge stations on the synthetic scene, end to end")
    sp.add_argument("--config", default=None, help="job YAML (default: the embedded synthetic scene)")
    sp.add_argument("--out", default="out")
    sp.add_argument("--broker", choices=["auto", "mosquitto", "embedded"], default="auto")
    sp.add_argument("--security", choices=["none", "signed", "he"], default=None)
    sp.add_argument("--http-port", type=int, default=None, help="serve the dashboard on this port (stations on the next ones, N+1, N+2 ...); absent or 0: off")
    sp.add_argument("--no-svm", action="store_true", help="skip the RBF-SVM baseline beside the federated result")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        _setup_logging(args.verbose, args.log_file)
        return int(args.func(args) or 0)
    except FedDiffError as exc:
        print(f"feddiff {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ModuleNotFoundError as exc:
        name = exc.name or ""
        if name.split(".")[0] in {"edge_client", "aggregator", "label_holder", "crypto", "export"} or name.startswith("feddiff."):
            print(f"feddiff {args.command}: error: not available yet ({name} is not built)", file=sys.stderr)
            return 2
        raise
    except KeyboardInterrupt:
        print(f"feddiff {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
