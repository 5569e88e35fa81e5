"""MQTT transport on paho-mqtt 2.x (``CallbackAPIVersion.VERSION2``), MQTT 3.1.1.

Why these choices:
  * Persistent session (clean_session=False) + QoS 1: during a short outage the broker keeps what
    arrives for us, paho keeps (and later re-sends) what we publish, and we re-subscribe on every
    reconnect anyway (a broker restarted without persistence has forgotten our subscriptions).
  * ``publish`` waits for the PUBACK, across reconnects if need be: a caller that got no
    exception knows the broker holds the message.
  * Incoming messages go to a bounded queue (``get``) or a callback. When the queue is full the
    network thread waits (paho withholds the PUBACK, so the broker stops sending beyond its
    in-flight window) and only after ``full_timeout_s`` drops the message, loudly.
  * Refusals are explicit: a refused CONNACK fails ``connect`` and a SUBACK failure code raises
    ``SubscribeRefused``. (With MQTT 3.1.1 a publish denied by an ACL is still PUBACKed by
    Mosquitto, so publish denials are invisible at this layer; the receiver's seal check is what
    catches a party writing where it must not.)

Use 3.1.1 rather than 5 because the embedded fallback broker (amqtt) speaks 3.1.1 only.
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
from feddiff.transport.handles import PublishHandle, SubscribeRefused
from feddiff.transport.socket_setup import code_text as _code_text, is_failure as _is_failure, no_delay as _no_delay, on_paho_log as _on_paho_log, session_client_id

log = logging.getLogger("feddiff.transport")

MessageCallback = Callable[[str, bytes], None]


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
        max_queue: int = 1000,
        max_inflight: int = 20,
        publish_timeout: float = 120.0,
        clean_session: bool = False,
        reconnect_min_s: float = 0.25,
        reconnect_max_s: float = 8.0,
        full_timeout_s: float = 10.0,
        drop_retained: Optional[Callable[[str], bool]] = None,
    ) -> None:
        client_id = session_client_id(client_id, username)
        self.drop_retained = drop_retained  # topics whose retained messages are stale: dropped, counted
        self.dropped_retained = 0
        self.client_id, self.host, self.port, self.keepalive = client_id, host, port, keepalive
        self.publish_timeout = publish_timeout
        self.full_timeout_s = full_timeout_s
        self.client = mqtt.Client(
            mqtt.CallbackAPIVersion.VERSION2, client_id=client_id, clean_session=clean_session, protocol=mqtt.MQTTv311
        )
        self.client.suppress_exceptions = True  # an exception must never kill the network thread
        self.client.on_log = _on_paho_log
        if username:
            self.client.username_pw_set(username, password)
        if tls_ca:
            self.client.tls_set(ca_certs=tls_ca, certfile=tls_cert, keyfile=tls_key, tls_version=ssl.PROTOCOL_TLS_CLIENT)
        if will:
            self.client.will_set(will[0], will[1], qos=1, retain=True)
        self.client.max_inflight_messages_set(max_inflight)
        self.client.max_queued_messages_set(0)  # publish() itself bounds what is outstanding
        self.client.reconnect_delay_set(min_delay=reconnect_min_s, max_delay=reconnect_max_s)  # type: ignore[arg-type]
        self.client.on_socket_open = _no_delay
        self.client.on_connect = self._on_connect
        self.client.on_disconnect = self._on_disconnect
        self.client.on_message = self._on_message
        self.client.on_subscribe = self._on_subscribe
        self.queue: queue.Queue[tuple[str, bytes]] = queue.Queue(maxsize=max_queue)
        self._subs: dict[str, int] = {}
        self._lock = threading.Lock()
        self._connected = threading.Event()
        self._suback_cv = threading.Condition()
        self._waiting: dict[int, Optional[list]] = {}  # mid -> reason codes, for subscribe() callers
        self._resubscribing: dict[int, str] = {}  # mid -> topic, for re-subscriptions after reconnect
        self._callback: Optional[MessageCallback] = None
        self._refused: Optional[str] = None
        self._closing = False
        self._started = False
        self.connects = 0
        self.reconnects = 0
        self.dropped = 0
        self.refused_subscriptions: dict[str, str] = {}

    @property
    def where(self) -> str:
        return f"{self.host}:{self.port}"

    # -- paho callbacks (network thread) -------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._refused = str(reason_code)
            log.error("MQTT broker at %s refused the connection of %s: %s", self.where, self.client_id, reason_code)
            return
        self.connects += 1
        if self.connects > 1:
            self.reconnects += 1
            log.info("reconnected to MQTT broker at %s (session present: %s)", self.where, flags.session_present)
        with self._lock:
            subs = list(self._subs.items())
        with self._suback_cv:
            self._resubscribing.clear()  # SUBACKs of an earlier connection will never come
            for topic, qos in subs:
                rc, mid = client.subscribe(topic, qos)
                if rc == mqtt.MQTT_ERR_SUCCESS:
                    self._resubscribing[mid] = topic
        self._connected.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self._connected.is_set()
        self._connected.clear()
        if was and not self._closing:
            log.warning("lost MQTT broker at %s (%s); reconnecting", self.where, reason_code)

    def _on_message(self, client, userdata, msg: mqtt.MQTTMessage) -> None:
        topic, payload = msg.topic, bytes(msg.payload)
        if msg.retain and self.drop_retained is not None and self.drop_retained(topic):
            self.dropped_retained += 1
            log.warning("dropped a retained message on %s", topic, extra={"event": "rejected", "reason": "retained", "topic": topic})
            return
        callback = self._callback
        if callback is not None:
            try:
                callback(topic, payload)
            except Exception:  # noqa: BLE001 - keep the network thread alive
                log.exception("message callback failed on %s", topic)
            return
        deadline = time.monotonic() + self.full_timeout_s
        while not self._closing:
            try:
                self.queue.put((topic, payload), timeout=min(0.25, max(deadline - time.monotonic(), 0.001)))
                return
            except queue.Full:
                if time.monotonic() >= deadline:
                    break
        if not self._closing:
            self.dropped += 1
            log.error("incoming queue full for %.0fs (%d messages); dropped a message on %s",
                      self.full_timeout_s, self.queue.maxsize, topic, extra={"event": "queue_full", "topic": topic})

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        with self._suback_cv:
            if mid in self._waiting:
                self._waiting[mid] = list(reason_codes)
                self._suback_cv.notify_all()
                return
            topic = self._resubscribing.pop(mid, None)
        if topic is not None and any(_is_failure(c) for c in reason_codes):
            self.refused_subscriptions[topic] = _code_text(reason_codes[0])
            log.error("MQTT broker at %s refused the re-subscription to %s: %s", self.where, topic, reason_codes[0])

    # -- API ------------------------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        return self._connected.is_set()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def connect(self, timeout: float = 30.0) -> None:
        """Connect within ``timeout`` seconds (retrying while the broker is not up yet), then keep
        the connection up in the background. Raises a one-line FedDiffError naming host:port."""
        deadline = time.monotonic() + timeout
        self.client.connect_timeout = max(0.5, min(5.0, timeout))
        delay = 0.1
        while True:
            try:
                self.client.connect(self.host, self.port, self.keepalive)
                break
            except ssl.SSLError as exc:
                raise FedDiffError(f"TLS handshake with MQTT broker at {self.where} failed: {exc}") from None
            except (OSError, ValueError) as exc:
                if time.monotonic() + delay >= deadline:
                    raise FedDiffError(f"cannot reach MQTT broker at {self.where}: {exc}") from None
                time.sleep(delay)
                delay = min(delay * 2, 2.0)
        self.client.loop_start()
        self._started = True
        while not self._connected.wait(0.05):
            if self._refused:
                refused = self._refused
                self.close()
                raise FedDiffError(f"MQTT broker at {self.where} refused the connection: {refused}")
            if time.monotonic() > deadline:
                self.close()
                raise FedDiffError(f"no CONNACK from MQTT broker at {self.where} within {timeout:g}s")

    def subscribe(self, topic: str, qos: int = 1, timeout: float = 10.0) -> int:
        """Subscribe, wait for the SUBACK and return the granted QoS. Raises SubscribeRefused when
        the broker refuses (ACL) and FedDiffError when it does not answer within ``timeout``.
        Accepted subscriptions are renewed after every reconnect."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._subs[topic] = qos
        try:
            while True:
                if not self._connected.wait(max(deadline - time.monotonic(), 0.0)):
                    raise FedDiffError(f"not connected to MQTT broker at {self.where}; cannot subscribe to {topic!r}")
                with self._suback_cv:
                    rc, mid = self.client.subscribe(topic, qos)
                    if rc == mqtt.MQTT_ERR_SUCCESS:
                        self._waiting[mid] = None
                        break
                if rc != mqtt.MQTT_ERR_NO_CONN:
                    raise FedDiffError(f"cannot subscribe to {topic!r} at {self.where}: {mqtt.error_string(rc)}")
                time.sleep(0.05)
            with self._suback_cv:
                self._suback_cv.wait_for(lambda: self._waiting.get(mid) is not None, max(deadline - time.monotonic(), 0.0))
                codes = self._waiting.pop(mid, None)
            if codes is None:
                raise FedDiffError(f"no SUBACK for {topic!r} from MQTT broker at {self.where} within {timeout:g}s")
            failed = [c for c in codes if _is_failure(c)]
            if failed:
                raise SubscribeRefused(topic, _code_text(failed[0]), self.where)
            self.refused_subscriptions.pop(topic, None)
            return int(getattr(codes[0], "value", codes[0]))
        except BaseException:
            with self._lock:
                self._subs.pop(topic, None)
            raise

    def unsubscribe(self, topic: str) -> None:
        with self._lock:
            self._subs.pop(topic, None)
        self.client.unsubscribe(topic)

    def publish(
        self,
        topic: str,
        payload: bytes,
        qos: int = 1,
        retain: bool = False,
        wait: bool = True,
        timeout: Optional[float] = None,
    ) -> PublishHandle:
        """Queue ``payload`` and, with ``wait``, block until the broker acknowledged it (QoS>0).

        While disconnected the message waits in paho's queue and goes out after reconnecting; it
        is never silently dropped. Raises FedDiffError on timeout or when the transport is closed."""
        if self._closing:
            raise FedDiffError(f"MQTT transport to {self.where} is closed")
        info = self.client.publish(topic, payload, qos=qos, retain=retain)
        if info.rc == mqtt.MQTT_ERR_NO_CONN and qos > 0:
            info.rc = mqtt.MQTT_ERR_SUCCESS  # queued in paho; it is re-sent once we are reconnected
        elif info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
            raise FedDiffError(f"cannot publish to {topic!r} at {self.where}: {mqtt.error_string(info.rc)}")
        handle = PublishHandle(self, info, topic, qos)
        if wait:
            handle.wait(timeout)
        return handle

    def get(self, timeout: float) -> Optional[tuple[str, bytes]]:
        """The next (topic, payload) received, or None after ``timeout`` seconds."""
        try:
            return self.queue.get(timeout=max(timeout, 0.0))
        except queue.Empty:
            return None

    def set_on_message(self, callback: Optional[MessageCallback]) -> None:
        """Deliver messages to ``callback(topic, payload)`` on the network thread instead of the
        queue (None switches back). The callback must be quick and must not publish with wait."""
        self._callback = callback

    def close(self) -> None:
        """Disconnect cleanly (no last will) and stop the network thread; idempotent."""
        if self._closing:
            return
        self._closing = True
        try:
            self.client.disconnect()
        except Exception:  # noqa: BLE001 - closing must not fail
            pass
        if self._started:
            self.client.loop_stop()
        self._connected.clear()

    def __enter__(self) -> "MqttTransport":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
