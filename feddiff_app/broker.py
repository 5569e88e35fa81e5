"""Starting a broker on a free loopback port, for tests, fault injection and the demo.

Mosquitto when it is installed (the product's broker); otherwise amqtt, a pure-Python broker
from PyPI run in a child process, so ``feddiff demo`` works where nothing was installed by hand.
Both come back as a ``BrokerProcess`` with the same interface: ``port``, ``pid``, ``name``,
``stop()``, ``kill()`` (SIGKILL, for chaos tests) and ``restart()`` on the same port.

Why a child process and not an in-process broker: a test must be able to SIGKILL the broker
exactly as a crash would, and a broker must not share the GIL with the code under test.
"""

from __future__ import annotations

import atexit
import importlib.util
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import weakref
from pathlib import Path
from typing import Callable, Optional

from feddiff.errors import FedDiffError

log = logging.getLogger("feddiff.transport")

HOST = "127.0.0.1"
_LIVE: "weakref.WeakSet[BrokerProcess]" = weakref.WeakSet()


def free_port() -> int:
    """A loopback TCP port that was free a moment ago (the broker binding it may still race)."""
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def mosquitto_binary() -> Optional[str]:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


def amqtt_available() -> bool:
    return importlib.util.find_spec("amqtt") is not None


class BrokerStartError(FedDiffError):
    """The broker process exited or never opened its port."""


def _port_open(port: int) -> bool:
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
        if _port_open(self.port):  # else we would mistake the other listener for our broker
            raise BrokerStartError(f"cannot start {self.name}: something already listens on {self.host}:{self.port}")
        with open(self.log, "ab") as fh:
            self.proc = subprocess.Popen(self.argv, stdout=fh, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True)
        deadline = time.monotonic() + self.start_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise BrokerStartError(f"{self.name} exited with {self.proc.returncode} at start on port {self.port}: {self.log_tail(300)}")
            if _port_open(self.port):
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
        while _port_open(self.port) and time.monotonic() < deadline:
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


def _with_free_port(port: Optional[int], launch: Callable[[int], BrokerProcess]) -> BrokerProcess:
    """``launch(port)``; when we picked the port ourselves and lost the race for it, pick again."""
    if port is not None:
        return launch(port)
    for attempt in range(3):
        try:
            return launch(free_port())
        except BrokerStartError:
            if attempt == 2:
                raise
    raise AssertionError("unreachable")


def start_mosquitto(
    port: Optional[int] = None,
    conf_extra: str = "",
    workdir: Optional[Path] = None,
    listener: Optional[str] = None,
    persistence: bool = False,
) -> BrokerProcess:
    """Mosquitto on 127.0.0.1:<port or a free one>, config written to ``workdir/mosquitto.conf``.

    Anonymous clients are allowed unless ``conf_extra`` sets allow_anonymous itself. With
    ``persistence`` the broker saves sessions and queued QoS-1 messages to ``workdir`` every
    second (``BrokerProcess.save()`` forces a save), so even a SIGKILLed broker comes back
    knowing its clients' sessions and subscriptions."""
    binary = mosquitto_binary()
    if binary is None:
        raise FedDiffError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    workdir = Path(workdir or Path.cwd())
    workdir.mkdir(parents=True, exist_ok=True)

    def launch(p: int) -> BrokerProcess:
        lines = [listener or f"listener {p} {HOST}"]
        if "allow_anonymous" not in conf_extra:
            lines.append("allow_anonymous true")
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/", "autosave_interval 1"]
        else:
            lines.append("persistence false")
        lines += ["max_queued_messages 100000", "message_size_limit 0", "set_tcp_nodelay true"]  # see transport.mqtt._no_delay
        if os.geteuid() == 0 and "user " not in conf_extra:
            lines.append("user root")  # as root Mosquitto would drop to 'mosquitto' and lose the workdir
        conf = workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n" + conf_extra + "\n")
        db = workdir / "mosquitto.db" if persistence else None
        return BrokerProcess("mosquitto", [binary, "-c", str(conf)], p, workdir, persistence_file=db)

    return _with_free_port(port, launch)


def start_mosquitto_from_conf(conf_path: Path, workdir: Path, port: Optional[int] = None) -> BrokerProcess:
    """Run a provisioned mosquitto.conf (TLS, passwd, ACL) on a free loopback port: a copy of the
    file with its listener line moved to 127.0.0.1:<port>."""
    binary = mosquitto_binary()
    if binary is None:
        raise FedDiffError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    source = Path(conf_path).read_text().splitlines()

    def launch(p: int) -> BrokerProcess:
        lines = [f"listener {p} {HOST}" if ln.startswith("listener ") else ln for ln in source]
        if os.geteuid() == 0:
            lines.insert(0, "user root")  # as root Mosquitto would drop to 'mosquitto' and lose the 0600 files
        conf = workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n")
        return BrokerProcess("mosquitto", [binary, "-c", str(conf)], p, workdir, tls=True)

    return _with_free_port(port, launch)


def start_embedded_broker(
    port: Optional[int] = None,
    workdir: Optional[Path] = None,
    subscribe_acl: Optional[dict[str, list[str]]] = None,
) -> BrokerProcess:
    """amqtt (pure Python, MQTT 3.1.1) in a child process; anonymous, no persistence.

    ``subscribe_acl`` (username -> allowed topic filters; "anonymous" for anonymous clients)
    makes amqtt answer other subscriptions with a SUBACK failure code, which Mosquitto's
    acl_file never does for MQTT 3.1.1 (it grants, then withholds the messages)."""
    if not amqtt_available():
        raise FedDiffError("no MQTT broker available: install mosquitto, or `pip install amqtt` for the embedded broker")
    workdir = Path(workdir or Path.cwd())
    workdir.mkdir(parents=True, exist_ok=True)

    def launch(p: int) -> BrokerProcess:
        conf = workdir / "amqtt.yaml"
        conf.write_text(
            "listeners:\n"
            "  default:\n"
            "    type: tcp\n"
            f"    bind: {HOST}:{p}\n"
            "    max_connections: 200\n"
            "plugins:\n"
            "  amqtt.plugins.authentication.AnonymousAuthPlugin:\n"
            "    allow_anonymous: true\n"
            + _acl_yaml(subscribe_acl)
        )
        return BrokerProcess("amqtt", [sys.executable, "-m", "amqtt.scripts.broker_script", "-c", str(conf)], p, workdir)

    return _with_free_port(port, launch)


def _acl_yaml(subscribe_acl: Optional[dict[str, list[str]]]) -> str:
    if subscribe_acl is None:
        return ""
    # amqtt 0.12 reads the subscribe ACL from the (deprecated) "acl" key of this plugin
    out = "  amqtt.plugins.topic_checking.TopicAccessControlListPlugin:\n    acl:\n"
    for user, allowed in subscribe_acl.items():
        out += f"      {json.dumps(user)}: {json.dumps(list(allowed))}\n"
    return out


def start_best_broker(workdir: Optional[Path] = None) -> BrokerProcess:
    """Mosquitto if installed, else the embedded broker."""
    return start_mosquitto(workdir=workdir) if mosquitto_binary() else start_embedded_broker(workdir=workdir)
