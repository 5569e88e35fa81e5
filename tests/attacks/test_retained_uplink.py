"""Issue #18 item 8: a retained message on an uplink is delivered to every fresh subscriber, so
a restarted aggregator in ``none`` mode would process the same uplink again. Channels never
publish retained; the party's channel drops retained messages on its message topics."""

from __future__ import annotations

import numpy as np
import pytest

from feddiff.config import BrokerSpec, Config, FederationSpec
from feddiff.protocol import topics
from feddiff.protocol.endpoint import open_channel

pytestmark = pytest.mark.security

JOB = "retained"


def _cfg(broker) -> Config:
    return Config(federation=FederationSpec(job=JOB, broker=BrokerSpec(host=broker.host, port=broker.port)))


def test_a_retained_uplink_is_not_processed_by_a_restarted_aggregator(mosquitto, transport_factory):
    cfg = _cfg(mosquitto)
    up = topics.uplink(JOB, "hsi")
    station = open_channel(cfg, "hsi", [], presence=False)
    try:
        # The station's genuine message, then the same bytes again as a retained publish (what a
        # buggy or hostile client holding the station's credentials can do).
        spy = transport_factory(mosquitto, "spy")
        spy.subscribe(up)
        station.send(up, "features", {"x": np.arange(4, dtype=np.float32)}, round=0, step=0)
        got = spy.get(10)
        assert got is not None
        attacker = transport_factory(mosquitto, "attacker")
        attacker.publish(up, got[1], qos=1, retain=True)

        aggregator = open_channel(cfg, "aggregator", [up], presence=False)  # a fresh (restarted) subscriber
        try:
            assert aggregator.recv(3.0) is None
            assert aggregator.transport.dropped_retained == 1
        finally:
            aggregator.close()
    finally:
        station.close()


def test_presence_stays_retained(mosquitto, transport_factory):
    cfg = _cfg(mosquitto)
    station = open_channel(cfg, "hsi", [], presence=True)
    try:
        watcher = transport_factory(mosquitto, "watcher")
        watcher.subscribe(topics.presence(JOB, "hsi"))
        got = watcher.get(10)
        assert got is not None and b"online" in got[1]
    finally:
        station.close()
