"""Monitoring of a REAL job: a Mosquitto, a `feddiff aggregator` and two `feddiff edge` processes
on loopback, the aggregator serving /metrics, /healthz and the dashboard on its
``federation.http_port``, one station its own /metrics.

One job serves every check (starting a job costs most of the time): the round advances in
scrapes and in a headless Chromium, the stations appear, and /healthz goes 503 while a killed
station is gone past its timeout and back to 200 once it is restarted.
``FEDDIFF_DASHBOARD_SCREENSHOT=docs/dashboard.png`` keeps the screenshot of the live job.
"""

from __future__ import annotations

import os
import shutil
import socket
import time

import pytest
import yaml

from tests.chaos.jobkit import JOB, Job, deep_copy
from tests.monitoring.test_dashboard import browser  # noqa: F401 - the real-Chromium fixture
from tests.monitoring.test_server import get, samples

pytestmark = [pytest.mark.broker, pytest.mark.browser]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def config_with_port(job: Job, name: str, http_port: int):
    doc = deep_copy(job.doc)
    doc["federation"]["http_port"] = http_port
    path = job.root / f"job-{name}-http.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def wait_until(what: str, pred, job: Job, timeout: float = 120, poll: float = 0.2):
    return job.wait_for(what, pred, timeout, poll)


def metric(url: str, name: str, **labels) -> float | None:
    try:
        return samples(url).get((name, tuple(sorted(labels.items()))))
    except OSError:
        return None  # not serving yet


def rejected_total(url: str) -> float:
    return sum(v for (name, _), v in samples(url).items() if name == "feddiff_rejected_messages_total")


def publish_garbage(port: int, topic: str) -> None:
    """Bytes that are no FedDiff message, on a party's topic, from a real MQTT client."""
    import paho.mqtt.client as mqtt

    c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"intruder-{time.time_ns()}")
    c.connect("127.0.0.1", port)
    c.loop_start()
    c.publish(topic, b"not a feddiff message", qos=1).wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


def health(url: str) -> int | None:
    try:
        return get(url + "healthz")[0]
    except OSError:
        return None


@pytest.fixture
def live(tmp_path, mosquitto):
    doc = deep_copy(JOB)
    doc["train"]["epochs"] = 60  # never finishes while the test looks at it
    job = Job(tmp_path / "live", mosquitto.port, doc)
    agg_port, hsi_port = free_port(), free_port()
    job.spawn("aggregator", "--config", str(config_with_port(job, "aggregator", agg_port)))
    job.spawn("edge", "--config", str(config_with_port(job, "hsi_station", hsi_port)), "--id", "hsi_station")
    stations = {"lidar_station": job.edge("lidar_station")}
    try:
        yield job, f"http://127.0.0.1:{agg_port}/", f"http://127.0.0.1:{hsi_port}/", stations, mosquitto.port
    finally:
        job.cleanup()


def test_live_job_metrics_health_and_dashboard(live, browser):  # noqa: F811 - pytest fixture
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from feddiff.protocol import topics

    job, agg, hsi, stations, broker_port = live
    # /metrics scraped during the job: the round advances
    first = wait_until("round 1 in /metrics", lambda: (metric(agg, "feddiff_round") or 0) >= 1 and metric(agg, "feddiff_round"), job)
    wait_until("the round to advance in /metrics", lambda: (metric(agg, "feddiff_round") or 0) > first, job)
    m = samples(agg)
    assert m[("feddiff_rounds_committed_total", ())] >= 1
    assert m[("feddiff_round_latency_seconds_count", ())] >= 1 and m[("feddiff_round_latency_seconds_sum", ())] > 0
    assert m[("feddiff_training_loss", ())] > 0
    assert m[("process_resident_memory_bytes", ())] > 50e6  # torch is loaded
    for station in job.stations:
        assert m[("feddiff_bytes_total", (("direction", "in"), ("party", station)))] > 0
        assert m[("feddiff_bytes_total", (("direction", "out"), ("party", station)))] > 0
        assert 0 <= m[("feddiff_station_last_seen_age_seconds", (("station", station),))] < 15
    assert m[("feddiff_job_phase", (("phase", "training"),))] == 1
    assert m[("feddiff_rounds_planned", ())] == job.epochs
    e = samples(hsi)  # a station serves its own metrics (no dashboard)
    assert e[("feddiff_round", ())] >= 1 and e[("feddiff_bytes_total", (("direction", "out"), ("party", "aggregator")))] > 0
    assert get(hsi)[0] == 404 and health(hsi) == 200 and health(agg) == 200
    # a message that is no FedDiff message is counted as rejected, by both ends it reaches
    name = job.doc["federation"]["job"]
    before_agg, before_hsi = rejected_total(agg), rejected_total(hsi)
    publish_garbage(broker_port, topics.uplink(name, "hsi_station"))
    publish_garbage(broker_port, topics.downlink(name, "hsi_station"))
    wait_until("the aggregator to count the rejection", lambda: rejected_total(agg) > before_agg, job, timeout=30)
    wait_until("the station to count the rejection", lambda: rejected_total(hsi) > before_hsi, job, timeout=30)

    # the dashboard in a real headless Chromium: round counter advances, the stations appear
    browser.get(agg)
    wait = WebDriverWait(browser, 60, poll_frequency=0.2)
    wait.until(lambda d: d.find_element(By.ID, "security").text == "none")
    shown = wait.until(lambda d: int(d.find_element(By.ID, "round").text or 0) >= 1 and int(d.find_element(By.ID, "round").text))
    wait.until(lambda d: int(d.find_element(By.ID, "round").text) > shown)
    rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#stations tr[data-station]") if len(d.find_elements(By.CSS_SELECTOR, "#stations tr[data-station]")) == 2 else None)
    assert sorted(r.get_attribute("data-station") for r in rows) == sorted(job.stations)
    wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#loss polyline")) == 1)
    shot = job.root / "dashboard.png"
    browser.save_screenshot(str(shot))
    assert shot.stat().st_size > 10_000
    if os.environ.get("FEDDIFF_DASHBOARD_SCREENSHOT"):
        shutil.copyfile(shot, os.environ["FEDDIFF_DASHBOARD_SCREENSHOT"])

    # a station gone past its timeout: 503; back: 200, and the job goes on
    job.kill(stations["lidar_station"])
    t_kill = time.monotonic()
    wait_until("/healthz 503 with lidar_station gone", lambda: health(agg) == 503, job, timeout=60)
    assert time.monotonic() - t_kill >= 5  # not before the timeout
    assert "lidar_station" in get(agg + "healthz")[2].decode()
    job.edge("lidar_station")
    wait_until("/healthz 200 after lidar_station returned", lambda: health(agg) == 200, job, timeout=90)
    again = metric(agg, "feddiff_round")
    wait_until("a round committed after the return", lambda: (metric(agg, "feddiff_round") or 0) > again, job, timeout=120)
