"""How a FedDiff MQTT connection is set up: its client id, its socket options, paho's log and
the reading of MQTT reason codes.
"""

from __future__ import annotations

import logging
import socket
from typing import Optional

_paho_log = logging.getLogger("feddiff.transport.paho")


def session_client_id(requested: str, username: Optional[str]) -> str:
    """The client id the broker will give this connection: the username when there is one.

    Why: provisioned brokers bind the session to the identity (``use_username_as_clientid``;
    otherwise anyone with a password could take over a predictable client id and wipe that
    party's session). Presenting the username ourselves keeps our logs and the persistent
    session's name the same as the broker's; without a username the requested id stands."""
    return username or requested


def no_delay(client, userdata, sock) -> None:
    """Disable Nagle's algorithm on the broker connection. A federated step is a chain of small
    request/reply messages: with Nagle on either end, each one waits for the peer's delayed
    ACK (40 ms on Linux), which turns a sub-millisecond round trip into tens of milliseconds. The broker
    needs the same (``set_tcp_nodelay true``, written into every config we generate)."""
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):  # not a TCP socket (a unix socket or a websocket wrapper)
        pass


def on_paho_log(client, userdata, level, buf: str) -> None:
    """paho's own log, at DEBUG: it reports at ERROR routine states we already handle (e.g.
    'Client is not connected' while reconnecting). Exceptions caught in our callbacks stay ERROR."""
    _paho_log.log(logging.ERROR if buf.startswith("Caught exception") else logging.DEBUG, "%s", buf)


def code_text(code: object) -> str:
    value = getattr(code, "value", code)
    return f"{code} (0x{value:02x})" if isinstance(value, int) else str(code)


def is_failure(code: object) -> bool:
    if hasattr(code, "is_failure"):
        return bool(code.is_failure)
    return isinstance(code, int) and code >= 0x80
