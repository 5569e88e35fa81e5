"""MqttTransport against real brokers: connect errors, QoS 1, refusals, the bounded queue."""

from __future__ import annotations

import threading
import time

import pytest

from feddiff.errors import FedDiffError
from feddiff_app.broker import free_port
from feddiff.transport.mqtt import MqttTransport, SubscribeRefused


def test_unreachable_broker_is_one_line_naming_host_and_port():
    port = free_port()
    t = MqttTransport("nobody", "127.0.0.1", port)
    started = time.monotonic()
    with pytest.raises(FedDiffError) as err:
        t.connect(timeout=0.6)
    assert f"127.0.0.1:{port}" in str(err.value) and "\n" not in str(err.value)
    assert time.monotonic() - started < 5


def test_connect_waits_for_a_broker_that_comes_up_late(tmp_path):
    from feddiff_app.broker import mosquitto_binary, start_mosquitto

    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed")
    port = free_port()
    t = MqttTransport("early", "127.0.0.1", port)
    threading.Timer(0.5, lambda: brokers.append(start_mosquitto(port=port, workdir=tmp_path))).start()
    brokers: list = []
    try:
        t.connect(timeout=10)
        assert t.connected
    finally:
        t.close()
        time.sleep(0.1)
        for b in brokers:
            b.kill()


def test_refused_connection_says_so(broker_factory):
    b = broker_factory(conf_extra="allow_anonymous false")
    t = MqttTransport("anon", b.host, b.port)
    with pytest.raises(FedDiffError) as err:
        t.connect(timeout=5)
    assert "refused" in str(err.value) and f"{b.host}:{b.port}" in str(err.value)
    assert not t.connected


def test_qos1_round_trip_never_retained(mosquitto, transport_factory):
    rx = transport_factory(mosquitto, "rx")
    assert rx.subscribe("feddiff/j/up/+", qos=1) == 1
    tx = transport_factory(mosquitto, "tx")
    handle = tx.publish("feddiff/j/up/a", b"\x00payload\xff")
    assert handle.done
    assert rx.get(5) == ("feddiff/j/up/a", b"\x00payload\xff")
    late = transport_factory(mosquitto, "late")
    late.subscribe("feddiff/j/up/+")
    assert late.get(0.3) is None  # not retained


def test_publish_without_wait_returns_a_handle_to_wait_on(mosquitto, transport_factory):
    tx = transport_factory(mosquitto, "tx")
    handles = [tx.publish("t/x", b"%d" % i, wait=False) for i in range(50)]
    for h in handles:
        h.wait(5)
    assert all(h.done for h in handles)


def test_subscription_refused_by_the_broker_raises(broker_factory, transport_factory):
    b = broker_factory("embedded", subscribe_acl={"anonymous": ["feddiff/j/down/me", "feddiff/j/ctl"]})
    t = transport_factory(b, "me")
    assert t.subscribe("feddiff/j/down/me") == 1
    with pytest.raises(SubscribeRefused) as err:
        t.subscribe("feddiff/j/down/someone_else")
    assert err.value.topic == "feddiff/j/down/someone_else" and "0x80" in str(err.value)
    assert isinstance(err.value, FedDiffError)
    assert t.subscribe("feddiff/j/ctl") == 1  # the connection survives the refusal


def test_messages_can_go_to_a_callback_and_a_failing_callback_does_not_stop_delivery(mosquitto, transport_factory):
    rx = transport_factory(mosquitto, "rx")
    got: list[bytes] = []
    done = threading.Event()

    def on_message(topic: str, payload: bytes) -> None:
        got.append(payload)
        if payload == b"boom":
            raise RuntimeError("callback bug")
        if payload == b"after":
            done.set()

    rx.set_on_message(on_message)
    rx.subscribe("t/#")
    tx = transport_factory(mosquitto, "tx")
    tx.publish("t/a", b"boom")
    tx.publish("t/a", b"after")
    assert done.wait(5) and got == [b"boom", b"after"]
    assert rx.get(0.1) is None


def test_full_queue_waits_then_drops_newest_and_counts(mosquitto, transport_factory):
    rx = transport_factory(mosquitto, "rx", max_queue=3, full_timeout_s=0.1)
    rx.subscribe("q/#")
    tx = transport_factory(mosquitto, "tx")
    for i in range(8):
        tx.publish("q/x", b"%d" % i)
    deadline = time.monotonic() + 5
    while rx.dropped < 5 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert rx.dropped == 5 and rx.queue.qsize() == 3
    assert [rx.get(1)[1] for _ in range(3)] == [b"0", b"1", b"2"]


def test_slow_consumer_gets_everything_in_order_through_a_tiny_queue(mosquitto, transport_factory):
    rx = transport_factory(mosquitto, "rx", max_queue=2, full_timeout_s=5)
    rx.subscribe("q/#")
    tx = transport_factory(mosquitto, "tx")
    sender = threading.Thread(target=lambda: [tx.publish("q/x", b"%d" % i) for i in range(30)])
    sender.start()
    got = []
    while len(got) < 30:
        item = rx.get(5)
        assert item is not None
        got.append(item[1])
        time.sleep(0.005)
    sender.join(5)
    assert got == [b"%d" % i for i in range(30)] and rx.dropped == 0


def test_persistent_session_keeps_messages_for_an_offline_subscriber(mosquitto, transport_factory):
    first = transport_factory(mosquitto, "station")
    first.subscribe("feddiff/j/down/station")
    first.close()  # clean DISCONNECT: the session (subscription + queue) stays on the broker
    tx = transport_factory(mosquitto, "agg")
    for i in range(3):
        tx.publish("feddiff/j/down/station", b"%d" % i)
    again = transport_factory(mosquitto, "station")
    assert [again.get(5) for _ in range(3)] == [("feddiff/j/down/station", b"%d" % i) for i in range(3)]


def test_closed_transport_refuses_to_publish(mosquitto, transport_factory):
    t = transport_factory(mosquitto, "t")
    t.close()
    t.close()  # idempotent
    assert not t.connected
    with pytest.raises(FedDiffError):
        t.publish("t/x", b"late")


def test_connections_disable_nagle_on_both_ends(mosquitto, transport_factory):
    """A federated step is small requests and replies; with Nagle's algorithm on the client or
    the broker, each waits for a delayed ACK (tens of milliseconds per round trip instead of
    well under one). Both ends must set TCP_NODELAY."""
    import socket

    t = transport_factory(mosquitto, "fast")
    assert t.client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    assert "set_tcp_nodelay true" in (mosquitto.workdir / "mosquitto.conf").read_text()
