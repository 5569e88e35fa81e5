"""Topic scheme: everything of a job lives under feddiff/<job>/.

  up/<client>        client -> aggregator (one writer per topic, enforced by the broker ACL)
  down/<client>      aggregator -> client
  ctl                aggregator -> everyone (control broadcast)
  presence/<client>  online flag, retained; the client's last will sets it offline

Why ids are restricted to [A-Za-z0-9_.-]{1,64}: a job or client name becomes a topic level and
an ACL pattern, so '/', '+', '#' (and anything that needs escaping in a config) would let one
party's name address another party's topics. The single-level wildcard ``ANY`` ("+") is accepted
in the client position only, for subscriptions such as ``uplink(job, ANY)``.
"""

from __future__ import annotations

import re
from typing import Optional

ROOT = "feddiff"
ANY = "+"
KINDS = ("up", "down", "ctl", "presence")
_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def is_valid_id(value: object) -> bool:
    return isinstance(value, str) and bool(_ID.match(value))


def check_id(value: str, what: str = "id") -> str:
    """``value`` if it is a valid job/client id, else ValueError naming what was wrong."""
    if not is_valid_id(value):
        raise ValueError(f"invalid {what} {value!r}: use 1-64 letters, digits, '_', '-', '.' (no '/', '+', '#', spaces)")
    return value


def _client(value: str) -> str:
    return value if value == ANY else check_id(value, "client")


def uplink(job: str, client: str) -> str:
    return f"{ROOT}/{check_id(job, 'job')}/up/{_client(client)}"


def downlink(job: str, client: str) -> str:
    return f"{ROOT}/{check_id(job, 'job')}/down/{_client(client)}"


def broadcast(job: str) -> str:
    return f"{ROOT}/{check_id(job, 'job')}/ctl"


def presence(job: str, client: str) -> str:
    return f"{ROOT}/{check_id(job, 'job')}/presence/{_client(client)}"


def parse_topic(topic: str) -> tuple[str, str, Optional[str]]:
    """(job, kind, client or None) of a concrete topic; ValueError for anything outside the
    scheme, wildcards included."""
    parts = topic.split("/") if isinstance(topic, str) else []
    if len(parts) == 3 and parts[0] == ROOT and parts[2] == "ctl" and is_valid_id(parts[1]):
        return parts[1], "ctl", None
    if len(parts) == 4 and parts[0] == ROOT and parts[2] in ("up", "down", "presence") and is_valid_id(parts[1]) and is_valid_id(parts[3]):
        return parts[1], parts[2], parts[3]
    raise ValueError(f"topic {topic!r} is not a feddiff topic")


def carries_messages(topic: str) -> bool:
    """True for the up, down and ctl topics: channels never publish retained, so a retained
    message there is stale by nature (a fresh or restarted subscriber would process it again)."""
    try:
        return parse_topic(topic)[1] in ("up", "down", "ctl")
    except ValueError:
        return False
