"""ReplayGuard with SealFilter: a recorded envelope cannot be played back, not even after a restart."""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path

import pytest

from crypto import security_filters
from crypto.replay import ReplayGuard, ReplayStateError
from feddiff.protocol.message import EnvelopeError, FilterChain, Message

UP_HSI = "feddiff/j1/up/hsi"


@pytest.fixture
def receiver(keys, directory, tmp_path: Path):
    """receiver() -> the aggregator's inbound chain over a replay state file in tmp_path
    (calling it again simulates a restart: a new process reading the same file)."""
    state = tmp_path / "state" / "replay.json"
    return lambda: FilterChain(security_filters("j1", keys["agg"], directory, replay_state=state))


@pytest.fixture
def sender(keys, directory):
    chain = FilterChain(security_filters("j1", keys["hsi"], directory))
    return lambda make_msg, seq: chain.outbound(make_msg(UP_HSI, "hsi", f"update {seq}".encode(), seq=seq))[0]


def reason(chain: FilterChain, msg: Message) -> str:
    with pytest.raises(EnvelopeError) as e:
        chain.inbound(msg)
    return e.value.reason


def test_replayed_envelope_is_rejected(receiver, sender, make_msg) -> None:
    rx = receiver()
    msg = sender(make_msg, 1)
    assert rx.inbound(msg).payload == b"update 1"
    assert reason(rx, msg) == "replay"


def test_replay_is_rejected_after_restart(receiver, sender, make_msg, tmp_path: Path) -> None:
    first, second = sender(make_msg, 1), sender(make_msg, 2)
    rx = receiver()
    rx.inbound(first)
    rx.inbound(second)
    del rx
    restarted = receiver()
    assert reason(restarted, first) == "replay"
    assert reason(restarted, second) == "replay"
    assert restarted.inbound(sender(make_msg, 3)).payload == b"update 3"
    assert json.loads((tmp_path / "state/replay.json").read_text())["last_seq"] == {"hsi": 3}
    assert [p.name for p in (tmp_path / "state").iterdir()] == ["replay.json"]  # no temp file left


def test_older_sequence_number_is_a_replay(receiver, sender, make_msg) -> None:
    early, late = sender(make_msg, 5), sender(make_msg, 9)
    rx = receiver()
    rx.inbound(late)
    assert reason(rx, early) == "replay"


def test_forged_message_does_not_advance_the_counter(receiver, sender, make_msg) -> None:
    rx = receiver()
    genuine = sender(make_msg, 2)
    forged = Message(genuine.topic, dataclasses.replace(genuine.header, seq=10**9), genuine.payload)
    assert reason(rx, forged) == "bad_signature"
    assert rx.inbound(genuine).payload == b"update 2"


def test_senders_are_counted_separately(keys, directory, receiver, sender, make_msg) -> None:
    rx = receiver()
    lidar = FilterChain(security_filters("j1", keys["lidar"], directory))
    rx.inbound(sender(make_msg, 7))
    [m] = lidar.outbound(make_msg("feddiff/j1/up/lidar", "lidar", b"lidar 1", seq=1))
    assert rx.inbound(m).payload == b"lidar 1"


def test_timestamp_outside_window_is_stale(make_msg) -> None:
    guard = ReplayGuard(None, window_s=30, clock=lambda: time.time() + 120)
    with pytest.raises(EnvelopeError) as e:
        guard.inbound(make_msg(UP_HSI, "hsi", b"x"))
    assert e.value.reason == "stale"


def test_corrupt_state_refuses_to_start_instead_of_forgetting(tmp_path: Path) -> None:
    state = tmp_path / "replay.json"
    state.write_text("{not json")
    with pytest.raises(ReplayStateError):
        ReplayGuard(state, 60)


def test_unpersistable_state_fails_closed_and_rolls_back(tmp_path: Path, make_msg) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    guard = ReplayGuard(blocker / "replay.json", 60)  # parent is a file: every write fails
    with pytest.raises(EnvelopeError) as e:
        guard.inbound(make_msg(UP_HSI, "hsi", b"x", seq=1))
    assert e.value.reason == "replay_state"
    assert guard.last_seq("hsi") is None
