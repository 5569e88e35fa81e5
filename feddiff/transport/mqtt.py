"""MQTT transport on paho-mqtt 2.x: one small interface over paho's callbacks.

Persistent sessions (clean_session=False) and QoS 1 mean a short broker outage loses nothing:
the broker keeps what arrived for us, paho re-sends what we published, and we re-subscribe on
every reconnect. Incoming messages land in a bounded queue (``get``) or go to a callback.
"""

from __future__ import annotations

import logging
import queue
import ssl
import threading
import time
from typing import Callable, Optional

import paho.mqtt.client as mqtt

from feddiff.errors import FedDiffError

log = logging.getLogger("feddiff.transport")


class MqttTransport:
    def __init__(
        self,
        client_id: str,
        host: str,
        port: int,
        *,
        username: Optional[str] = None,
        password: Optional[str] = None,
        tls_ca: Optional[str] = None,
        tls_cert: Optional[str] = None,
        tls_key: Optional[str] = None,
        keepalive: int = 30,
        will: Optional[tuple[str, bytes]] = None,
        max_queue: int = 10000,
        max_inflight: int = 20,
        publish_timeout: float = 120.0,
    ) -> None:
        self.host, self.port, self.keepalive = host, port, keepalive
        self.publish_timeout = publish_timeout
        self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=False)
        if username:
            self.client.username_pw_set(username, password)
        if tls_ca:
            self.client.tls_set(ca_certs=tls_ca, certfile=tls_cert, keyfile=tls_key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)
        self.client.reconnect_delay_set(min_delay=1, max_delay=8)
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._subs: dict[str, int] = {}
        self._connected = threading.Event()
        self._suback: dict[int, list] = {}
        self._suback_cv = threading.Condition()
        self._callback: Optional[Callable[[str, bytes], None]] = None
        self._refused: Optional[str] = None
        self.reconnects = 0
        self._closing = False

    # -- paho callbacks (network thread) -------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            log.warning("broker %s:%d refused connection: %s", self.host, self.port, reason_code)
            return
        if self._connected.is_set() is False and self.reconnects:
            log.info("reconnected to %s:%d", self.host, self.port)
        for topic, qos in self._subs.items():
            client.subscribe(topic, qos)
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        if self._connected.is_set() and not self._closing:
            self.reconnects += 1
            log.warning("disconnected from %s:%d (%s); reconnecting", self.host, self.port, reason_code)
        self._connected.clear()

    def _on_message(self, client, userdata, msg) -> None:
        if self._callback is not None:
            self._callback(msg.topic, msg.payload)
            return
        try:
            self.queue.put(( msg.topic, bytes(msg.payload)), timeout=30)
        except queue.Full:
            log.error("incoming queue full; dropping a message on %s", msg.topic)

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._suback_cv:
            self._suback[mid] = list(reason_codes)
            self._suback_cv.notify_all()

    # -- API ------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def connect(self, timeout: float = 30.0) -> None:
        try:
            self.client.connect(self.host, self.port, self.keepalive)
        except (OSError, ssl.SSLError) as exc:
            raise FedDiffError(f"cannot reach MQTT broker at {self.host}:{self.port}: {exc}") from None
        self.client.loop_start()
        deadline = time.monotonic() + timeout
        while not self._connected.wait(0.1):
            if self._refused:
                self.close()
                raise FedDiffError(f"MQTT broker at {self.host}:{self.port} refused the connection: {self._refused}")
            if time.monotonic() > deadline:
                self.close()
                raise FedDiffError(f"no answer from MQTT broker at {self.host}:{self.port} within {timeout:.0f}s")

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 10.0) -> None:
        """Subscribe and wait for the SUBACK; raises when the broker refuses (ACL)."""
        self._subs[topic] = qos
        rc, mid = self.client.subscribe(topic, qos)
        if rc != mqtt.MQTT_ERR_SUCCESS:
            return  # not connected: _on_connect subscribes
        with self._suback_cv:
            self._suback_cv.wait_for(lambda: mid in self._suback, timeout)
            codes = self._suback.pop(mid, None)
        if codes is None:
            raise FedDiffError(f"no SUBACK from {self.host}:{self.port} for {topic}")
        if any(getattr(c, "is_failure", False) or (isinstance(c, int) and c >= 0x80) for c in codes):
            del self._subs[topic]
            raise FedDiffError(f"broker refused subscription to {topic}")

    def publish(self, topic: str, payload: bytes, qos: int = 1, retain: bool = False, wait: bool = True) -> None:
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if not wait or qos == 0:
            return
        deadline = time.monotonic() + self.publish_timeout
        while not info.is_published():
            if time.monotonic() > deadline:
                raise FedDiffError(f"publish to {topic} not acknowledged within {self.publish_timeout:.0f}s (broker {self.host}:{self.port})")
            time.sleep(0.005 if self.connected else 0.1)

    def get(self, timeout: float) -> Optional[tuple[str, bytes]]:
        try:
            return self.queue.get(timeout=timeout)
        except queue.Empty:
            return None

    def set_on_message(self, callback: Optional[Callable[[str, bytes], None]]) -> None:
        self._callback = callback

    def close(self) -> None:
        self._closing = True
        try:
            self.client.disconnect()
        finally:
            self.client.loop_stop()
