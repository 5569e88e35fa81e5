"""A broker running as a child process: start, stop, SIGKILL and restart on the same port.

Why a child process and not an in-process broker: a test must be able to SIGKILL the broker
exactly as a crash would, and a broker must not share the GIL with the code under test. Every
live broker is killed at interpreter exit so that no test or demo leaves one behind.
"""

from __future__ import annotations

import atexit
import logging
import signal
import socket
import subprocess
import time
import weakref
from pathlib import Path
from typing import Optional

from feddiff.errors import FedDiffError

log = logging.getLogger("feddiff.transport")

HOST = "127.0.0.1"
_LIVE: "weakref.WeakSet[BrokerProcess]" = weakref.WeakSet()


class BrokerStartError(FedDiffError):
    """The broker process exited or never opened its port."""


def port_open(port: int) -> bool:
    try:
        with socket.create_connection((HOST, port), timeout=0.2):
            return True
    except OSError:
        return False


class BrokerProcess:
    """A broker in a child process of its own session (a Ctrl-C of the test run does not reach
    it; ``stop`` and an atexit hook do)."""

    def __init__(
        self,
        name: str,
        argv: list[str],
        port: int,
        workdir: Path,
        tls: bool = False,
        start_timeout: float = 20.0,
        persistence_file: Optional[Path] = None,
    ) -> None:
        self.name, self.argv, self.port, self.workdir = name, list(argv), port, Path(workdir)
        self.host = HOST
        self.tls = tls
        self.persistence_file = persistence_file
        self.start_timeout = start_timeout
        self.proc: Optional[subprocess.Popen] = None
        self.log = self.workdir / f"{name}.log"
        self.start()
        _LIVE.add(self)

    def __repr__(self) -> str:
        return f"<BrokerProcess {self.name} {self.host}:{self.port} pid={self.pid}>"

    def start(self) -> None:
        """Start the process and wait until its port accepts connections."""
        if self.alive:
            return
        if port_open(self.port):  # else we would mistake the other listener for our broker
            raise BrokerStartError(f"cannot start {self.name}: something already listens on {self.host}:{self.port}")
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(self.argv, stdout=fh, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerStartError(f"{self.name} exited with {self.proc.returncode} at start on port {self.port}: {self.log_tail(300)}")
            if port_open(self.port):
                log.debug("%s listening on %s:%d (pid %d)", self.name, self.host, self.port, self.proc.pid)
                return
            time.sleep(0.05)
        self.kill()
        raise BrokerStartError(f"{self.name} did not open port {self.port} within {self.start_timeout:g}s; see {self.log}")

    @property
    def pid(self) -> Optional[int]:
        return self.proc.pid if self.proc else None

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, n: int = 2000) -> str:
        try:
            return self.log.read_text(errors="replace")[-n:].strip().replace("\n", " | ")
        except OSError:
            return ""

    def stop(self, timeout: float = 5.0) -> None:
        """SIGTERM (a clean shutdown: Mosquitto saves its persistence file), SIGKILL if stuck."""
        if self.alive:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def save(self, timeout: float = 5.0) -> None:
        """Make Mosquitto write its persistence file now (SIGUSR1) and wait until it has.

        Why: autosave runs on a timer, so a test that SIGKILLs the broker right after a client
        subscribed would otherwise depend on luck for the session to survive."""
        if self.persistence_file is None or not self.alive:
            raise FedDiffError(f"{self.name} on port {self.port} is not running with persistence")

        def stamp() -> int:
            try:
                return self.persistence_file.stat().st_mtime_ns
            except OSError:
                return -1

        before = stamp()
        self.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + timeout
        while stamp() == before:
            if time.monotonic() > deadline:
                raise FedDiffError(f"{self.name} did not save {self.persistence_file} within {timeout:g}s")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL: a crash, nothing saved, every client connection dropped at once."""
        if self.alive:
            self.proc.kill()
            self.proc.wait()

    def restart(self, kill: bool = False) -> None:
        """Stop (or kill) and start again on the same port."""
        self.kill() if kill else self.stop()
        deadline = time.monotonic() + 5.0
        while port_open(self.port) and time.monotonic() < deadline:
            time.sleep(0.05)
        self.start()

    def __enter__(self) -> "BrokerProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


@atexit.register
def _stop_all() -> None:
    for broker in list(_LIVE):
        try:
            broker.kill()
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass
