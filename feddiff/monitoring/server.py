"""The HTTP side of monitoring: ``/metrics``, ``/healthz`` and (for the aggregator) the dashboard.

Why the standard library's threaded HTTP server in a daemon thread: a scrape or a browser must
never wait on the training loop, nor keep the process alive when the loop ends, and nothing
here needs more than GET. Everything is read-only: any other method gets 405, so the page can
be exposed on a host interface without giving anyone a control.
"""

from __future__ import annotations

import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable, Optional, Union
from urllib.parse import urlsplit

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from feddiff.errors import FedDiffError
from feddiff.monitoring.recorder import JobMonitor

log = logging.getLogger("feddiff.monitoring")

HealthCheck = Callable[[], Union[bool, tuple[bool, str]]]


def evaluate(health: HealthCheck) -> tuple[bool, str]:
    """(healthy, one-line reason) from the role's callable; a callable that raises is unhealthy
    (the loop it inspects is in trouble) and never takes the server down."""
    try:
        res = health()
    except Exception as exc:  # noqa: BLE001 - any failure of the check means "not healthy"
        return False, f"health check failed: {type(exc).__name__}: {' '.join(str(exc).split())}"
    if isinstance(res, tuple):
        ok, why = bool(res[0]), str(res[1]) if len(res) > 1 else ""
    else:
        ok, why = bool(res), ""
    return ok, why or ("ok" if ok else "unhealthy")


class _Handler(BaseHTTPRequestHandler):
    server: "_Server"
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        path = urlsplit(self.path).path
        srv = self.server
        try:
            if path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(srv.monitor.registry))
            elif path == "/healthz":
                ok, why = evaluate(srv.health)
                self._send(200 if ok else 503, "text/plain; charset=utf-8", (why + "\n").encode())
            elif srv.dashboard and path in ("/", "/index.html"):
                from feddiff.monitoring.dashboard import PAGE

                self._send(200, "text/html; charset=utf-8", PAGE.encode())
            elif srv.dashboard and path == "/api/state":
                state = srv.monitor.snapshot()
                state["healthy"], state["health"] = evaluate(srv.health)
                self._send(200, "application/json", json.dumps(state).encode())
            elif srv.dashboard and path == "/map.png":
                png = srv.monitor.latest_map()
                if png is None:
                    self._send(404, "text/plain; charset=utf-8", b"no classification map yet\n")
                else:
                    self._send(200, "image/png", png)
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")
        except (BrokenPipeError, ConnectionResetError):
            pass  # the client went away mid-answer

    def _refuse(self) -> None:
        self._send(405, "text/plain; charset=utf-8", b"read-only: GET only\n", allow=True)

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse  # noqa: N815

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(405, "text/plain; charset=utf-8", b"", allow=True)

    def _send(self, code: int, ctype: str, body: bytes, allow: bool = False) -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        if allow:
            self.send_header("Allow", "GET")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:
        log.debug("http %s - %s", self.address_string(), fmt % args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, addr: tuple[str, int], monitor: JobMonitor, health: HealthCheck, dashboard: bool):
        self.monitor, self.health, self.dashboard = monitor, health, dashboard
        super().__init__(addr, _Handler)


class MonitorServer:
    """``/metrics`` and ``/healthz`` (and the dashboard when ``dashboard``) on ``host:port``
    (port 0: a free one, for tests), served from a daemon thread until ``close()``."""

    def __init__(self, monitor: JobMonitor, host: str = "127.0.0.1", port: int = 0, health: Optional[HealthCheck] = None, dashboard: bool = False):
        try:
            self._srv = _Server((host, int(port)), monitor, health or (lambda: True), dashboard)
        except OSError as exc:
            raise FedDiffError(f"monitoring: cannot serve on {host}:{port} ({exc.strerror or exc}); set federation.http_port to a free port or 0 (off)") from None
        self.host, self.port = host, int(self._srv.server_address[1])
        self._thread = threading.Thread(target=self._srv.serve_forever, kwargs={"poll_interval": 0.2}, name="monitoring-http", daemon=True)
        self._thread.start()
        log.info("monitoring on %s", self.url)

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def close(self) -> None:
        self._srv.shutdown()
        self._srv.server_close()
        self._thread.join(timeout=5)

    def __enter__(self) -> "MonitorServer":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def serve_monitoring(federation, monitor: JobMonitor, health: Optional[HealthCheck] = None, dashboard: bool = False) -> Optional[MonitorServer]:
    """The server a role starts from its config: ``federation.http_port`` 0 means off (None)."""
    port = int(getattr(federation, "http_port", 0) or 0)
    if port == 0:
        return None
    return MonitorServer(monitor, getattr(federation, "http_host", "127.0.0.1"), port, health, dashboard)
