"""Shared fixtures: a real Mosquitto on a free loopback port, the shared benchmark data."""

from __future__ import annotations

from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def mosquitto(tmp_path):
    from feddiff.transport.broker import mosquitto_binary, start_mosquitto

    if mosquitto_binary() is None:
        pytest.skip("mosquitto is not installed (scripts/test.sh installs the Debian package)")
    broker = start_mosquitto(workdir=tmp_path / "broker")
    yield broker
    broker.stop()


def needs_shared(*parts: str):
    path = SHARED.joinpath(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"benchmark data not found at {path} (../shared/data beside the project)")
