"""Issue #18 item 3: unauthenticated envelopes must not poison another sender's state.

The duplicate filter and chunk reassembly run before the seal is verified, so what they key
their state on (the header's ``sender``) is attacker-chosen. A station holding only its own
genuine credentials (the broker lets it write its own uplink, nothing else) attacks the other
station through the aggregator's production chain, over the generated TLS broker and ACL."""

from __future__ import annotations

import time
import tracemalloc

import numpy as np
import pytest

from crypto import security_filters
from feddiff.config import Config
from feddiff.protocol import topics
from feddiff.protocol.arrays import encode_arrays
from feddiff.protocol.channel import Channel
from feddiff.protocol.endpoint import build_chain, fresh_seq
from feddiff.protocol.envelope import pack
from feddiff.protocol.filters import DedupFilter
from feddiff.protocol.message import EnvelopeError, Header, Message
from tests.attacks.conftest import JOB

pytestmark = [pytest.mark.security, pytest.mark.broker]


def sealed_chain(keys, directory, name: str, state_dir, chunk_bytes: int | None = None):
    cfg = Config()
    if chunk_bytes:
        cfg.federation.chunk_bytes = chunk_bytes
    return build_chain(cfg, security_filters(JOB, keys[name], directory, replay_state=state_dir / f"{name}-replay.json"))


def aggregator(job, keys, directory, party_transport, state_dir) -> Channel:
    t = party_transport(job, "agg")
    t.subscribe(topics.uplink(JOB, topics.ANY))
    return Channel(t, JOB, "agg", sealed_chain(keys, directory, "agg", state_dir), Config().federation.max_message_bytes)


def raw(topic: str, sender: str, seq: int, payload: bytes = b"x", **ext) -> bytes:
    h = Header(job=JOB, round=1, step=1, sender=sender, seq=seq, content_type="features", timestamp=time.time(), ext=ext)
    return pack(Message(topic, h, payload))


def test_forged_sender_on_own_uplink_does_not_raise_the_victims_floor(job, party_keys, job_directory, party_transport, tmp_path):
    agg = aggregator(job, party_keys, job_directory, party_transport, tmp_path)
    attacker = party_transport(job, "hsi")
    own_uplink = topics.uplink(JOB, "hsi")
    for i in range(600):
        attacker.publish(own_uplink, raw(own_uplink, "lidar", 2**62 + i), qos=1, wait=i == 599)

    lidar = Channel(party_transport(job, "lidar"), JOB, "lidar", sealed_chain(party_keys, job_directory, "lidar", tmp_path),
                    Config().federation.max_message_bytes, seq_start=fresh_seq())
    lidar.send(topics.uplink(JOB, "lidar"), "features", {"x": np.arange(4, dtype=np.float32)}, round=1, step=1)

    got = agg.recv(20)
    assert got is not None and got.header.sender == "lidar", f"lidar's genuine message was dropped; rejected: {dict(agg.stats.rejected)}"
    assert agg.stats.rejected["wrong_topic"] == 600


def test_one_byte_chunks_cannot_evict_another_senders_half_received_message(job, party_keys, job_directory, party_transport, tmp_path):
    agg = aggregator(job, party_keys, job_directory, party_transport, tmp_path)
    lidar_t = party_transport(job, "lidar")
    lidar_chain = sealed_chain(party_keys, job_directory, "lidar", tmp_path, chunk_bytes=1000)
    up = topics.uplink(JOB, "lidar")
    values = np.random.default_rng(0).standard_normal(2000).astype(np.float32)  # incompressible: several chunks
    payload = encode_arrays({"x": values})
    header = Header(job=JOB, round=1, step=1, sender="lidar", seq=fresh_seq(), content_type="features", timestamp=time.time())
    wire = [pack(m) for m in lidar_chain.outbound(Message(up, header, payload))]
    assert len(wire) >= 3
    for w in wire[:-1]:
        lidar_t.publish(up, w, qos=1)

    attacker = party_transport(job, "hsi")
    own_uplink = topics.uplink(JOB, "hsi")
    for i in range(64):
        chunk = {"id": f"hsi:{i}", "index": 0, "count": 2, "total_len": 2, "sha256": "0" * 64}
        attacker.publish(own_uplink, raw(own_uplink, "hsi", 10**15 + i, chunk=chunk), qos=1)
    lidar_t.publish(up, wire[-1], qos=1)

    got = agg.recv(20)
    assert got is not None and got.header.sender == "lidar", f"lidar's message was evicted; rejected: {dict(agg.stats.rejected)}"
    assert np.array_equal(got.arrays["x"], values)


def test_forged_sender_names_on_one_uplink_leave_no_state():
    f = DedupFilter()
    for i in range(5000):
        m = Message(topics.uplink(JOB, "hsi"), Header(job=JOB, round=1, step=1, sender=f"forged{i}", seq=2**62, content_type="features"), b"x")
        with pytest.raises(EnvelopeError) as err:
            f.inbound(m)
        assert err.value.reason == "wrong_topic"
    assert f.high_water_marks() == {}


def test_forged_sender_names_cannot_grow_the_filter_without_bound():
    """``none`` mode has no ACL: every name can have its own uplink. Memory must still be bounded."""
    f = DedupFilter()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for s in range(1000):
            up = topics.uplink(JOB, f"forged{s}")
            for q in range(100):
                f.inbound(Message(up, Header(job=JOB, round=1, step=1, sender=f"forged{s}", seq=q, content_type="features"), b"x"))
        grown = sum(st.size_diff for st in tracemalloc.take_snapshot().compare_to(before, "filename"))
    finally:
        tracemalloc.stop()
    assert f.remembered <= f.max_entries
    assert grown < 24 * 1024 * 1024, f"the duplicate filter grew by {grown / 2**20:.0f} MiB"
