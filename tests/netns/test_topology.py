"""The namespaces the link-cut test stands on: a station reaches the central site, a cut link
does not, a restored one does again, and nothing is left behind afterwards.

Seconds, not minutes: in the default run where namespaces are permitted (marker ``netns``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.netns.topology import CENTRAL_IP, Topology, ip, netns_refusal

pytestmark = pytest.mark.netns

PORT = 7001
SERVER = "import socket, time\ns = socket.socket(); s.bind(('0.0.0.0', %d)); s.listen(8)\nwhile True: s.accept()[0].close()" % PORT


@pytest.fixture(scope="module", autouse=True)
def can_run():
    why = netns_refusal()
    if why:
        pytest.skip(f"network namespaces unavailable: {why}")


def reaches(topo: Topology, station: str) -> bool:
    probe = f"import socket; socket.create_connection(({CENTRAL_IP!r}, {PORT}), timeout=1).close()"
    return subprocess.run(["ip", "netns", "exec", topo.ns[station], sys.executable, "-c", probe], capture_output=True, timeout=30).returncode == 0


def live_namespaces() -> set[str]:
    return {line.split()[0] for line in ip("netns", "list").stdout.splitlines() if line.strip()}


def test_station_reaches_central_until_cut_and_again_after_restore(tmp_path):
    topo = Topology(["a", "b"], tmp_path)
    try:
        topo.spawn(topo.central, [sys.executable, "-c", SERVER], "server.log")
        topo.wait_port(topo.ns["a"], CENTRAL_IP, PORT)
        assert reaches(topo, "b")
        topo.cut("a")
        assert not reaches(topo, "a") and reaches(topo, "b")  # only a's link is down
        topo.restore("a")
        topo.wait_port(topo.ns["a"], CENTRAL_IP, PORT, timeout=10)
    finally:
        topo.close()


def test_close_removes_every_namespace_and_process(tmp_path):
    topo = Topology(["a"], tmp_path)
    made = list(topo.made)
    server = topo.spawn(topo.central, [sys.executable, "-c", SERVER], "server.log")
    assert set(made) <= live_namespaces()
    topo.close()
    assert server.poll() is not None
    assert not set(made) & live_namespaces()


def test_a_failed_build_leaves_nothing(tmp_path, monkeypatch):
    """The station's namespace cannot be made: the central one, already made, is removed."""
    added: list[str] = []

    def add_then_fail(self: Topology, ns: str) -> None:
        if self.made:
            raise RuntimeError("second namespace refused")
        ip("netns", "add", ns)
        self.made.append(ns)
        added.append(ns)

    monkeypatch.setattr(Topology, "_add", add_then_fail)
    with pytest.raises(RuntimeError, match="second namespace"):
        Topology(["a"], tmp_path)
    assert added and not set(added) & live_namespaces()
