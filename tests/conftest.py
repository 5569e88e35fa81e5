"""Shared fixtures: real brokers on free loopback ports, connected transports, the shared data.

Markers (declared in pyproject.toml, excluded from the default run): ``chaos`` for fault
injection with real processes (``pytest -m chaos``), ``slow`` for long runs.

A test that needs a broker takes ``mosquitto`` (a fresh Mosquitto per test, skipped with a
reason when the binary is missing) or ``broker_factory`` (start brokers with options, e.g.
``broker_factory(persistence=True)``), and ``transport_factory`` for connected clients that
are closed after the test.
"""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def _need_mosquitto() -> None:
    from feddiff_app.broker import mosquitto_binary

    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (scripts/test.sh installs the Debian package)")


@pytest.fixture
def mosquitto(tmp_path):
    """A Mosquitto (anonymous, no persistence) on a free loopback port, stopped after the test."""
    from feddiff_app.broker import start_mosquitto

    _need_mosquitto()
    broker = start_mosquitto(workdir=tmp_path / "broker")
    yield broker
    broker.kill()


@pytest.fixture
def broker_factory(tmp_path):
    """``broker_factory(kind="mosquitto"|"embedded", **options)`` -> BrokerProcess; all are
    killed after the test."""
    from feddiff_app.broker import amqtt_available, start_embedded_broker, start_mosquitto

    started = []
    counter = itertools.count()

    def start(kind: str = "mosquitto", **options):
        workdir = tmp_path / f"broker{next(counter)}"
        if kind == "mosquitto":
            _need_mosquitto()
            broker = start_mosquitto(workdir=workdir, **options)
        else:
            if not amqtt_available():
                pytest.skip("amqtt is not installed (pip install amqtt)")
            broker = start_embedded_broker(workdir=workdir, **options)
        started.append(broker)
        return broker

    yield start
    for broker in started:
        broker.kill()


@pytest.fixture
def transport_factory():
    """``transport_factory(broker, client_id, **options)`` -> a connected MqttTransport, closed
    after the test."""
    from feddiff.transport.mqtt import MqttTransport

    made = []

    def make(broker, client_id: str, connect: bool = True, **options):
        options.setdefault("reconnect_min_s", 0.1)
        options.setdefault("reconnect_max_s", 1.0)
        options.setdefault("publish_timeout", 20.0)
        t = MqttTransport(client_id, broker.host, broker.port, **options)
        made.append(t)
        if connect:
            t.connect(10)
        return t

    yield make
    for t in made:
        t.close()


def needs_shared(*parts: str):
    path = SHARED.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"benchmark data not found at {path} (../shared/data beside the project)")
