"""The monitoring server over real HTTP: Prometheus text that parses, health that follows the
role's callable, a read-only dashboard API, clear errors."""

from __future__ import annotations

import io
import json
import socket
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from feddiff.errors import FedDiffError
from feddiff.monitoring import JobMonitor, MonitorServer, serve_monitoring


def get(url: str, method: str = "GET") -> tuple[int, str, bytes]:
    req = urllib.request.Request(url, method=method)
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, r.headers.get("Content-Type", ""), r.read()
    except urllib.error.HTTPError as err:
        return err.code, err.headers.get("Content-Type", ""), err.read()


def samples(url: str) -> dict[tuple, float]:
    """{(sample name, sorted labels): value} from a real scrape, parsed by prometheus_client."""
    status, ctype, body = get(url + "metrics")
    assert status == 200 and ctype.startswith("text/plain")
    out = {}
    for fam in text_string_to_metric_families(body.decode()):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


@pytest.fixture
def served():
    mon = JobMonitor("trento", "aggregator", security="signed", rounds_planned=5)
    with MonitorServer(mon, "127.0.0.1", 0, dashboard=True) as srv:
        yield mon, srv


def test_metrics_follow_the_recorded_events(served):
    mon, srv = served
    mon.phase("training")
    mon.round_started(1)
    mon.station_seen("hsi_station")
    mon.bytes("hsi_station", "in", 1200)
    mon.bytes("hsi_station", "out", 300)
    mon.rejected("bad_signature", party="hsi_station")
    mon.rejected("bad_signature")
    mon.rejected("replay")
    mon.round_committed(1, seconds=0.7, loss=0.42, oa=0.81)
    mon.round_started(2)
    s = samples(srv.url)
    assert s[("feddiff_round", ())] == 2
    assert s[("feddiff_rounds_committed_total", ())] == 1
    assert s[("feddiff_job_phase", (("phase", "training"),))] == 1
    assert s[("feddiff_job_phase", (("phase", "starting"),))] == 0
    assert s[("feddiff_bytes_total", (("direction", "in"), ("party", "hsi_station")))] == 1200
    assert s[("feddiff_bytes_total", (("direction", "out"), ("party", "hsi_station")))] == 300
    assert s[("feddiff_rejected_messages_total", (("reason", "bad_signature"),))] == 2
    assert s[("feddiff_rejected_messages_total", (("reason", "replay"),))] == 1
    assert s[("feddiff_round_latency_seconds_count", ())] == 1
    assert s[("feddiff_round_latency_seconds_bucket", (("le", "1.0"),))] == 1
    assert s[("feddiff_round_latency_seconds_bucket", (("le", "0.5"),))] == 0
    assert s[("feddiff_training_loss", ())] == pytest.approx(0.42)
    assert s[("feddiff_validation_oa", ())] == pytest.approx(0.81)
    assert 0 <= s[("feddiff_station_last_seen_age_seconds", (("station", "hsi_station"),))] < 5
    assert s[("process_resident_memory_bytes", ())] > 10e6
    assert s[("feddiff_job_info", (("job", "trento"), ("role", "aggregator"), ("security", "signed")))] == 1


def test_round_latency_defaults_to_time_since_start_and_bad_values_are_gaps(served):
    mon, srv = served
    mon.round_started(3)
    mon.round_committed(3, loss=float("nan"), oa=None)
    mon.bytes("x", "sideways", 5)  # ignored with a warning, never raised
    mon.map_png(b"not a png")
    st = mon.snapshot()
    assert st["history"][0]["loss"] is None and 0 <= st["history"][0]["seconds"] < 5
    assert st["map_version"] == 0
    assert ("feddiff_training_loss", ()) in samples(srv.url)


def test_healthz_follows_the_callable():
    state = {"ok": True}
    mon = JobMonitor("j", "edge:hsi_station")
    health = lambda: (state["ok"], "ok" if state["ok"] else "station lidar_station gone for 31 s")  # noqa: E731
    with MonitorServer(mon, "127.0.0.1", 0, health=health) as srv:
        assert get(srv.url + "healthz")[0] == 200
        state["ok"] = False
        code, _, body = get(srv.url + "healthz")
        assert code == 503 and b"lidar_station gone" in body
        state["ok"] = True
        assert get(srv.url + "healthz")[0] == 200


def test_a_failing_health_check_is_503_and_the_server_lives():
    def broken():
        raise RuntimeError("loop thread died")

    with MonitorServer(JobMonitor("j", "aggregator"), "127.0.0.1", 0, health=broken) as srv:
        code, _, body = get(srv.url + "healthz")
        assert code == 503 and b"loop thread died" in body and body.count(b"\n") == 1
        assert get(srv.url + "metrics")[0] == 200


def test_dashboard_state_and_map(served):
    from PIL import Image

    mon, srv = served
    code, ctype, page = get(srv.url)
    assert code == 200 and ctype.startswith("text/html") and b"/api/state" in page
    assert b"http://" not in page.replace(b"http://www.w3.org/2000/svg", b"")  # loads nothing from elsewhere
    assert get(srv.url + "map.png")[0] == 404
    buf = io.BytesIO()
    Image.new("RGB", (4, 3), "green").save(buf, format="PNG")
    mon.map_png(buf.getvalue())
    code, ctype, body = get(srv.url + "map.png")
    assert code == 200 and ctype == "image/png" and body == buf.getvalue()
    mon.station_seen("lidar_station")
    state = json.loads(get(srv.url + "api/state")[2])
    assert state["security"] == "signed" and state["healthy"] is True and state["map_version"] == 1
    assert list(state["stations"]) == ["lidar_station"] and state["stations"]["lidar_station"]["state"] == "online"


def test_read_only_and_edge_agents_serve_no_dashboard(served):
    _, srv = served
    for method in ("POST", "PUT", "DELETE"):
        assert get(srv.url + "api/state", method)[0] == 405
    assert get(srv.url + "nope")[0] == 404
    with MonitorServer(JobMonitor("j", "edge:hsi_station"), "127.0.0.1", 0) as edge:
        assert get(edge.url)[0] == 404 and get(edge.url + "api/state")[0] == 404
        assert get(edge.url + "metrics")[0] == 200


def test_port_taken_is_one_line_error_and_port_zero_is_off():
    class Fed:
        http_port = 0
        http_host = "127.0.0.1"

    assert serve_monitoring(Fed(), JobMonitor("j", "aggregator")) is None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(1)
        Fed.http_port = s.getsockname()[1]
        with pytest.raises(FedDiffError) as err:
            serve_monitoring(Fed(), JobMonitor("j", "aggregator"))
    assert "\n" not in str(err.value) and str(Fed.http_port) in str(err.value)


def test_two_monitors_in_one_process_do_not_share_metrics():
    a, b = JobMonitor("j", "aggregator"), JobMonitor("j", "edge:hsi_station")
    a.round_started(7)
    with MonitorServer(b, "127.0.0.1", 0) as srv:
        assert samples(srv.url)[("feddiff_round", ())] == 0
