"""What a running role reports about its job: one recorder feeds both the Prometheus metrics
and the dashboard's state, so the two can never disagree.

Why a recorder object rather than module-level metrics: every process (aggregator, each edge
agent, a test) gets its own ``CollectorRegistry``, so two roles in one process (the demo, the
tests) never share or double-register a metric. Every method is cheap, thread-safe and never
raises on a value it cannot use: it logs and carries on, because monitoring must not kill the
loop it watches.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from dataclasses import asdict, dataclass, field
from typing import Callable, Mapping, Optional

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, ProcessCollector

log = logging.getLogger("feddiff.monitoring")

DIRECTIONS = ("in", "out")
# Round latency in seconds: a synthetic demo round takes well under a second, a real scene
# over a slow uplink minutes.
ROUND_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800)
HISTORY_MAX = 10_000  # rounds kept for the dashboard's curves


@dataclass
class StationState:
    """One row of the dashboard's stations table."""

    last_seen: Optional[float] = None  # epoch seconds
    bytes_in: int = 0
    bytes_out: int = 0
    rejects: int = 0
    state: str = "unknown"


@dataclass
class RoundRecord:
    round: int
    seconds: float
    loss: Optional[float]
    oa: Optional[float]
    train_acc: Optional[float] = None
    at: float = field(default_factory=time.time)


def _finite(v: Optional[float]) -> Optional[float]:
    """``None`` for a value that is missing or not a finite number (a diverged loss is shown as
    a gap, not as a point that flattens the whole chart)."""
    try:
        f = float(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None


class JobMonitor:
    """The events a role records; ``registry`` for ``/metrics``, ``snapshot()`` for the dashboard.

    ``role`` names the process (``aggregator``, ``edge:<station>``); ``security`` is the job's
    security mode as the dashboard shows it (``none``, ``signed``, ``he``)."""

    def __init__(self, job: str, role: str, security: str = "none", rounds_planned: int = 0):
        self._lock = threading.Lock()
        self.job, self.role, self.security = job, role, security
        self.started = time.time()
        self._phase = "starting"
        self._round = 0
        self._rounds_planned = int(rounds_planned)
        self._round_started: dict[int, float] = {}
        self._history: list[RoundRecord] = []
        self._stations: dict[str, StationState] = {}
        self._rejects: dict[str, int] = {}
        self._map_png: Optional[bytes] = None
        self._map_version = 0
        self._final_oa: Optional[float] = None
        self._beat = time.monotonic()
        self._reject_totals: dict[str, int] = {}

        reg = self.registry = CollectorRegistry()
        ProcessCollector(registry=reg)  # process_resident_memory_bytes, cpu seconds, open fds
        Info("feddiff_job", "The job this process serves", registry=reg).info({"job": job, "role": role, "security": security})
        self._m_phase = Gauge("feddiff_job_phase", "1 for the job's current phase, 0 for phases it has left", ["phase"], registry=reg)
        self._m_round = Gauge("feddiff_round", "The round in progress or last committed", registry=reg)
        self._m_planned = Gauge("feddiff_rounds_planned", "Rounds the job plans in total (0: not known)", registry=reg)
        self._m_committed = Counter("feddiff_rounds_committed", "Rounds committed", registry=reg)
        self._m_latency = Histogram("feddiff_round_latency_seconds", "Seconds from a round's start to its commit", buckets=ROUND_BUCKETS, registry=reg)
        self._m_loss = Gauge("feddiff_training_loss", "Training loss of the last committed round", registry=reg)
        self._m_oa = Gauge("feddiff_validation_oa", "Held-out overall accuracy (0..1): of the last round that reported one, or of the final evaluation", registry=reg)
        self._m_bytes = Counter("feddiff_bytes", "Message bytes by party and direction", ["party", "direction"], registry=reg)
        self._m_rejected = Counter("feddiff_rejected_messages", "Messages refused, by reason", ["reason"], registry=reg)
        self._m_age = Gauge("feddiff_station_last_seen_age_seconds", "Seconds since a station was last heard from", ["station"], registry=reg)
        self._m_planned.set(self._rounds_planned)
        self._m_phase.labels(self._phase).set(1)

    def phase(self, name: str) -> None:
        """The job's phase (``starting``, ``waiting``, ``pretraining``, ``training``, ``paused``,
        ``done``, ``failed`` or a role's own word)."""
        name = str(name)
        with self._lock:
            if name == self._phase:
                return
            self._m_phase.labels(self._phase).set(0)
            self._phase = name
            self._m_phase.labels(name).set(1)

    def rounds_planned(self, n: int) -> None:
        with self._lock:
            self._rounds_planned = max(0, int(n))
            self._m_planned.set(self._rounds_planned)

    def round_started(self, r: int) -> None:
        with self._lock:
            self._round = int(r)
            self._round_started[int(r)] = time.monotonic()
            self._m_round.set(int(r))

    def round_committed(self, r: int, seconds: Optional[float] = None, loss: Optional[float] = None, oa: Optional[float] = None, train_acc: Optional[float] = None) -> None:
        """Round ``r`` is committed; ``seconds`` defaults to the time since ``round_started(r)``;
        ``oa`` is a held-out validation OA where the role computes one per round, ``train_acc``
        the accuracy on the round's own training batches (drawn apart on the dashboard)."""
        r = int(r)
        with self._lock:
            began = self._round_started.pop(r, None)
            secs = _finite(seconds)
            if secs is None:
                secs = time.monotonic() - began if began is not None else 0.0
            loss, oa = _finite(loss), _finite(oa)
            self._round = max(self._round, r)
            self._m_round.set(self._round)
            self._m_committed.inc()
            self._m_latency.observe(max(0.0, secs))
            if loss is not None:
                self._m_loss.set(loss)
            if oa is not None:
                self._m_oa.set(oa)
            self._history.append(RoundRecord(r, secs, loss, oa, _finite(train_acc)))
            del self._history[:-HISTORY_MAX]

    def evaluated(self, oa: float) -> None:
        """The job's held-out OA once it is evaluated (after the last round)."""
        oa = _finite(oa)
        if oa is None:
            return
        with self._lock:
            self._final_oa = oa
            self._m_oa.set(oa)

    def station_seen(self, name: str, state: Optional[str] = None) -> None:
        """A message (or presence) from station ``name``; ``state`` as the role knows it
        (``online``, ``training``, ``gone`` ...)."""
        now = time.time()
        with self._lock:
            st = self._station(name)
            st.last_seen = now
            if state is not None:
                st.state = str(state)
            elif st.state in ("unknown", "gone"):
                st.state = "online"

    def station_state(self, name: str, state: str) -> None:
        """A change the role decided without hearing from the station (a timeout: ``gone``)."""
        with self._lock:
            self._station(name).state = str(state)

    def bytes(self, party: str, direction: str, n: int) -> None:
        """``n`` bytes of messages to (``out``) or from (``in``) ``party`` (a station or the broker)."""
        if direction not in DIRECTIONS or not isinstance(n, int) or n < 0:
            log.warning("monitoring: ignored bytes(%r, %r, %r): direction must be in/out and n a count", party, direction, n)
            return
        with self._lock:
            self._m_bytes.labels(party, direction).inc(n)
            if party in self._stations:
                st = self._stations[party]
                if direction == "in":
                    st.bytes_in += n
                else:
                    st.bytes_out += n

    def rejected(self, reason: str, party: Optional[str] = None) -> None:
        """A message refused (bad signature, replay, malformed, unknown sender ...)."""
        with self._lock:
            self._m_rejected.labels(str(reason)).inc()
            self._rejects[str(reason)] = self._rejects.get(str(reason), 0) + 1
            if party is not None:
                self._station(party).rejects += 1

    def rejections_seen(self, totals: Mapping[str, int]) -> None:
        """The channel's running totals by reason (``channel.stats.rejected``): only what is new
        since the last call is counted, so a role may pass its totals as often as it likes."""
        for reason, total in dict(totals).items():
            with self._lock:
                new = int(total) - self._reject_totals.get(str(reason), 0)
                self._reject_totals[str(reason)] = int(total)
            for _ in range(max(0, new)):
                self.rejected(str(reason))

    def heartbeat(self) -> None:
        """The role's loop is alive (call it every turn of the loop, at least every few seconds)."""
        self._beat = time.monotonic()

    def health_check(self, loop_timeout_s: float, station_timeout_s: Optional[float] = None) -> Callable[[], tuple[bool, str]]:
        """The usual ``/healthz`` decision: unhealthy while the job is paused or failed, when the
        loop has not beaten for ``loop_timeout_s``, or when a station has been marked ``gone`` or
        silent past ``station_timeout_s`` (a station never heard from is waited for, not gone)."""

        def check() -> tuple[bool, str]:
            idle = time.monotonic() - self._beat
            if idle > loop_timeout_s:
                return False, f"loop silent for {idle:.0f} s (limit {loop_timeout_s:g} s)"
            with self._lock:
                phase, stations = self._phase, dict(self._stations)
            if phase in ("paused", "failed"):
                return False, f"job {phase}"
            now = time.time()
            for name, st in sorted(stations.items()):
                if st.state == "gone":
                    return False, f"station {name} gone"
                if station_timeout_s is not None and st.last_seen is not None and now - st.last_seen > station_timeout_s:
                    return False, f"station {name} silent for {now - st.last_seen:.0f} s (timeout {station_timeout_s:g} s)"
            return True, "ok"

        return check

    def map_png(self, png: bytes) -> None:
        """The latest classification map as PNG bytes, served at ``/map.png``."""
        if not isinstance(png, (bytes, bytearray)) or not bytes(png[:8]) == b"\x89PNG\r\n\x1a\n":
            log.warning("monitoring: ignored a classification map that is not a PNG")
            return
        with self._lock:
            self._map_png = bytes(png)
            self._map_version += 1

    def latest_map(self) -> Optional[bytes]:
        with self._lock:
            return self._map_png

    def snapshot(self) -> dict:
        """Everything the dashboard shows, as JSON-ready values."""
        now = time.time()
        with self._lock:
            stations = {n: {**asdict(s), "age_s": None if s.last_seen is None else now - s.last_seen} for n, s in sorted(self._stations.items())}
            return {
                "job": self.job, "role": self.role, "security": self.security, "phase": self._phase,
                "round": self._round, "rounds_planned": self._rounds_planned, "rounds_committed": len(self._history),
                "uptime_s": now - self.started, "now": now,
                "history": [asdict(h) for h in self._history], "final_oa": self._final_oa,
                "stations": stations, "rejects": dict(self._rejects),
                "map_version": self._map_version,
            }

    def _station(self, name: str) -> StationState:
        """The station's row, created on first mention (call with the lock held)."""
        name = str(name)
        if name not in self._stations:
            self._stations[name] = StationState()
            self._m_age.labels(name).set_function(lambda n=name: self._age(n))
        return self._stations[name]

    def _age(self, name: str) -> float:
        seen = self._stations[name].last_seen
        return math.nan if seen is None else time.time() - seen
