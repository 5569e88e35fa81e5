"""The state store: atomic writes leave the old file on failure, committed rounds survive a
crash between the round file and the meta, rollback returns the committed weights."""

from __future__ import annotations

import json

import pytest
import torch

from feddiff.errors import FedDiffError
from feddiff.state.atomic import atomic_write_bytes, load_torch
from feddiff.state.rounds import RoundStore
from feddiff.state.snapshot import Committed, SnapshotStore
from feddiff.state.federated import aggregator_head, station_parts
from feddiff.state.layout import PRETRAINED, aggregator_store, station_store


def test_atomic_write_into_a_missing_folder_is_one_line_and_leaves_nothing(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(FedDiffError, match="cannot write") as err:
        atomic_write_bytes(blocker / "sub" / "doc.json", b"{}")
    assert "\n" not in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file"]


def test_load_torch_names_the_file_it_cannot_read(tmp_path):
    bad = tmp_path / "round_3.pt"
    bad.write_bytes(b"not a torch file")
    with pytest.raises(FedDiffError, match="round_3.pt: unreadable"):
        load_torch(bad)
    with pytest.raises(FedDiffError, match="not found"):
        load_torch(tmp_path / "missing.pt")


def test_round_store_commits_prunes_and_ignores_an_uncommitted_round(tmp_path):
    store = RoundStore(tmp_path, "party.json", keep=2)
    store.save_round(-1, {"w": torch.zeros(2)})
    for r in range(4):
        store.commit(r, {"w": torch.full((2,), float(r))}, seq=10 + r)
    assert store.rounds() == [-1, 2, 3]  # the start state is always kept
    store.save_round(4, {"w": torch.full((2,), 4.0)})  # crash before the meta names it
    again = RoundStore(tmp_path, "party.json")
    assert again.committed_round == 3 and again.meta["seq"] == 13
    assert again.latest() == 3
    assert float(again.load_round(3)["w"][0]) == 3.0
    with pytest.raises(FedDiffError, match="no committed state for round 0"):
        again.load_round(0)


def test_round_store_without_meta_falls_back_to_the_highest_round(tmp_path):
    store = RoundStore(tmp_path, "party.json")
    store.save_round(5, {})
    store.save_round(7, {})
    assert RoundStore(tmp_path, "party.json").latest() == 7
    (tmp_path / "party.json").write_text("{not json")
    with pytest.raises(FedDiffError, match="party.json: unreadable"):
        RoundStore(tmp_path, "party.json")


def test_committed_restores_the_round_asked_for_or_the_latest(tmp_path):
    lin = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(lin.parameters(), lr=0.1)
    c = Committed(lin, opt, keep=2)
    for r in range(3):
        with torch.no_grad():
            lin.weight.fill_(float(r))
        c.mark(r)
    with torch.no_grad():
        lin.weight.fill_(99.0)
    c.restore(1)
    assert float(lin.weight.detach()[0, 0]) == 1.0
    c.restore(0)  # no longer kept (keep=2): the latest commit
    assert float(lin.weight.detach()[0, 0]) == 2.0


def test_snapshot_store_round_trip_and_absent(tmp_path):
    s = SnapshotStore(tmp_path / "snap.pt")
    assert s.load() is None
    s.commit({"round": 2, "head": {"w": torch.ones(1)}})
    assert s.load()["round"] == 2


def test_export_reads_a_job_through_the_stores(tmp_path):
    st = station_store(tmp_path / "hsi_station")
    st.save_doc(PRETRAINED, {"stats": {"hsi": {"mean": [0.0]}}, "unet": {"hsi": {"u": torch.ones(1)}}})
    st.commit(0, {"branches": {"hsi": {"b": torch.zeros(1)}}, "uplink": {"hsi": {}}})
    st.save_round(1, {"branches": {"hsi": {"b": torch.ones(1)}}})  # never committed
    parts = station_parts(tmp_path / "hsi_station", ["hsi"])
    assert float(parts["hsi"].branch["b"][0]) == 0.0 and parts["hsi"].stats == {"mean": [0.0]}
    aggregator_store(tmp_path / "aggregator").commit({"state": json.dumps({}), "head": {"h": torch.ones(1)}, "optimizer": {}})
    assert float(aggregator_head(tmp_path / "aggregator")["h"][0]) == 1.0
    with pytest.raises(FedDiffError, match="did the federated job finish"):
        station_parts(tmp_path / "lidar_station", ["lidar"])
