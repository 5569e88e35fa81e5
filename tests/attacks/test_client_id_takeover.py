"""Issue #18 item 4: a station must not take over another party's MQTT session.

MQTT lets a new connection with an existing client id kick the old one and, with a clean
session, wipe its queued QoS 1 messages. Client ids are predictable (``feddiff-<job>-<party>``),
so the broker must bind the client id to the authenticated username."""

from __future__ import annotations

import threading
import time

import paho.mqtt.client as mqtt
import pytest

from tests.attacks.conftest import JOB, credentials

pytestmark = [pytest.mark.security, pytest.mark.broker]


def hijack(job, broker, as_party: str, client_id: str, times: int = 3) -> list[bool]:
    """Connect ``times`` with ``as_party``'s genuine credentials but ``client_id``; returns
    whether each CONNACK accepted the connection."""
    creds = credentials(job, as_party)
    accepted = []
    for _ in range(times):
        got = threading.Event()
        ok = []
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=True, protocol=mqtt.MQTTv311,
                        reconnect_on_failure=False)
        c.tls_set(ca_certs=creds["tls_ca"], certfile=creds["tls_cert"], keyfile=creds["tls_key"])
        c.username_pw_set(creds["username"], creds["password"])
        c.on_connect = lambda cl, ud, fl, rc, pr: (ok.append(not rc.is_failure), got.set())
        c.connect(broker.host, broker.port, keepalive=10)
        c.loop_start()
        got.wait(5)
        time.sleep(0.3)
        c.disconnect()
        c.loop_stop()
        accepted.append(bool(ok and ok[0]))
    return accepted


def test_station_with_its_own_credentials_cannot_kick_the_aggregator(job, tls_broker, party_transport):
    agg = party_transport(job, "agg", client_id=f"feddiff-{JOB}-agg")
    agg.subscribe(f"feddiff/{JOB}/up/+")
    lidar = party_transport(job, "lidar")

    hijack(job, tls_broker, "hsi", client_id=f"feddiff-{JOB}-agg")
    lidar.publish(f"feddiff/{JOB}/up/lidar", b"after the attack", qos=1)

    got = agg.get(10)
    assert got == (f"feddiff/{JOB}/up/lidar", b"after the attack")
    assert agg.reconnects == 0, f"the aggregator was disconnected {agg.reconnects} time(s) by a station using its client id"
    assert agg.connected


def test_the_generated_broker_config_binds_client_ids_to_usernames(job):
    conf = (job / "broker" / "mosquitto.conf").read_text().splitlines()
    assert "use_username_as_clientid true" in conf
