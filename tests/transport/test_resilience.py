"""The transport across failures: a broker SIGKILLed and restarted, a party process killed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import pytest

from feddiff.protocol import topics

ROOT = Path(__file__).resolve().parents[2]


def wait_until(predicate, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return False


def test_publish_during_an_outage_is_delivered_after_the_broker_restarts(broker_factory, transport_factory):
    broker = broker_factory(persistence=True)  # how production runs it: sessions survive a crash
    rx = transport_factory(broker, "agg")
    rx.subscribe("feddiff/j/up/+")
    tx = transport_factory(broker, "edge")
    broker.save()  # the sessions are on disk, as they would be a second later anyway

    broker.kill()
    assert wait_until(lambda: not tx.connected and not rx.connected, 5)
    handle = tx.publish("feddiff/j/up/edge", b"sent while the broker was down", wait=False)
    time.sleep(0.3)
    assert not handle.done  # no broker, no PUBACK: the message waits in the client

    broker.restart()
    handle.wait(15)
    assert rx.get(10) == ("feddiff/j/up/edge", b"sent while the broker was down")
    assert tx.reconnects >= 1 and rx.reconnects >= 1


def test_blocking_publish_waits_out_the_outage(broker_factory, transport_factory):
    import threading

    broker = broker_factory(persistence=True)
    rx = transport_factory(broker, "agg")
    rx.subscribe("t/#")
    tx = transport_factory(broker, "edge")
    broker.save()
    broker.kill()
    assert wait_until(lambda: not tx.connected, 5)
    threading.Timer(0.5, broker.restart).start()
    tx.publish("t/x", b"patient", timeout=15)  # returns only once the restarted broker has it
    assert rx.get(10) == ("t/x", b"patient")


def test_subscriptions_are_renewed_when_the_broker_forgot_them(mosquitto, transport_factory):
    rx = transport_factory(mosquitto, "agg")
    rx.subscribe("feddiff/j/up/+")
    tx = transport_factory(mosquitto, "edge")
    mosquitto.kill()
    mosquitto.restart()  # no persistence: every session and subscription is gone
    assert wait_until(lambda: rx.connected and tx.connected, 10)

    def delivered() -> bool:
        tx.publish("feddiff/j/up/edge", b"ping")
        return rx.get(0.2) is not None

    assert wait_until(delivered, 10)  # rx re-subscribed by itself


def _spawn_party(broker, client: str) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, str(ROOT / "tests" / "transport" / "presence_client.py"), broker.host, str(broker.port), "j", client],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={"PYTHONPATH": str(ROOT), "PATH": "/usr/bin:/bin"},
    )
    line = proc.stdout.readline()
    if line.strip() != "ready":
        proc.kill()
        pytest.fail(f"party process did not start: {line}{proc.stdout.read()}")
    return proc


def test_last_will_marks_a_killed_party_offline(mosquitto, transport_factory):
    watcher = transport_factory(mosquitto, "watcher")
    watcher.subscribe(topics.presence("j", "+"))
    party = _spawn_party(mosquitto, "hsi")
    try:
        assert watcher.get(5) == (topics.presence("j", "hsi"), b'{"online": true}')
        party.kill()  # SIGKILL: no DISCONNECT is ever sent
        party.wait(5)
        assert watcher.get(5) == (topics.presence("j", "hsi"), b'{"online": false}')
    finally:
        party.kill()
        party.stdout.close()
    late = transport_factory(mosquitto, "late")
    late.subscribe(topics.presence("j", "hsi"))
    assert late.get(5) == (topics.presence("j", "hsi"), b'{"online": false}')  # the will is retained


def test_clean_close_does_not_fire_the_last_will(mosquitto, transport_factory):
    watcher = transport_factory(mosquitto, "watcher")
    watcher.subscribe(topics.presence("j", "+"))
    party = transport_factory(mosquitto, "party", will=(topics.presence("j", "lidar"), b'{"online": false}'))
    party.close()
    assert watcher.get(0.5) is None
