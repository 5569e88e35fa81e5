"""Monitoring of a running role: Prometheus ``/metrics``, ``/healthz`` and the aggregator's live
dashboard. Core package: the roles call it, it imports none of them."""

from feddiff.monitoring.recorder import JobMonitor
from feddiff.monitoring.server import MonitorServer, serve_monitoring

__all__ = ["JobMonitor", "MonitorServer", "serve_monitoring"]
