"""The translation from a party's observer events to its recorder, event by event."""

from __future__ import annotations

from feddiff.monitoring import JobMonitor
from feddiff.monitoring.feed import MonitorFeed
from feddiff.runtime.observe import Observers


def feed(peer=None) -> tuple[JobMonitor, Observers]:
    mon = JobMonitor("job", "aggregator" if peer is None else "hsi_station", rounds_planned=4)
    return mon, Observers([MonitorFeed(mon, peer)])


def test_aggregator_credits_received_bytes_to_the_sender_and_counts_rounds():
    mon, obs = feed()
    obs.emit("bytes", sent=100, received=0)
    obs.emit("bytes", sent=100, received=700)
    obs.emit("station_seen", party="hsi_station")
    obs.emit("bytes", sent=100, received=1000)
    obs.emit("station_seen", party="lidar_station")
    obs.emit("bytes", sent=100, received=1000)  # no growth: nothing new to credit
    obs.emit("station_seen", party="hsi_station")
    obs.emit("round_started", round=0, attempt=1)
    obs.emit("round_committed", round=0, loss=1.5, train_acc=0.4, seconds=2.0)
    obs.emit("validation", oa=0.8)
    snap = mon.snapshot()
    assert snap["stations"]["hsi_station"]["bytes_in"] == 700 and snap["stations"]["lidar_station"]["bytes_in"] == 300
    assert snap["stations"]["hsi_station"]["bytes_out"] == 0  # sends are counted per party by the daemon
    assert snap["round"] == 0 and snap["rounds_committed"] == 1 and snap["history"][0]["loss"] == 1.5
    assert snap["final_oa"] == 0.8


def test_a_timed_out_station_is_lost_until_heard_from_and_rejections_are_counted():
    mon, obs = feed()
    obs.emit("station_seen", party="lidar_station")
    obs.emit("round_failed", round=2, reason="timeout", parties=["lidar_station"])
    assert mon.snapshot()["stations"]["lidar_station"]["state"] == "lost"
    obs.emit("station_seen", party="lidar_station")
    assert mon.snapshot()["stations"]["lidar_station"]["state"] == "online"
    obs.emit("message_rejected", party="lidar_station", kind="forward", reason="bad_payload")
    assert mon.snapshot()["rejects"] == {"bad_payload": 1} and mon.snapshot()["stations"]["lidar_station"]["rejects"] == 1


def test_a_station_records_its_traffic_against_the_aggregator_and_its_channel_rejections():
    mon, obs = feed(peer="aggregator")
    obs.emit("received", kind="job", round=3)
    obs.emit("bytes", sent=50, received=400)
    obs.emit("loop", rejected={"malformed": 2})
    obs.emit("loop", rejected={"malformed": 2})  # totals, not increments
    obs.emit("received", kind="done", round=4)
    snap = mon.snapshot()
    assert snap["round"] == 3 and snap["phase"] == "finished"
    assert snap["stations"]["aggregator"]["bytes_out"] == 50 and snap["stations"]["aggregator"]["bytes_in"] == 400
    assert snap["rejects"] == {"malformed": 2}


def test_a_station_pretraining_is_not_taken_for_a_hung_loop():
    from feddiff.config import Config
    from feddiff.monitoring.feed import MIN_LOOP_TIMEOUT_S, loop_timeout_s

    cfg = Config()
    cfg.federation.round_timeout_s, cfg.train.pretrain_steps = 60, 2000
    assert loop_timeout_s(cfg) == 60 + 30 + 1000
    cfg.federation.round_timeout_s, cfg.train.pretrain_steps = 5, 20
    assert loop_timeout_s(cfg) == MIN_LOOP_TIMEOUT_S
