"""The recorder's own decisions: health from phase, loop and stations; totals turned into counts."""

from __future__ import annotations

import time

from feddiff.monitoring import JobMonitor, MonitorServer

from .test_server import get, samples


def test_health_follows_stations_loop_and_phase():
    mon = JobMonitor("j", "aggregator")
    check = mon.health_check(loop_timeout_s=0.5, station_timeout_s=0.3)
    assert check() == (True, "ok")
    mon.station_seen("lidar_station")
    mon.heartbeat()
    assert check()[0]
    time.sleep(0.35)
    mon.heartbeat()
    ok, why = check()
    assert not ok and "lidar_station silent" in why
    mon.station_seen("lidar_station")  # it came back
    assert check()[0]
    mon.station_state("lidar_station", "gone")
    assert check() == (False, "station lidar_station gone")
    mon.station_seen("lidar_station")
    mon.phase("paused")
    assert check() == (False, "job paused")
    mon.phase("training")
    assert check()[0]
    time.sleep(0.55)
    assert "loop silent" in check()[1]


def test_healthz_flips_when_a_station_times_out_and_returns():
    mon = JobMonitor("j", "aggregator")
    mon.station_seen("hsi_station")
    with MonitorServer(mon, "127.0.0.1", 0, health=mon.health_check(loop_timeout_s=60, station_timeout_s=0.3)) as srv:
        assert get(srv.url + "healthz")[0] == 200
        time.sleep(0.4)
        code, _, body = get(srv.url + "healthz")
        assert code == 503 and b"hsi_station" in body
        mon.station_seen("hsi_station")
        assert get(srv.url + "healthz")[0] == 200


def test_channel_totals_count_only_what_is_new():
    mon = JobMonitor("j", "edge:hsi_station")
    mon.rejections_seen({"replay": 2})
    mon.rejections_seen({"replay": 2, "bad_signature": 1})
    mon.rejections_seen({"replay": 3, "bad_signature": 1})
    with MonitorServer(mon, "127.0.0.1", 0) as srv:
        s = samples(srv.url)
    assert s[("feddiff_rejected_messages_total", (("reason", "replay"),))] == 3
    assert s[("feddiff_rejected_messages_total", (("reason", "bad_signature"),))] == 1
    assert mon.snapshot()["rejects"] == {"replay": 3, "bad_signature": 1}


def test_final_evaluation_sets_the_oa_and_rounds_keep_train_accuracy():
    mon = JobMonitor("j", "aggregator")
    mon.round_committed(1, seconds=1.0, loss=0.9, train_acc=0.7)
    mon.evaluated(0.93)
    mon.evaluated(float("inf"))  # ignored
    with MonitorServer(mon, "127.0.0.1", 0) as srv:
        assert samples(srv.url)[("feddiff_validation_oa", ())] == 0.93
    st = mon.snapshot()
    assert st["final_oa"] == 0.93 and st["history"][0]["train_acc"] == 0.7 and st["history"][0]["oa"] is None
