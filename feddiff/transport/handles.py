"""What the MQTT transport hands back: a publish in flight, and the refusal of a subscription.

Kept apart from the connection itself so that the waiting rules of a QoS 1 publish (across
reconnects, never from paho's own thread) read in one place.
"""

from __future__ import annotations

import threading
import time
from typing import Any, Optional

import paho.mqtt.client as mqtt

from feddiff.errors import FedDiffError

class SubscribeRefused(FedDiffError):
    """The broker answered a SUBSCRIBE with a failure code (typically an ACL denial)."""

    def __init__(self, topic: str, code: str, where: str) -> None:
        self.topic, self.code = topic, code
        super().__init__(f"MQTT broker at {where} refused the subscription to {topic!r}: {code}")


class PublishHandle:
    """One QoS>0 publish in flight; ``wait`` blocks until the broker acknowledged it. ``transport``
    is the ``MqttTransport`` that published it (its timeout, connection state and paho thread)."""

    def __init__(self, transport: Any, info: mqtt.MQTTMessageInfo, topic: str, qos: int) -> None:
        self._transport, self._info, self.topic, self.qos = transport, info, topic, qos

    @property
    def mid(self) -> int:
        return self._info.mid

    @property
    def done(self) -> bool:
        return self.qos == 0 or self._info.is_published()

    def wait(self, timeout: Optional[float] = None) -> None:
        """Until PUBACK; raises FedDiffError after ``timeout`` (default: the transport's
        ``publish_timeout``) or if the transport is closed first. Disconnections in between
        are waited out: paho re-sends the message after reconnecting."""
        t = self._transport
        if self.qos == 0:
            return
        if threading.current_thread() is getattr(t.client, "_thread", None):
            raise RuntimeError("publish(wait=True) from the MQTT network thread would deadlock; use wait=False")
        limit = t.publish_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while not self._info.is_published():
            if t._closing:
                raise FedDiffError(f"MQTT transport to {t.where} closed before {self.topic!r} was acknowledged")
            left = deadline - time.monotonic()
            if left <= 0:
                state = "connected" if t.connected else "disconnected"
                raise FedDiffError(f"publish to {self.topic!r} not acknowledged within {limit:g}s by the MQTT broker at {t.where} ({state})")
            self._info.wait_for_publish(min(left, 0.5))
