"""Starting a broker on a free loopback port, for tests and the demo.

Mosquitto when it is installed (the product's broker); otherwise amqtt, a pure-Python broker
from PyPI, so ``feddiff demo`` runs on a machine where nothing was installed by hand.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional

from feddiff.errors import FedDiffError


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def mosquitto_binary() -> Optional[str]:
    found = shutil.which("mosquitto")
    if found:
        return found
    return "/usr/sbin/mosquitto" if Path("/usr/sbin/mosquitto").exists() else None


def _wait_port(port: int, proc: subprocess.Popen, timeout: float, name: str, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FedDiffError(f"{name} exited with {proc.returncode} at start; see {log}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise FedDiffError(f"{name} did not open port {port} within {timeout:.0f}s; see {log}")


class BrokerProcess:
    """A broker in a child process; ``kill`` (SIGKILL) and ``restart`` are for fault tests."""

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path, tls: bool = False) -> None:
        self.name, self.argv, self.port, self.workdir = name, argv, port, Path(workdir)
        self.tls = tls
        self.proc: Optional[subprocess.Popen] = None
        self.log = self.workdir / f"{name}.log"
        self.start()

    def start(self) -> None:
        fh = open(self.log, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=fh, stderr=subprocess.STDOUT, cwd=self.workdir, start_new_session=True)
        _wait_port(self.port, self.proc, 20.0, self.name, self.log)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self) -> None:
        self.stop()
        self.start()


def start_mosquitto(port: Optional[int] = None, conf_extra: str = "", workdir: Optional[Path] = None, listener: Optional[str] = None) -> BrokerProcess:
    binary = mosquitto_binary()
    if binary is None:
        raise FedDiffError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    port = port or free_port()
    workdir = Path(workdir or Path.cwd())
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "mosquitto.conf"
    lines = [listener or f"listener {port} 127.0.0.1"]
    if "allow_anonymous" not in conf_extra:
        lines.append("allow_anonymous true")
    lines += ["persistence false", "max_queued_messages 100000", "message_size_limit 0"]
    if os.geteuid() == 0 and "user " not in conf_extra:
        lines.append("user root")
    conf.write_text("\n".join(lines) + "\n" + conf_extra + "\n")
    return BrokerProcess("mosquitto", [binary, "-c", str(conf)], port, workdir)


def start_mosquitto_from_conf(conf_path: Path, workdir: Path, port: Optional[int] = None) -> BrokerProcess:
    """Run a provisioned mosquitto.conf (TLS, passwd, ACL) on a free loopback port: a copy of the
    file with its listener line moved to 127.0.0.1:<port>."""
    binary = mosquitto_binary()
    if binary is None:
        raise FedDiffError("mosquitto is not installed (Debian: apt-get install mosquitto)")
    port = port or free_port()
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    lines = [f"listener {port} 127.0.0.1" if ln.startswith("listener ") else ln for ln in Path(conf_path).read_text().splitlines()]
    if os.geteuid() == 0:
        lines.insert(0, "user root")  # as root Mosquitto would drop to 'mosquitto' and lose the 0600 files
    conf = workdir / "mosquitto.conf"
    conf.write_text("\n".join(lines) + "\n")
    return BrokerProcess("mosquitto", [binary, "-c", str(conf)], port, workdir, tls=True)


def start_embedded_broker(port: Optional[int] = None, workdir: Optional[Path] = None) -> BrokerProcess:
    port = port or free_port()
    workdir = Path(workdir or Path.cwd())
    workdir.mkdir(parents=True, exist_ok=True)
    conf = workdir / "amqtt.yaml"
    conf.write_text(
        "listeners:\n  default:\n    type: tcp\n    bind: 127.0.0.1:%d\n    max_connections: 100\n"
        "plugins:\n  amqtt.plugins.authentication.AnonymousAuthPlugin:\n    allow_anonymous: true\n" % port
    )
    script = "import sys; from amqtt.scripts.broker_script import main; sys.argv=['amqtt','-c',sys.argv[1]]; main()"
    return BrokerProcess("amqtt", [sys.executable, "-c", script, str(conf)], port, workdir)


def start_best_broker(workdir: Optional[Path] = None) -> BrokerProcess:
    return start_mosquitto(workdir=workdir) if mosquitto_binary() else start_embedded_broker(workdir=workdir)
