"""Regression tests for what the attacker review found holding (issue #18, "What held") where
no test existed yet: no unpickling loaders anywhere in the code, the broker ACL against
wildcard, ``$SYS`` and shared subscriptions, and TLS hostname verification."""

from __future__ import annotations

import ast
import socket
import ssl
import threading
import time
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest

from tests.attacks.conftest import JOB, credentials

pytestmark = pytest.mark.security

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ["feddiff", "crypto", "edge_client", "aggregator", "export", "feddiff_app"]


def _calls(tree: ast.AST):
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Name):
            yield node.func.value.id, node.func.attr, {k.arg: k.value for k in node.keywords}, node.lineno


def _sources():
    for pkg in PACKAGES:
        yield from sorted((ROOT / pkg).rglob("*.py"))


def test_no_loader_in_the_code_can_unpickle():
    bad = []
    for path in _sources():
        tree = ast.parse(path.read_text(), str(path))
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] + ([node.module] if isinstance(node, ast.ImportFrom) and node.module else [])
                if any(n.split(".")[0] in ("pickle", "cPickle", "dill", "joblib") for n in names):
                    bad.append(f"{path}:{node.lineno} imports a pickle module")
        for mod, fn, kw, line in _calls(tree):
            if mod == "torch" and fn == "load" and not (isinstance(kw.get("weights_only"), ast.Constant) and kw["weights_only"].value is True):
                bad.append(f"{path}:{line} torch.load without weights_only=True")
            if mod in ("np", "numpy") and fn == "load" and "allow_pickle" in kw and not (
                    isinstance(kw["allow_pickle"], ast.Constant) and kw["allow_pickle"].value is False):
                bad.append(f"{path}:{line} np.load with allow_pickle other than False")
            if mod == "yaml" and fn in ("load", "unsafe_load", "full_load", "load_all"):
                bad.append(f"{path}:{line} yaml.{fn} (use yaml.safe_load)")
    assert not bad, "\n".join(bad)


class _Spy:
    def __init__(self, job, broker, name: str) -> None:
        creds = credentials(job, name)
        self.got: list[tuple[str, bytes]] = []
        self.cv = threading.Condition()
        self.c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=name, protocol=mqtt.MQTTv311)
        self.c.tls_set(ca_certs=creds["tls_ca"], certfile=creds["tls_cert"], keyfile=creds["tls_key"])
        self.c.username_pw_set(creds["username"], creds["password"])
        self.c.on_message = self._on_message
        self.c.connect(broker.host, broker.port, keepalive=10)
        self.c.loop_start()

    def _on_message(self, client, userdata, msg) -> None:
        with self.cv:
            self.got.append((msg.topic, bytes(msg.payload)))
            self.cv.notify_all()

    def wait_for(self, payload: bytes) -> None:
        with self.cv:
            assert self.cv.wait_for(lambda: any(p == payload for _, p in self.got), 10), self.got

    def close(self) -> None:
        self.c.disconnect()
        self.c.loop_stop()


@pytest.mark.broker
def test_wildcard_sys_and_shared_subscriptions_deliver_nothing_foreign(job, tls_broker, party_transport):
    spy = _Spy(job, tls_broker, "hsi")
    try:
        time.sleep(0.5)
        for t in ("#", "$SYS/#", f"$share/g/feddiff/{JOB}/down/lidar", f"$share/g/feddiff/{JOB}/up/+",
                  f"feddiff/{JOB}/down/+", f"feddiff/{JOB}/up/lidar", f"feddiff/{JOB}/down/hsi"):
            spy.c.subscribe(t, qos=1)
        agg = party_transport(job, "agg")
        lidar = party_transport(job, "lidar")
        time.sleep(0.5)
        agg.publish(f"feddiff/{JOB}/down/lidar", b"secret for lidar", qos=1)
        lidar.publish(f"feddiff/{JOB}/up/lidar", b"lidar uplink", qos=1)
        agg.publish(f"feddiff/{JOB}/down/hsi", b"sentinel", qos=1)
        spy.wait_for(b"sentinel")
        time.sleep(0.3)
        assert [t for t, _ in spy.got] == [f"feddiff/{JOB}/down/hsi"], spy.got
    finally:
        spy.close()


@pytest.mark.broker
def test_tls_refuses_a_broker_certificate_for_another_hostname(job, tls_broker):
    ctx = ssl.create_default_context(cafile=str(job / "ca.crt"))
    creds = credentials(job, "hsi")
    ctx.load_cert_chain(creds["tls_cert"], creds["tls_key"])
    with socket.create_connection((tls_broker.host, tls_broker.port), timeout=5) as raw:
        with pytest.raises(ssl.SSLCertVerificationError):
            ctx.wrap_socket(raw, server_hostname="broker.attacker.example")
    with socket.create_connection((tls_broker.host, tls_broker.port), timeout=5) as raw:
        ctx.wrap_socket(raw, server_hostname="127.0.0.1").close()  # the genuine name passes
