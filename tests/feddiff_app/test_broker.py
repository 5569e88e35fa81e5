"""Brokers for tests and the demo: start on a free port, stop, kill, restart on the same port."""

from __future__ import annotations

import os
import socket

import pytest

from feddiff.errors import FedDiffError
from feddiff_app.broker import BrokerStartError, free_port, start_best_broker, start_mosquitto


def accepts(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def test_mosquitto_listens_on_loopback_and_stops(mosquitto):
    assert mosquitto.name == "mosquitto" and mosquitto.pid and accepts(mosquitto.port)
    conf = (mosquitto.workdir / "mosquitto.conf").read_text()
    assert f"listener {mosquitto.port} 127.0.0.1" in conf and "allow_anonymous true" in conf and "persistence false" in conf
    mosquitto.stop()
    assert not mosquitto.alive and not accepts(mosquitto.port)


def test_kill_then_restart_on_the_same_port(mosquitto):
    port, pid = mosquitto.port, mosquitto.pid
    mosquitto.kill()
    assert not accepts(port)
    mosquitto.restart()
    assert mosquitto.port == port and mosquitto.pid != pid and accepts(port)


def test_conf_extra_can_turn_off_anonymous_access(broker_factory):
    b = broker_factory(conf_extra="allow_anonymous false")
    assert "allow_anonymous true" not in (b.workdir / "mosquitto.conf").read_text()


def test_a_broker_that_cannot_start_says_why(tmp_path):
    from feddiff_app.broker import mosquitto_binary

    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    with pytest.raises(BrokerStartError) as err:
        start_mosquitto(conf_extra="no_such_option 1", workdir=tmp_path)
    assert "mosquitto exited" in str(err.value) and "\n" not in str(err.value)


def test_busy_port_is_reported(tmp_path, mosquitto):
    with pytest.raises(FedDiffError):
        start_mosquitto(port=mosquitto.port, workdir=tmp_path / "second")


def test_embedded_broker_serves_the_same_interface(broker_factory, transport_factory):
    b = broker_factory("embedded")
    assert b.name == "amqtt" and accepts(b.port)
    rx = transport_factory(b, "rx")
    rx.subscribe("feddiff/j/ctl")
    tx = transport_factory(b, "tx")
    tx.publish("feddiff/j/ctl", b"over amqtt")
    assert rx.get(5) == ("feddiff/j/ctl", b"over amqtt")
    b.kill()
    assert not accepts(b.port)


def test_best_broker_prefers_mosquitto(tmp_path):
    from feddiff_app.broker import mosquitto_binary

    b = start_best_broker(tmp_path)
    try:
        assert b.name == ("mosquitto" if mosquitto_binary() else "amqtt")
    finally:
        b.kill()


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
    assert 0 < port < 65536 and os.getpid()
