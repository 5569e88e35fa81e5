"""Starting a broker on a free loopback port, for tests, fault injection and the demo.

Mosquitto when it is installed (the product's broker); otherwise amqtt, a pure-Python broker
from PyPI run in a child process, so ``feddiff demo`` works where nothing was installed by hand.
Both come back as a ``BrokerProcess`` with the same interface: ``port``, ``pid``, ``name``,
``stop()``, ``kill()`` (SIGKILL, for chaos tests) and ``restart()`` on the same port.

The process itself (start, stop, kill, restart) is ``feddiff_app.broker_process``.
"""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import shutil
import socket
import sys
from pathlib import Path
from typing import Callable, Optional

from feddiff.errors import FedDiffError
from feddiff_app.broker_process import HOST, BrokerProcess, BrokerStartError

log = logging.getLogger("feddiff.transport")



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
    workdir = Path(workdir or Path.cwd()).resolve()  # Mosquitto runs in workdir: a relative path would not name its files
    workdir.mkdir(parents=True, exist_ok=True)

    def launch(p: int) -> BrokerProcess:
        lines = [listener or f"listener {p} {HOST}"]
        if "allow_anonymous" not in conf_extra:
            lines.append("allow_anonymous true")
        if persistence:
            lines += ["persistence true", f"persistence_location {workdir}/", "autosave_interval 1"]
        else:
            lines.append("persistence false")
        lines += ["max_queued_messages 100000", "message_size_limit 0", "set_tcp_nodelay true"]  # see transport.socket_setup.no_delay
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
    workdir = Path(workdir or Path.cwd()).resolve()  # Mosquitto runs in workdir: a relative path would not name its files
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
