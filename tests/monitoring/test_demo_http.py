"""``feddiff demo --http-port N``: the aggregator's dashboard on N, each station's metrics on
N+1, N+2 ... and an HE label holder's after the last station's, announced on stdout, served by
the demo's real processes while the job runs.

The whole demo (training, evaluation, ONNX export) takes about a minute: ``pytest -m slow
tests/monitoring/test_demo_http.py``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import socket
import threading

import pytest
import yaml

from tests.chaos.jobkit import JOB, deep_copy
from tests.monitoring.test_live_job import health, metric



def free_block(n: int) -> int:
    """A port N with N .. N+n-1 all free right now."""
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + n > 65535:
            continue
        try:
            socks = []
            for p in range(base, base + n):
                socks.append(socket.socket())
                socks[-1].bind(("127.0.0.1", p))
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise RuntimeError("no block of free ports")


def test_each_station_gets_the_next_port_and_the_label_holder_the_one_after(tmp_path, capsys):
    from feddiff_app.demo import _party_configs

    data = {"federation": {"clients": {"hsi_station": {}, "lidar_station": {}}}}
    paths = _party_configs(tmp_path, data, ["hsi_station", "lidar_station", "label_holder"], 9100)
    ports = {n: yaml.safe_load(p.read_text())["federation"]["http_port"] for n, p in paths.items()}
    assert ports == {"hsi_station": 9101, "lidar_station": 9102, "label_holder": 9103}
    assert "label_holder: metrics at http://127.0.0.1:9103/metrics" in capsys.readouterr().out
    assert set(_party_configs(tmp_path, data, ["hsi_station"], None).values()) == {tmp_path / "job.yaml"}


@pytest.mark.slow
@pytest.mark.broker
@pytest.mark.parametrize("security", [None, "he"])
def test_demo_serves_the_dashboard_and_every_partys_metrics(tmp_path, mosquitto, security):
    from feddiff_app.demo import run_demo

    doc = deep_copy(JOB)
    doc["federation"].pop("write_map", None)
    cfg = tmp_path / "tiny.yaml"
    cfg.write_text(yaml.safe_dump(doc))
    port = free_block(4)
    args = argparse.Namespace(config=str(cfg), out=str(tmp_path / "out"), broker="mosquitto", security=security, http_port=port)
    printed = io.StringIO()
    result: dict = {}

    def demo() -> None:
        with contextlib.redirect_stdout(printed):
            result["rc"] = run_demo(args)

    t = threading.Thread(target=demo, daemon=True)
    t.start()
    agg, hsi, lidar, holder = (f"http://127.0.0.1:{port + i}/" for i in range(4))
    seen = {"agg": False, "hsi": False, "lidar": False}
    if security == "he":
        seen["label_holder"] = False
    while t.is_alive() and not all(seen.values()):
        seen["agg"] = seen["agg"] or (metric(agg, "feddiff_round") or 0) >= 1
        seen["hsi"] = seen["hsi"] or health(hsi) == 200
        seen["lidar"] = seen["lidar"] or health(lidar) == 200
        if "label_holder" in seen:
            seen["label_holder"] = seen["label_holder"] or health(holder) == 200
        t.join(0.2)
    t.join(300)
    assert result.get("rc") == 0, printed.getvalue()
    assert all(seen.values()), seen
    out = printed.getvalue()
    assert f"dashboard: http://127.0.0.1:{port}/" in out
    assert f"hsi_station: metrics at http://127.0.0.1:{port + 1}/metrics" in out
    assert f"lidar_station: metrics at http://127.0.0.1:{port + 2}/metrics" in out
    # the demo holds every modality, so it puts the SVM on the same split beside the result
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    svm = report["baselines"]["rbf_svm"]
    assert 0.0 < svm["oa"] <= 1.0 and svm["C"] > 0
    assert f"RBF SVM (C {svm['C']:g}" in out and f"OA {100 * svm['oa']:.2f} %" in out
