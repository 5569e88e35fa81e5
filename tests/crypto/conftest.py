"""Fixtures for the crypto tests: the provisioned job of ``tests/provisioned.py`` (an
aggregator, two edge clients and a label holder, provisioned for real), a second job for the
cross-job refusals, and plaintext messages as the channel hands them to the seal filters.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # no installed package yet: import crypto/ and feddiff/ from the repo
    sys.path.insert(0, str(ROOT))

from feddiff.protocol.message import Header, Message  # noqa: E402
from tests.provisioned import JOB, PARTIES, directory, job_dir, job_template, keys, provision  # noqa: E402,F401 (fixtures)


@pytest.fixture(scope="session")
def other_job(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return provision(tmp_path_factory.mktemp("job") / "j2", job="j2")


def _make_msg(topic: str, sender: str, payload: bytes, seq: int = 1, job: str = JOB, **ext) -> Message:
    header = Header(job=job, round=3, step=7, sender=sender, seq=seq, content_type="features/f16",
                    timestamp=time.time(), ext=dict(ext))
    return Message(topic, header, payload)


@pytest.fixture(scope="session")
def make_msg():
    """Builds a plaintext message as the channel would hand it to the seal filters."""
    return _make_msg
