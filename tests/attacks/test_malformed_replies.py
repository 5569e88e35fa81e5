"""Issue #18 item 6: one malformed reply or hello from an authenticated party must not kill the
aggregator. The victim is the real aggregator ``Link`` (and the HE fusion on top of it) behind a
real Mosquitto; the attacker is a station publishing through its own real channel.

Before the fix a NaN gradient was handed to training, a bad ciphertext blob raised HEError out
of the daemon (before report.json, again at every restart), and a HELLO ``shape`` of
[1e6, 1e6], ["a", 3] or [-1, 5] was trusted as the scene the aggregator allocates a map for."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import yaml

from aggregator.fusion.he import HeThirdParty
from aggregator.fusion.plain import ownership
from aggregator.link import Link, RoundFailed
from aggregator.status import StatusBoard
from crypto import he
from crypto.chain import verified_he_context
from feddiff.config import load_config
from feddiff.protocol import jobs, topics
from feddiff.protocol.endpoint import open_channel
from feddiff.protocol.label_messages import CeGrad, Encrypted
from feddiff.protocol.messages import Hello
from label_holder.holder import holder_context

pytestmark = pytest.mark.security

CLIENTS = {"hsi": {"modalities": ["hsi"]}, "lidar": {"modalities": ["lidar"]}}


def config(tmp_path, port, **fed):
    doc = {"name": "j1", "scene": {"synthetic": {"seed": 1, "rows": 16, "cols": 16, "bands": 6, "train_per_class": 5}},
           "model": {"he_dim": 8},
           "federation": {"job": "j1", "broker": {"host": "127.0.0.1", "port": port}, "clients": CLIENTS, "round_timeout_s": 10, **fed}}
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_config(path)


@pytest.fixture
def wired(tmp_path, mosquitto):
    """(make_link(cfg), station channels) over the real broker; everything closed after."""
    opened = []

    def make(cfg):
        agg = open_channel(cfg, "aggregator", [topics.uplink("j1", "+")], presence=False)
        st = {c: open_channel(cfg, c, [topics.downlink("j1", c)], presence=False) for c in CLIENTS}
        opened.extend([agg, *st.values()])
        return Link(cfg, agg, StatusBoard(tmp_path / "status.json", "j1", list(CLIENTS))), st

    yield make
    for ch in opened:
        ch.close()


def send(channel, sender, payload, rnd=0, step=0, attempt=0):
    arrays, meta = payload.to_arrays()
    if payload.kind != jobs.HELLO:
        meta = {"attempt": attempt, **meta}
    channel.send(topics.uplink("j1", sender), payload.kind, arrays, round=rnd, step=step, meta=meta)


def test_hostile_hello_shapes_are_refused_in_one_line_and_the_link_goes_on(tmp_path, mosquitto, wired, caplog):
    link, st = wired(config(tmp_path, mosquitto.port))
    for shape in ([1e6, 1e6], ["a", 3], [-1, 5], [1_000_000, 1_000_000]):
        send(st["hsi"], "hsi", Hello({"client": "hsi", "fresh": True, "shape": shape}))
    send(st["hsi"], "hsi", Hello({"client": "hsi", "fresh": True, "shape": [16, 16]}))
    with caplog.at_level(logging.WARNING, logger="feddiff.aggregator"):
        link.collect(Hello, {"hsi"}, 0, 0)
    assert link.scene_shape == (16, 16)
    refused = [r.getMessage() for r in caplog.records if "refused hello from hsi" in r.getMessage()]
    assert len(refused) == 4 and all("\n" not in m for m in refused)


def test_a_nan_gradient_fails_the_round_naming_its_sender(tmp_path, mosquitto, wired):
    link, st = wired(config(tmp_path, mosquitto.port, label_holder="hsi"))
    grad = np.zeros((4, 3), np.float32)
    grad[1, 2] = np.nan
    send(st["hsi"], "hsi", CeGrad(grad, 0.5, 1), rnd=1, step=0)
    with pytest.raises(RoundFailed) as err:
        link.collect(CeGrad, {"hsi"}, 1, 0)
    assert err.value.reason == "bad_reply" and err.value.clients == ["hsi"]


BAD_ENCRYPTED = {  # what the lidar station answers while hsi sends a good reply
    "garbage_blob": lambda context: Encrypted([b"\x00not a ciphertext" * 4], (4, 8)),
    "wrong_shape": lambda context: Encrypted(he.encrypt_batch(context, np.ones((400, 8))), (400, 8)),
}


@pytest.mark.parametrize("bad", BAD_ENCRYPTED.values(), ids=BAD_ENCRYPTED.keys())
def test_a_malformed_encrypted_reply_fails_the_round_naming_its_sender(tmp_path, mosquitto, wired, job, bad):
    cfg = config(tmp_path, mosquitto.port, security="he", label_holder="lab", keys_dir=str(job))
    link, st = wired(cfg)
    _, blob = holder_context(cfg, "lab")
    fusion = HeThirdParty(cfg, link)
    fusion.context = verified_he_context(cfg, "agg", blob)
    rows, cols = np.arange(4), np.arange(4)
    send(st["hsi"], "hsi", Encrypted(he.encrypt_batch(fusion.context, np.ones((4, 8))), (4, 8)), rnd=1, step=0)
    send(st["lidar"], "lidar", bad(fusion.context), rnd=1, step=0)
    with pytest.raises(RoundFailed) as err:
        fusion.receive(1, 0, (rows, cols, None), ownership(link.clients, ["hsi", "lidar"], rows, cols))
    assert err.value.reason == "bad_reply" and err.value.clients == ["lidar"]


def test_replies_nobody_asked_for_do_not_pile_up_in_the_early_buffer(tmp_path, mosquitto, wired):
    """Item 5: the early-reply buffer keeps what a pipelined round can send ahead (a reply kind,
    this round, the next steps) within a byte budget; a flood of other rounds' steps and made-up
    kinds is dropped, and the genuine early reply is still there when it is awaited."""
    link, st = wired(config(tmp_path, mosquitto.port, label_holder="lidar", max_message_bytes=1 << 20))
    blob = {"x": np.zeros(100_000, np.uint8)}
    for i in range(60):
        st["lidar"].send(topics.uplink("j1", "lidar"), jobs.FEATURES, blob, round=1, step=10 + i, meta={"attempt": 0})
        st["lidar"].send(topics.uplink("j1", "lidar"), f"junk{i}", blob, round=1, step=1, meta={"attempt": 0})
    for s in range(1, 4):  # pipelined answers to steps 1..3: more bytes than a sender may park
        st["lidar"].send(topics.uplink("j1", "lidar"), jobs.FEATURES, {"x": np.zeros(900_000, np.uint8)}, round=1, step=s, meta={"attempt": 0})
    send(st["lidar"], "lidar", CeGrad(np.zeros((4, 3), np.float32), 0.5, 1), rnd=1, step=0)  # same publisher: arrives last
    link.collect(CeGrad, {"lidar"}, 1, 0)
    early = link.collector.early
    parked = sum(a.nbytes for m in early.values() for a in m.arrays.values())
    assert parked <= 2 * (1 << 20), f"{len(early)} early replies pin {parked} bytes"
    assert set(early) == {(jobs.FEATURES, 1, 1, "lidar"), (jobs.FEATURES, 1, 2, "lidar")}
    assert set(link.collector.collect(jobs.FEATURES, {"lidar"}, 1, 1, timeout=1)) == {"lidar"}  # served from the buffer


def test_weights_of_a_foreign_shape_fail_the_round_naming_the_group(tmp_path, mosquitto):
    from aggregator.averaging import FedAvg
    from feddiff.protocol.messages import Weights

    doc = {"name": "j1", "scene": {"synthetic": {"seed": 1, "rows": 16, "cols": 16, "bands": 6, "train_per_class": 5}},
           "federation": {"job": "j1", "broker": {"host": "127.0.0.1", "port": mosquitto.port},
                          "clients": {"a": {"modalities": ["hsi"], "region": [0, 8, 0, 16]}, "b": {"modalities": ["hsi"], "region": [8, 16, 0, 16]},
                                      "l": {"modalities": ["lidar"]}}}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc))
    cfg = load_config(tmp_path / "job.yaml")
    channel = open_channel(cfg, "aggregator", [topics.uplink("j1", "+")], presence=False)
    try:
        avg = FedAvg(cfg, Link(cfg, channel, StatusBoard(tmp_path / "status.json", "j1", ["a", "b", "l"])))
        avg.samples = {"a": 5, "b": 5}
        replies = {"a": Weights({"hsi": {"w": np.ones((4, 4), np.float32)}}, 5), "b": Weights({"hsi": {"w": np.ones((400, 4), np.float32)}}, 5)}
        with pytest.raises(RoundFailed) as err:
            avg.combine(replies, {"hsi": 10})
        assert set(err.value.clients) == {"a", "b"}
    finally:
        channel.close()
