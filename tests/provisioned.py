"""One provisioned job for the test areas that check or attack the crypto (tests/crypto,
tests/attacks): an aggregator, two edge stations and a label holder, provisioned for real
(CA, keys, certificates, signed directory, broker files), so every test works on what
``feddiff keys`` actually produces.

A conftest imports the fixtures below to offer them; the template is provisioned once per
session and directory that offers it, and ``job_dir`` hands each test a private copy it may
tamper with.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from crypto.directory import load_directory
from crypto.keys import load_party
from crypto.provision import init_job, issue

JOB = "j1"
PARTIES = [("aggregator", "agg"), ("edge", "hsi"), ("edge", "lidar"), ("labels", "lab")]


def provision(out: Path, job: str = JOB) -> Path:
    """Provisions ``job`` with every party of ``PARTIES`` into ``out``."""
    init_job(job, out)
    for role, name in PARTIES:
        issue(out, role, name)
    return out


@pytest.fixture(scope="session")
def job_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return provision(tmp_path_factory.mktemp("job") / JOB)


@pytest.fixture
def job_dir(job_template: Path, tmp_path: Path) -> Path:
    """A private copy tests may tamper with."""
    dst = tmp_path / JOB
    shutil.copytree(job_template, dst)
    return dst


@pytest.fixture(scope="session")
def keys(job_template: Path) -> dict:
    return {name: load_party(job_template, name) for _, name in PARTIES}


@pytest.fixture(scope="session")
def directory(job_template: Path):
    return load_directory(job_template)
