"""``feddiff demo``: a whole federated job on one machine, as separate processes.

Starts a broker (Mosquitto when installed, else an embedded pure-Python one), the aggregator
daemon and one edge agent per station, each a real ``feddiff`` process talking MQTT on
loopback; shows round progress (and with ``--http-port N`` serves the dashboard at
``http://127.0.0.1:N/``, each station's /metrics and /healthz on the next ports, N+1, N+2 ...,
in the order the job lists them); then exports and runs the ONNX model if the export package is
present, and writes ``report.json`` and the classification map into ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import yaml
from tqdm import tqdm

from feddiff.config import ClientSpec, Config, config_from_dict, load_config
from feddiff.errors import FedDiffError
from feddiff_app.train_cli import baseline_line

DEMO_CONFIG = Path(__file__).resolve().parent / "demo_default.yaml"


def job_config(cfg_path: str | None) -> dict:
    path = Path(cfg_path) if cfg_path else DEMO_CONFIG
    load_config(path)  # validate before starting anything
    data = yaml.safe_load(path.read_text()) or {}
    base = path.resolve().parent
    # make every relative path absolute so the job file can live in --out
    for sect in ("modalities",):
        for src in (data.get("scene", {}).get(sect) or {}).values():
            src["path"] = str((base / src["path"]).resolve())
    for key in ("train_labels", "test_labels", "labels"):
        src = data.get("scene", {}).get(key)
        if src:
            src["path"] = str((base / src["path"]).resolve())
    return data


def _spawn(args: list[str], log_path: Path) -> subprocess.Popen:
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    fh = open(log_path, "ab")
    return subprocess.Popen([sys.executable, "-m", "feddiff_app.cli", *args], stdout=fh, stderr=subprocess.STDOUT, env=env)


def _stations(data: dict) -> dict:
    clients = data.setdefault("federation", {}).setdefault("clients", {})
    if not clients:
        mods = list((data.get("scene") or {}).get("modalities") or {}) or ["hsi", "lidar"]
        for m in mods:
            clients[f"{m}_station"] = {"modalities": [m]}
    return clients


def run_demo(args: argparse.Namespace) -> int:
    from feddiff_app.broker import start_best_broker, start_embedded_broker, start_mosquitto, start_mosquitto_from_conf

    t0 = time.perf_counter()
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    data = job_config(args.config)
    stations = _stations(data)
    fed = data.setdefault("federation", {})
    fed.setdefault("job", "demo")
    fed["state_dir"] = str(out / "state")
    if args.security:
        fed["security"] = args.security
    if fed.get("security") == "he" and fed.get("label_holder", "aggregator") == "aggregator":
        fed["label_holder"] = "label_holder"  # HE: the aggregator must never hold the secret key
    shutil.rmtree(out / "state", ignore_errors=True)
    (out / "logs").mkdir(exist_ok=True)

    print(f"[demo] starting broker ({args.broker})", flush=True)
    broker_dir = out / "broker"
    broker_dir.mkdir(exist_ok=True)
    secure = fed.get("security") in ("signed", "he")
    if secure:
        keys = _provision(out, fed["job"], data)
        fed["keys_dir"] = str(keys)
        broker = start_mosquitto_from_conf(keys / "broker" / "mosquitto.conf", broker_dir)
    elif args.broker == "mosquitto":
        broker = start_mosquitto(workdir=broker_dir)
    elif args.broker == "embedded":
        broker = start_embedded_broker(workdir=broker_dir)
    else:
        broker = start_best_broker(workdir=broker_dir)
    http_port = int(getattr(args, "http_port", None) or 0)
    if http_port:
        fed["http_port"] = http_port
    fed.setdefault("broker", {})["port"] = broker.port
    fed["broker"]["host"] = "127.0.0.1"
    job_path = out / "job.yaml"
    job_path.write_text(yaml.safe_dump(data, sort_keys=False))
    cfg = load_config(job_path)
    seconds = {"setup": time.perf_counter() - t0}
    if http_port:
        print(f"[demo] dashboard: http://{cfg.federation.http_host}:{http_port}/  (metrics: /metrics, health: /healthz)", flush=True)

    procs: list[subprocess.Popen] = []
    try:
        print(f"[demo] broker {broker.name} on 127.0.0.1:{broker.port}; aggregator + {len(stations)} stations", flush=True)
        agg = _spawn(["aggregator", "--config", str(job_path)], out / "logs" / "aggregator.log")
        procs.append(agg)
        parties = list(stations)
        if cfg.federation.label_holder not in ("aggregator", *stations):
            parties.append(cfg.federation.label_holder)
        for name, path in _party_configs(out, data, parties, getattr(args, "http_port", None)).items():
            procs.append(_spawn(["edge", "--config", str(path), "--id", name], out / "logs" / f"{name}.log"))
        t1 = time.perf_counter()
        _watch(agg, procs, out / "state" / "aggregator" / "status.json", cfg.train.epochs)
        seconds["federated_training"] = time.perf_counter() - t1
        if agg.returncode != 0:
            raise FedDiffError(f"aggregator exited with {agg.returncode}; see {out / 'logs' / 'aggregator.log'}")
        for p in procs[1:]:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.terminate()
    finally:
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
        broker.stop()

    agg_report = json.loads((out / "state" / "aggregator" / "report.json").read_text())
    map_owner = cfg.federation.label_holder if cfg.federation.security == "he" else "aggregator"  # HE: only the holder knows classes
    shutil.copy(out / "state" / map_owner / "classification_map.png", out / "classification_map.png")
    report = {
        "oa": agg_report["oa"],
        "aa": agg_report["aa"],
        "kappa": agg_report["kappa"],
        "per_class": agg_report["per_class"],
        "rounds": agg_report["rounds"],
        "bytes": _bytes_per_client(out, list(stations), agg_report),
        "seconds": {**seconds, **{f"aggregator_{k}": v for k, v in agg_report["seconds"].items()}},
        "broker": broker.name,
        "security": cfg.federation.security,
    }
    svm = _svm_beside(cfg, args)
    report["baselines"] = {"rbf_svm": svm} if svm else {}
    onnx_info = _export_if_available(out, cfg)
    if onnx_info:
        report["onnx"] = onnx_info
        report["seconds"]["export_and_infer"] = onnx_info.pop("seconds")
    report["seconds"]["total"] = time.perf_counter() - t0
    (out / "report.json").write_text(json.dumps(report, indent=2))
    print(json.dumps({k: report[k] for k in ("oa", "aa", "kappa", "rounds", "broker")}, indent=None))
    print(f"[demo] OA {100 * report['oa']:.2f}%  AA {100 * report['aa']:.2f}%  kappa {report['kappa']:.4f}  in {report['seconds']['total']:.0f}s")
    print(f"[demo] {baseline_line(report, svm)}")
    print(f"[demo] wrote {out / 'report.json'} and {out / 'classification_map.png'}")
    return 0


def _party_configs(out: Path, data: dict, parties: list[str], http_port: int | None) -> dict[str, Path]:
    """The job file each party starts from: the shared one, or with ``http_port`` a copy per
    party, each station's monitoring port the next after the aggregator's (N+1, N+2 ... in the
    job's order of stations), a label holder of its own the port after the last station's."""
    if not http_port:
        return {name: out / "job.yaml" for name in parties}
    paths = {}
    stations = list(data["federation"]["clients"])
    for name in parties:
        doc = json.loads(json.dumps(data))
        port = int(http_port) + 1 + (stations.index(name) if name in stations else len(stations))
        doc["federation"]["http_port"] = port
        paths[name] = out / f"job-{name}.yaml"
        paths[name].write_text(yaml.safe_dump(doc, sort_keys=False))
        if port:
            print(f"[demo] {name}: metrics at http://{doc['federation'].get('http_host', '127.0.0.1')}:{port}/metrics", flush=True)
    return paths


def _watch(agg: subprocess.Popen, procs: list[subprocess.Popen], status: Path, epochs: int) -> None:
    """Round progress from the aggregator's status file; fail fast if a process dies."""
    bar = tqdm(total=epochs, desc="rounds", unit="round")
    done = 0
    while agg.poll() is None:
        time.sleep(0.5)
        for p in procs[1:]:
            if p.poll() not in (None, 0):
                raise FedDiffError(f"an edge station exited with {p.returncode}; see the logs folder")
        try:
            doc = json.loads(status.read_text())
        except (OSError, ValueError):
            continue
        rnd = min(int(doc.get("round", 0)), epochs)
        if rnd > done:
            bar.update(rnd - done)
            done = rnd
        bar.set_postfix_str(str(doc.get("phase", "")))
    bar.close()


def _bytes_per_client(out: Path, stations: list[str], agg_report: dict) -> dict:
    per = {}
    for name in stations:
        p = out / "state" / name / "station.json"
        doc = json.loads(p.read_text()) if p.exists() else {}
        per[name] = {"sent": doc.get("bytes_sent"), "received": doc.get("bytes_received")}
    per["aggregator"] = {"sent": agg_report["bytes"]["aggregator_sent"], "received": agg_report["bytes"]["aggregator_received"]}
    return per


def _provision(out: Path, job: str, data: dict) -> Path:
    """Keys, certificates, passwd and ACL for every party of the job (what an operator does with
    ``feddiff keys init`` / ``feddiff keys issue``)."""
    from crypto.provision import init_job, issue, provision_he_holder

    fed = data["federation"]
    keys = out / "keys"
    shutil.rmtree(keys, ignore_errors=True)
    init_job(job, keys)
    issue(keys, "aggregator", "aggregator")
    for s in fed["clients"]:
        issue(keys, "edge", s)
    holder = fed.get("label_holder", "aggregator")
    if holder not in ("aggregator", *fed["clients"]):
        issue(keys, "labels", holder)
        if fed.get("security") == "he":
            provision_he_holder(keys, holder)  # the signed CKKS context stations verify
    return keys


def _svm_beside(cfg: Config, args: argparse.Namespace) -> dict | None:
    """The RBF-SVM row on the job's own split and the pixel features of every modality.

    Only a run that holds every modality can fit it: the demo does (all parties on one host), a
    deployed job by design does not (no party sees another's pixels), so the aggregator's report
    has no such row and the demo adds it to its own."""
    if getattr(args, "no_svm", False) or not cfg.train.svm_baseline:
        return None
    from feddiff.baselines import svm_baseline
    from feddiff.data.loader import load_scene

    scene = load_scene(cfg)
    return svm_baseline(scene, list(scene.modalities), cfg.train.seed)


def _export_if_available(out: Path, cfg: Config) -> dict | None:
    if cfg.federation.security == "he":
        # the HE model's head (additive fusion) lives with the label holder; only the
        # interaction model of plaintext/signed jobs is exported
        return {"skipped": "HE-mode model is not exported (its head stays with the label holder)", "seconds": 0.0}
    try:
        from export.federated import export_from_job
    except ModuleNotFoundError:
        return None
    t = time.perf_counter()
    info = export_from_job(cfg, out)
    info["seconds"] = time.perf_counter() - t
    return info
