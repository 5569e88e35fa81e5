"""Network namespaces for a central site and its base stations, and processes run inside them.

Layout (all of it inside namespaces this module creates; the host's own network is untouched):

    <prefix>c   the central site: Linux bridge br0 with CENTRAL_IP/24
    <prefix>sN  station N: lo up, veth ``up0`` with 10.213.0.(10+N)/24, its peer ``sN`` enslaved
                to br0 in the central namespace

Cutting a station's link is ``ip link set up0 down`` in the station's namespace: the route to
the central site disappears, open TCP connections hang until keepalive gives up, exactly what a
dropped radio link does to the station. ``Topology.close`` kills every process started here and
deletes every namespace (deleting a namespace deletes its veth ends), pass or fail.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Optional

CENTRAL_IP = "10.213.0.1"
UPLINK = "up0"


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def netns_refusal() -> Optional[str]:
    """Why namespaces cannot be used here, or None when they can (creates and deletes one)."""
    name = f"fdprobe{os.getpid()}"
    try:
        r = ip("netns", "add", name, check=False)
    except (FileNotFoundError, subprocess.TimeoutExpired) as e:
        return f"`ip` is not usable here: {e}"
    if r.returncode != 0:
        return f"`ip netns add` is not permitted here: {r.stderr.strip() or r.returncode}"
    ip("netns", "del", name, check=False)
    return None


class Topology:
    """One central namespace and ``stations`` station namespaces, linked through br0."""

    def __init__(self, stations: list[str], root: Path) -> None:
        self.prefix = f"fd{os.getpid() % 100000}x{time.time_ns() % 10000}"
        self.central = f"{self.prefix}c"
        self.ns = {s: f"{self.prefix}s{i}" for i, s in enumerate(stations)}
        self.addr = {s: f"10.213.0.{10 + i}" for i, s in enumerate(stations)}
        self.root = Path(root)
        self.procs: list[subprocess.Popen] = []
        self.made: list[str] = []
        try:
            self._build()
        except BaseException:
            self.close()
            raise

    def _build(self) -> None:
        c = self.central
        self._add(c)
        ip("-n", c, "link", "set", "lo", "up")
        ip("-n", c, "link", "add", "br0", "type", "bridge")
        ip("-n", c, "addr", "add", f"{CENTRAL_IP}/24", "dev", "br0")
        ip("-n", c, "link", "set", "br0", "up")
        for i, (station, ns) in enumerate(self.ns.items()):
            self._add(ns)
            ip("-n", ns, "link", "set", "lo", "up")
            peer = f"s{i}"
            ip("link", "add", peer, "netns", c, "type", "veth", "peer", "name", UPLINK, "netns", ns)
            ip("-n", c, "link", "set", peer, "master", "br0", "up")
            ip("-n", ns, "addr", "add", f"{self.addr[station]}/24", "dev", UPLINK)
            ip("-n", ns, "link", "set", UPLINK, "up")

    def _add(self, ns: str) -> None:
        ip("netns", "add", ns)
        self.made.append(ns)

    # -- the link ----------------------------------------------------------------------------
    def cut(self, station: str) -> None:
        ip("-n", self.ns[station], "link", "set", UPLINK, "down")

    def restore(self, station: str) -> None:
        ip("-n", self.ns[station], "link", "set", UPLINK, "up")

    # -- processes ---------------------------------------------------------------------------
    def spawn(self, ns: str, argv: list[str], log_name: str, env: Optional[dict] = None) -> subprocess.Popen:
        """``argv`` inside namespace ``ns`` (``ip netns exec`` execs it: the pid is the process's)."""
        with open(self.root / log_name, "ab") as log:
            p = subprocess.Popen(["ip", "netns", "exec", ns, *argv], stdout=log, stderr=subprocess.STDOUT,
                                 start_new_session=True, env=env)
        self.procs.append(p)
        return p

    def wait_port(self, ns: str, host: str, port: int, timeout: float = 30) -> None:
        """Until something accepts TCP on host:port as seen from inside ``ns``."""
        probe = f"import socket; socket.create_connection(({host!r}, {port}), timeout=1).close()"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            r = subprocess.run(["ip", "netns", "exec", ns, "python3", "-c", probe], capture_output=True, timeout=30)
            if r.returncode == 0:
                return
            time.sleep(0.2)
        raise AssertionError(f"nothing listens on {host}:{port} in namespace {ns} after {timeout:g}s")

    def close(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                try:
                    os.killpg(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait()
        for ns in reversed(self.made):
            ip("netns", "del", ns, check=False)
        self.made.clear()
