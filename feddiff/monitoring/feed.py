"""From a party's observer events to its ``JobMonitor``, and the server a role starts from config.

Why a translating observer: the node loop and the aggregator's rounds only ``emit`` named events
(``feddiff.runtime.observe``); what a metric means (a byte delta, a heartbeat, a station's row)
is decided here, once, for every role. Channel byte counts arrive as running totals, so only the
growth since the last event is recorded. A received delta is credited to the station whose
message arrives with it (the aggregator reports ``bytes`` and then ``station_seen`` for each
message it takes), so the dashboard's per-station bytes are the station's real traffic.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Optional

from feddiff.monitoring.recorder import JobMonitor
from feddiff.monitoring.server import MonitorServer, serve_monitoring
from feddiff.protocol import jobs
from feddiff.runtime.observe import Observers

log = logging.getLogger("feddiff.monitoring")

# A live station is heard from at least every few seconds (requests in a round, an idle hello
# every ``feddiff.runtime.node.IDLE_HELLO_S`` between them); silence past this floor is not noise.
MIN_STATION_TIMEOUT_S = 15.0
# A loop turns at least once a second while it waits; longer silences are work in a handler.
MIN_LOOP_TIMEOUT_S = 120.0


def loop_timeout_s(cfg) -> float:
    """How long a loop may stay inside one handler before it counts as hung: at least the budget
    the aggregator gives a station to pretrain when it joins (the longest single handler), so a
    health probe never restarts a station in the middle of its pretraining."""
    rt = float(cfg.federation.round_timeout_s)
    return max(MIN_LOOP_TIMEOUT_S, 2 * rt, rt + 30 + 0.5 * cfg.train.pretrain_steps)


class MonitorFeed:
    """An observer that records a party's events in its ``JobMonitor``. ``peer`` names the party
    a station's traffic goes to (its bytes are recorded against it); the aggregator passes None:
    its received bytes are credited to the sending station, and what it sends is counted per
    party where it is sent (``aggregator.daemon.MonitoredLink``)."""

    def __init__(self, monitor: JobMonitor, peer: Optional[str] = None) -> None:
        self.monitor, self.peer = monitor, peer
        self._sent = self._received = 0
        self._unassigned_in = 0

    def on_event(self, event: str, fields: dict[str, Any]) -> None:
        m = self.monitor
        m.heartbeat()
        if event == "bytes":
            self._bytes(int(fields.get("sent", 0)), int(fields.get("received", 0)))
        elif event == "station_seen":
            party = str(fields["party"])
            m.station_seen(party, "online")
            if self._unassigned_in:
                m.bytes(party, "in", self._unassigned_in)
                self._unassigned_in = 0
        elif event == "message_rejected":
            m.rejected(str(fields.get("reason", "unknown")), fields.get("party") if self.peer is None else None)
        elif event == "handler_failed":
            m.rejected("handler_failed")
        elif event == "round_started":
            m.round_started(int(fields["round"]))
        elif event == "round_committed":
            m.round_committed(int(fields["round"]), fields.get("seconds"), fields.get("loss"), train_acc=fields.get("train_acc"))
        elif event == "round_failed":
            for party in fields.get("parties") or []:
                if fields.get("reason") in ("timeout", "restarted"):
                    m.station_state(str(party), "lost" if fields["reason"] == "timeout" else "restarted")
        elif event == "validation":
            m.evaluated(fields["oa"])
        elif event == "loop" and fields.get("rejected"):
            m.rejections_seen(fields["rejected"])
        elif event == "received" and self.peer is not None:
            m.station_seen(self.peer)
            if fields.get("kind") == jobs.JOB:
                m.phase("training")
                m.round_started(int(fields.get("round", 0)))
            elif fields.get("kind") == jobs.DONE:
                m.phase("finished")

    def _bytes(self, sent: int, received: int) -> None:
        d_out, d_in = sent - self._sent, received - self._received
        self._sent, self._received = max(sent, self._sent), max(received, self._received)
        if d_out > 0 and self.peer is not None:  # the aggregator counts what it sends per party itself
            self.monitor.bytes(self.peer, "out", d_out)
        if d_in > 0:
            if self.peer is not None:
                self.monitor.bytes(self.peer, "in", d_in)
            else:
                self._unassigned_in += d_in


@dataclass
class RoleMonitoring:
    """What a role holds while it runs: the recorder, the observers it passes to its loop, and
    the HTTP server (None when ``federation.http_port`` is 0)."""

    monitor: JobMonitor
    observers: Observers
    server: Optional[MonitorServer]

    def close(self) -> None:
        if self.server is not None:
            self.server.close()


def start_role_monitoring(cfg, role: str, peer: Optional[str] = None, dashboard: bool = False,
                          observers: Optional[Observers] = None) -> RoleMonitoring:
    """The recorder, its feed subscribed to ``observers`` and the server on the configured port.
    ``role`` is ``aggregator`` or a station's name; health is the loop beating and, for the
    aggregator, every station heard from within its timeout."""
    fed = cfg.federation
    monitor = JobMonitor(fed.job, role, fed.security, rounds_planned=cfg.train.epochs)
    observers = observers or Observers()
    observers.subscribe(MonitorFeed(monitor, peer))
    station_timeout = max(float(fed.round_timeout_s), MIN_STATION_TIMEOUT_S) if dashboard else None
    health = monitor.health_check(loop_timeout_s(cfg), station_timeout)
    server = serve_monitoring(fed, monitor, health, dashboard=dashboard)
    if server is not None:
        log.info("%s: metrics at %smetrics, health at %shealthz", role, server.url, server.url)
    return RoleMonitoring(monitor, observers, server)
