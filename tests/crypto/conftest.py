"""Shared fixtures: a provisioned job with an aggregator, two edge clients and a label holder.

Provisioning is real (keys, CA, certificates, signed directory, broker files): the tests attack
what ``feddiff keys`` actually produces.
"""

from __future__ import annotations

import shutil
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # no installed package yet: import crypto/ and feddiff/ from the repo
    sys.path.insert(0, str(ROOT))

from crypto.directory import load_directory  # noqa: E402

from crypto.keys import load_party
from crypto.provision import init_job, issue  # noqa: E402
from feddiff.protocol.message import Header, Message  # noqa: E402

JOB = "j1"
PARTIES = [("aggregator", "agg"), ("edge", "hsi"), ("edge", "lidar"), ("labels", "lab")]


def provision(out: Path, job: str = JOB) -> Path:
    init_job(job, out)
    for role, name in PARTIES:
        issue(out, role, name)
    return out


@pytest.fixture(scope="session")
def job_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return provision(tmp_path_factory.mktemp("job") / "j1")


@pytest.fixture
def job_dir(job_template: Path, tmp_path: Path) -> Path:
    """A private copy tests may tamper with."""
    dst = tmp_path / "j1"
    shutil.copytree(job_template, dst)
    return dst


@pytest.fixture(scope="session")
def other_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return provision(tmp_path_factory.mktemp("job") / "j2", job="j2")


@pytest.fixture(scope="session")
def keys(job_template: Path) -> dict:
    return {name: load_party(job_template, name) for _, name in PARTIES}


@pytest.fixture(scope="session")
def directory(job_template: Path):
    return load_directory(job_template)


def _make_msg(topic: str, sender: str, payload: bytes, seq: int = 1, job: str = JOB, **ext) -> Message:
    header = Header(job=job, round=3, step=7, sender=sender, seq=seq, content_type="features/f16",
                    timestamp=time.time(), ext=dict(ext))
    return Message(topic, header, payload)


@pytest.fixture(scope="session")
def make_msg():
    """Builds a plaintext message as the channel would hand it to the seal filters."""
    return _make_msg
