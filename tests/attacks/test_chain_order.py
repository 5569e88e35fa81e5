"""Issue #18 item 3 (chain order): duplicate filtering runs after the seal is verified.

Through a broker that does not enforce the generated ACL (a misconfigured one, or a bridge),
anyone can publish on a station's own uplink topic, so the topic check alone does not make the
header ``sender`` trustworthy. Unsigned envelopes claiming that station with sequence numbers
near 2^62 must be refused by the seal before the duplicate filter records them; otherwise the
station's genuine messages are dropped as stale. Victim: the aggregator's production chain
(``build_chain`` with the crypto filters) behind a real Mosquitto."""

from __future__ import annotations

import time

import numpy as np
import pytest

from crypto import security_filters
from feddiff.config import Config
from feddiff.protocol import topics
from feddiff.protocol.channel import Channel
from feddiff.protocol.endpoint import build_chain, fresh_seq
from feddiff.protocol.envelope import pack
from feddiff.protocol.message import Header, Message
from tests.attacks.conftest import JOB

pytestmark = [pytest.mark.security, pytest.mark.broker]


def chain(party_keys, job_directory, name, tmp_path):
    return build_chain(Config(), security_filters(JOB, party_keys[name], job_directory, replay_state=tmp_path / f"{name}-replay.json"))


def test_unsigned_envelopes_on_the_victims_topic_do_not_raise_its_floor(mosquitto, transport_factory, party_keys, job_directory, tmp_path):
    limit = Config().federation.max_message_bytes
    t = transport_factory(mosquitto, "agg")
    t.subscribe(topics.uplink(JOB, topics.ANY))
    agg = Channel(t, JOB, "agg", chain(party_keys, job_directory, "agg", tmp_path), limit)
    attacker = transport_factory(mosquitto, "intruder")
    victim = topics.uplink(JOB, "lidar")
    for i in range(600):
        h = Header(job=JOB, round=1, step=1, sender="lidar", seq=2**62 + i, content_type="features", timestamp=time.time())
        attacker.publish(victim, pack(Message(victim, h, b"x")), qos=1, wait=i == 599)

    lidar = Channel(transport_factory(mosquitto, "lidar"), JOB, "lidar", chain(party_keys, job_directory, "lidar", tmp_path), limit, seq_start=fresh_seq())
    lidar.send(victim, "features", {"x": np.arange(4, dtype=np.float32)}, round=1, step=1)

    deadline = time.monotonic() + 20
    got = None
    while got is None and time.monotonic() < deadline:
        got = agg.recv(1)
    assert got is not None and got.header.sender == "lidar", f"lidar's genuine message was dropped; rejected: {dict(agg.stats.rejected)}"
    assert sum(agg.stats.rejected.values()) >= 600
