"""Issue #18 item 2 (sealed grad_z): the HE gradient goes label holder -> station sealed end to
end; the aggregator relays a box it cannot open.

Real components throughout: the provisioned job's keys, the real Mosquitto with its generated
TLS config and ACL, the label holder's ``LabelHolderApp`` and the station's ``StationApp`` on
their runtime ``Node`` (channels from ``crypto.chain.party_security``), and the aggregator's
``Link``. The attacker is the aggregator: it reads what it relays, tries its own keys, and
relays boxes re-addressed, replayed and tampered with; the station refuses each with one line
and keeps serving."""

from __future__ import annotations

import logging
import zlib

import numpy as np
import pytest
import torch
import yaml
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto import relay_box
from crypto.chain import party_security, verified_he_context
from crypto.he import encrypt_batch
from crypto.keys import b64d, load_party, raw_public
from crypto.primitives import derive_key, length_prefixed
from feddiff.config import load_config
from feddiff.protocol import topics
from feddiff.protocol.endpoint import open_channel
from feddiff.protocol.label_messages import Fused, SealedBackward, SealedHeadGrad
from feddiff.runtime.node import Node

pytestmark = [pytest.mark.security, pytest.mark.broker]

N, DIM = 8, 8


@pytest.fixture
def cfg(job, tls_broker, tmp_path):
    doc = {
        "name": "j1",
        "scene": {"synthetic": {"seed": 1, "rows": 16, "cols": 16, "bands": 6, "train_per_class": 5}},
        "model": {"he_dim": DIM, "head_channels": 8, "unet": {"base_channels": 8, "num_res_blocks": 1}, "feature_timesteps": [5]},
        "train": {"threads": 1, "min_steps": 0},
        "federation": {"job": "j1", "security": "he", "label_holder": "lab", "keys_dir": str(job), "round_timeout_s": 20,
                       "broker": {"host": tls_broker.host, "port": tls_broker.port},
                       "clients": {"hsi": {"modalities": ["hsi"]}, "lidar": {"modalities": ["lidar"]}}},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_config(path)


def started(cfg, name, app, tmp_path) -> Node:
    node = Node(cfg, name, app, party_security(cfg, name, tmp_path / name))
    app.attach(node)  # takes the relay box out of the security hooks
    node.connect()
    node.attempt = 0  # as after the round's JOB
    return node


def deliver(node: Node, kind: str) -> bool:
    """The next message of ``kind`` on the node's channel, dispatched as its loop would."""
    while (msg := node.channel.recv(timeout=15)) is not None:
        if msg.header.content_type == kind:
            return node.dispatch(msg)
    raise AssertionError(f"{node.name}: no {kind} arrived")


@pytest.fixture
def parties(cfg, tmp_path):
    from aggregator.link import Link
    from aggregator.status import StatusBoard
    from edge_client.agent import StationApp
    from label_holder.holder import LabelHolderApp

    holder = LabelHolderApp(cfg, "lab", tmp_path / "lab")
    station = StationApp(cfg, "hsi", tmp_path / "hsi", progress=False)
    nodes = {"lab": started(cfg, "lab", holder, tmp_path), "hsi": started(cfg, "hsi", station, tmp_path)}
    channel = open_channel(cfg, "agg", [topics.uplink("j1", "+")], presence=False, **party_security(cfg, "agg", tmp_path / "agg"))
    link = Link(cfg, channel, StatusBoard(tmp_path / "status.json", "j1", ["hsi", "lidar"]))
    link.new_attempt(0)
    yield holder, station, nodes, link
    channel.close()
    for n in nodes.values():
        n.channel.close()


def pending_features(station, key) -> torch.Tensor:
    """What the station holds after sending a step's features: z with its graph."""
    proj = station.station.uplink.modules["hsi"]["he_proj"]
    station.station.optimizer = torch.optim.SGD(proj.parameters(), lr=0.1)
    z = proj(torch.ones(N, proj.in_features))
    station.station.pending[key] = {"z": z}
    return z


def head_grad(cfg, holder, nodes, link, step: int) -> SealedHeadGrad:
    """One training step through the broker: FUSED from the aggregator, the holder's reply."""
    ctx = verified_he_context(cfg, "agg", holder.public)
    z = np.random.default_rng(step).normal(0, 1, (N, DIM))
    link.send("lab", Fused(encrypt_batch(ctx, z), (N, DIM), True, np.arange(N), ["hsi", "lidar"]), round=0, step=step)
    deliver(nodes["lab"], "fused")
    return link.collect(SealedHeadGrad, {"lab"}, 0, step)["lab"]


def test_the_aggregator_relays_boxes_it_cannot_open(cfg, parties, job):
    holder, station, nodes, link = parties
    reply = head_grad(cfg, holder, nodes, link, 0)
    assert set(reply.boxes) == {"hsi", "lidar"} and reply.ce is not None
    agg = load_party(job, "agg")
    for name, box in reply.boxes.items():
        raw, header, _, body = relay_box._split(box)
        assert header["recipient"] == name and header["sender"] == "lab"
        # the aggregator's own agreement key does not open it
        epk = b64d(header["epk"])
        key = derive_key(agg.agree_key.exchange(X25519PublicKey.from_public_bytes(epk)), epk, raw_public(agg.agree_key.public_key()), "j1 relay-box")
        with pytest.raises(InvalidTag):
            AESGCM(key).decrypt(b64d(header["nonce"]), body, relay_box._AD_DOMAIN + length_prefixed(raw))
        with pytest.raises(relay_box.RelayBoxError):
            relay_box.GradientOpener(agg, link_directory(job), "lab").open(box, 0, 0, 0)
        # and the bytes it holds look random: incompressible, no float32 run of the gradient
        assert len(zlib.compress(body, 9)) > 0.98 * len(body)
    hsi = load_party(job, "hsi")
    grad = relay_box.GradientOpener(hsi, link_directory(job), "lab").open(reply.boxes["hsi"], 0, 0, 0)
    assert grad.shape == (N, DIM) and grad.astype("<f4").tobytes()[:16] not in reply.boxes["hsi"]
    forged = relay_box.seal_gradient(load_party(job, "lidar"), link_directory(job), relay_box.Binding("j1", 0, 0, 0, "lidar", "hsi"), grad)
    with pytest.raises(relay_box.RelayBoxError, match="not a label holder"):  # a station signing as the holder its config names
        relay_box.GradientOpener(hsi, link_directory(job), "lidar").open(forged, 0, 0, 0)
    with pytest.raises(relay_box.RelayBoxError, match="from 'lidar', not the label holder 'lab'"):
        relay_box.GradientOpener(hsi, link_directory(job), "lab").open(forged, 0, 0, 0)
    with pytest.raises(relay_box.RelayBoxError, match="addressed to 'hsi', not 'lidar'"):
        relay_box.GradientOpener(load_party(job, "lidar"), link_directory(job), "lab").open(reply.boxes["hsi"], 0, 0, 0)


def link_directory(job):
    from crypto.directory import load_directory

    return load_directory(job)


def test_the_station_applies_its_box_and_refuses_readdressed_replayed_and_tampered_ones(cfg, parties, caplog):
    holder, station, nodes, link = parties
    first = head_grad(cfg, holder, nodes, link, 0)
    second = head_grad(cfg, holder, nodes, link, 1)
    key = (0, 1, 0)
    z = pending_features(station, key)
    before = z.detach().clone()
    tampered = bytearray(second.boxes["hsi"])
    tampered[-5] ^= 0x01
    attacks = {
        "re-addressed": (second.boxes["lidar"], "addressed to 'lidar', not 'hsi'"),
        "replayed": (first.boxes["hsi"], "round 0 step 0 attempt 0, expected round 0 step 1 attempt 0"),
        "tampered": (bytes(tampered), "bad signature of 'lab'"),
        "not a box": (b"\x00" * 64, "not a relay box"),
    }
    for what, (box, reason) in attacks.items():
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="feddiff.edge"):
            link.send("hsi", SealedBackward(box), round=0, step=1)
            assert deliver(nodes["hsi"], "backward") is False
        refused = [r.getMessage() for r in caplog.records if "refused the relayed gradient" in r.getMessage()]
        assert len(refused) == 1 and reason in refused[0] and "\n" not in refused[0], (what, refused)
        assert station.station.applied_steps == 0 and key in station.station.pending, what
    link.send("hsi", SealedBackward(second.boxes["hsi"]), round=0, step=1)
    deliver(nodes["hsi"], "backward")
    assert station.station.applied_steps == 1 and key not in station.station.pending
    proj = station.station.uplink.modules["hsi"]["he_proj"]
    assert not torch.allclose(proj(torch.ones(N, proj.in_features)), before)  # the genuine gradient was applied


def test_a_head_gradient_with_boxes_missing_or_misnamed_is_refused():
    from aggregator.fusion.he import check_boxes
    from feddiff.protocol.message import EnvelopeError

    arrays, meta = SealedHeadGrad({"hsi": b"a", "lidar": b"b"}, 0.5, 3, 0.6).to_arrays()
    back = SealedHeadGrad.from_arrays(arrays, meta)
    assert back.boxes == {"hsi": b"a", "lidar": b"b"} and back.correct == 3
    with pytest.raises(EnvelopeError, match="one distinct station name per box"):
        SealedHeadGrad.from_arrays(arrays, {**meta, "to": ["hsi", "hsi"]})
    with pytest.raises(EnvelopeError, match="one distinct station name per box"):
        SealedHeadGrad.from_arrays(arrays, {**meta, "to": ["hsi"]})
    with pytest.raises(ValueError, match=r"boxes for \['hsi'\], expected \['hsi', 'lidar'\]"):
        check_boxes("lab", SealedHeadGrad({"hsi": b"a"}), {"hsi", "lidar"})
