"""The dashboard in a real headless Chromium: the page loads from the daemon alone, the round
counter advances and the stations appear while a driver thread feeds the recorder.

Run: ``pytest -m browser tests/monitoring`` (also in the default run; skips where chromium or
chromedriver is absent). ``FEDDIFF_DASHBOARD_SCREENSHOT=docs/dashboard.png`` keeps the
screenshot there.
"""

from __future__ import annotations

import io
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path

import pytest

from feddiff.monitoring import JobMonitor, MonitorServer

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"

pytestmark = pytest.mark.browser


@pytest.fixture
def browser(tmp_path):
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip(f"needs {CHROMIUM} and {CHROMEDRIVER} (Debian: apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'chromium-profile'}", "--window-size=1280,900"):
        opts.add_argument(flag)
    drv = webdriver.Chrome(service=Service(CHROMEDRIVER), options=opts)
    try:
        yield drv
    finally:
        drv.quit()


def map_png() -> bytes:
    """A real classification map PNG (the synthetic scene's ground truth through the map writer)."""
    from feddiff.config import SyntheticSpec
    from feddiff.data.synthetic import make_synthetic_scene
    from feddiff.maps import write_png_map

    scene = make_synthetic_scene(SyntheticSpec())
    truth = scene.train_labels + scene.test_labels
    buf = io.BytesIO()
    path = Path(tempfile.gettempdir()) / f"feddiff-dash-{os.getpid()}.png"
    write_png_map(truth, scene.class_names, path)
    buf.write(path.read_bytes())
    path.unlink()
    return buf.getvalue()


def drive(mon: JobMonitor, stop: threading.Event, png: bytes) -> None:
    """A job as the aggregator would record it: stations report, rounds commit, a map arrives."""
    mon.phase("training")
    r = 0
    while not stop.is_set() and r < 200:
        r += 1
        mon.round_started(r)
        for name in ("hsi_station", "lidar_station"):
            mon.station_seen(name, "training")
            mon.bytes(name, "in", 40_000 + 100 * r)
            mon.bytes(name, "out", 12_000)
        if r == 3:
            mon.rejected("bad_signature", party="lidar_station")
        time.sleep(0.25)
        mon.round_committed(r, loss=1.6 * 0.85 ** r + 0.05, oa=min(0.95, 0.4 + 0.06 * r), train_acc=min(0.99, 0.45 + 0.07 * r))
        if r == 4:
            mon.map_png(png)


def test_dashboard_shows_the_job_advancing(browser, tmp_path):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    mon = JobMonitor("demo", "aggregator", security="signed", rounds_planned=20)
    stop = threading.Event()
    with MonitorServer(mon, "127.0.0.1", 0, health=lambda: True, dashboard=True) as srv:
        browser.get(srv.url)
        wait = WebDriverWait(browser, 30, poll_frequency=0.2)
        wait.until(lambda d: d.find_element(By.ID, "security").text == "signed")
        assert browser.find_element(By.ID, "round").text == "0"
        assert not browser.find_elements(By.CSS_SELECTOR, "#stations tr[data-station]")
        feeder = threading.Thread(target=drive, args=(mon, stop, map_png()), daemon=True)
        feeder.start()
        try:
            wait.until(lambda d: int(d.find_element(By.ID, "round").text) >= 2)
            first = int(browser.find_element(By.ID, "round").text)
            wait.until(lambda d: int(d.find_element(By.ID, "round").text) > first)
            rows = wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#stations tr[data-station]") if len(d.find_elements(By.CSS_SELECTOR, "#stations tr[data-station]")) == 2 else None)
            assert sorted(r.get_attribute("data-station") for r in rows) == ["hsi_station", "lidar_station"]
            wait.until(lambda d: d.find_element(By.ID, "map").is_displayed() and d.execute_script("return document.getElementById('map').naturalWidth") > 0)
            wait.until(lambda d: int(d.find_element(By.ID, "round").text) >= 10)
            assert browser.find_element(By.ID, "phase").text == "training"
            assert len(browser.find_elements(By.CSS_SELECTOR, "#loss polyline")) == 1 and len(browser.find_elements(By.CSS_SELECTOR, "#oa polyline")) == 2
            assert "lidar_station" in browser.find_element(By.CSS_SELECTOR, "#stations tr[data-station='lidar_station']").text
            shot = tmp_path / "dashboard.png"
            browser.save_screenshot(str(shot))
            assert shot.stat().st_size > 10_000
            keep = os.environ.get("FEDDIFF_DASHBOARD_SCREENSHOT")
            if keep:
                shutil.copyfile(shot, keep)
        finally:
            stop.set()
            feeder.join(timeout=5)
    logs = [e for e in browser.get_log("browser") if e.get("level") == "SEVERE"] if hasattr(browser, "get_log") else []
    assert not logs, logs
