"""Fixtures for attack tests: a really provisioned job and a real Mosquitto running the
generated configuration (TLS with client certificates, password file, ACL).

Every attack here goes through the component it targets, unmodified: the attacker holds one
party's genuine credentials (that is the threat: a curious or compromised station) and writes
raw bytes, while the victim runs the production filter chain or transport.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from feddiff_app.broker import mosquitto_binary
from tests.provisioned import JOB, PARTIES, directory, job_dir, job_template, keys  # noqa: F401 (fixtures)


@pytest.fixture(scope="session")
def attack_job_template(job_template: Path) -> Path:
    """The provisioned job itself (read only)."""
    return job_template


@pytest.fixture
def job(job_dir: Path) -> Path:
    """A private copy of the provisioned job (tests may tamper with it)."""
    return job_dir


@pytest.fixture(scope="session")
def party_keys(keys: dict) -> dict:
    return keys


@pytest.fixture(scope="session")
def job_directory(directory):
    return directory


@pytest.fixture
def tls_broker(job: Path, tmp_path: Path):
    """Mosquitto running the job's generated mosquitto.conf on a free loopback port."""
    from feddiff_app.broker import start_mosquitto_from_conf

    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (apt-get install mosquitto)")
    broker = start_mosquitto_from_conf(job / "broker" / "mosquitto.conf", tmp_path / "broker")
    yield broker
    broker.kill()


def credentials(job: Path, name: str) -> dict:
    """MqttTransport keyword arguments for party ``name``'s genuine broker credentials."""
    pdir = job / "parties" / name
    return {
        "username": name,
        "password": (pdir / "mqtt_password").read_text().strip(),
        "tls_ca": str(job / "ca.crt"),
        "tls_cert": str(pdir / "tls.crt"),
        "tls_key": str(pdir / "tls.key"),
    }


@pytest.fixture
def party_transport(tls_broker):
    """``party_transport(job, name, client_id=None, **options)`` -> a connected MqttTransport
    with ``name``'s credentials; closed after the test."""
    from feddiff.transport.mqtt import MqttTransport

    made = []

    def make(job: Path, name: str, client_id: str | None = None, **options):
        options.setdefault("reconnect_min_s", 0.1)
        options.setdefault("reconnect_max_s", 0.5)
        options.setdefault("publish_timeout", 20.0)
        t = MqttTransport(client_id or f"feddiff-{JOB}-{name}", tls_broker.host, tls_broker.port, **credentials(job, name), **options)
        made.append(t)
        t.connect(10)
        return t

    yield make
    for t in made:
        t.close()
