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
    assert ReplayGuard(tmp_path / "state/replay.json", 60).last_seq("hsi") == 3
    assert json.loads((tmp_path / "state/replay.json").read_text())["last_seq"] == {"hsi": 3}  # compacted on load
    assert sorted(p.name for p in (tmp_path / "state").iterdir()) == ["replay.json"]  # no temp file or journal left


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


def accept(guard: ReplayGuard, make_msg, *seqs: int, sender: str = "hsi") -> None:
    for seq in seqs:
        guard.inbound(make_msg(UP_HSI, sender, b"x", seq=seq))


def test_each_accept_is_one_journal_line_until_compaction(tmp_path: Path, make_msg) -> None:
    guard = ReplayGuard(tmp_path / "replay.json", 60, compact_every=3)
    accept(guard, make_msg, 1, 2, 3)
    assert len((tmp_path / "replay.json.journal").read_bytes().splitlines()) == 3
    accept(guard, make_msg, 4)  # the 4th record compacts first: snapshot holds 3, journal holds 4
    assert json.loads((tmp_path / "replay.json").read_text())["last_seq"] == {"hsi": 3}
    assert (tmp_path / "replay.json.journal").read_bytes().splitlines() == [b'["hsi", 4]']
    assert ReplayGuard(tmp_path / "replay.json", 60).last_seq("hsi") == 4


def test_torn_journal_tail_forgets_nothing_that_was_accepted(tmp_path: Path, make_msg) -> None:
    guard = ReplayGuard(tmp_path / "replay.json", 60)
    accept(guard, make_msg, 1, 2)
    guard.close()
    with open(tmp_path / "replay.json.journal", "ab") as f:
        f.write(b'["hsi", 99')  # a crash in the middle of the append for seq 99 (never accepted)
    restarted = ReplayGuard(tmp_path / "replay.json", 60)
    assert restarted.last_seq("hsi") == 2
    with pytest.raises(EnvelopeError, match="replay"):
        accept(restarted, make_msg, 2)
    accept(restarted, make_msg, 3)  # appended after the dropped tail, not glued to it
    assert ReplayGuard(tmp_path / "replay.json", 60).last_seq("hsi") == 3


def test_malformed_journal_record_refuses_to_start(tmp_path: Path, make_msg) -> None:
    accept(ReplayGuard(tmp_path / "replay.json", 60), make_msg, 1)
    with open(tmp_path / "replay.json.journal", "ab") as f:
        f.write(b'{"hsi": "two"}\n')
    with pytest.raises(ReplayStateError, match="replay.json.journal"):
        ReplayGuard(tmp_path / "replay.json", 60)
