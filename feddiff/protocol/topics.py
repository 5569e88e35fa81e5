"""Topic scheme: everything of a job lives under feddiff/<job>/.

  up/<client>        client -> aggregator (one writer per topic, enforced by the broker ACL)
  down/<client>      aggregator -> client
  ctl                aggregator -> everyone (control broadcast)
  presence/<client>  online flag, retained; the last will sets it offline
"""

from __future__ import annotations

import re

_ID = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")


def check_id(value: str, what: str = "id") -> str:
    if value != "+" and not _ID.match(value or ""):
        raise ValueError(f"invalid {what} {value!r}: use letters, digits, '_', '-', '.' (no '/', '+', '#')")
    return value


def uplink(job: str, client: str) -> str:
    return f"feddiff/{check_id(job, 'job')}/up/{check_id(client, 'client')}"


def downlink(job: str, client: str) -> str:
    return f"feddiff/{check_id(job, 'job')}/down/{check_id(client, 'client')}"


def broadcast(job: str) -> str:
    return f"feddiff/{check_id(job, 'job')}/ctl"


def presence(job: str, client: str) -> str:
    return f"feddiff/{check_id(job, 'job')}/presence/{check_id(client, 'client')}"


def parse_topic(topic: str) -> tuple[str, str, str | None]:
    """(job, kind, client or None); raises ValueError for a topic outside the scheme."""
    parts = topic.split("/")
    if len(parts) == 3 and parts[0] == "feddiff" and parts[2] == "ctl":
        return check_id(parts[1], "job"), "ctl", None
    if len(parts) == 4 and parts[0] == "feddiff" and parts[2] in ("up", "down", "presence"):
        return check_id(parts[1], "job"), parts[2], check_id(parts[3], "client")
    raise ValueError(f"topic {topic!r} is not a feddiff topic")
