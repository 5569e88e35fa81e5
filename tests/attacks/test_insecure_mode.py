"""Issue #18 item 7: ``security: none`` is loud, and refused towards a non-loopback broker
unless the operator says ``--insecure``."""

from __future__ import annotations

import logging

import pytest

from crypto.mode_guard import check_security_mode
from feddiff.errors import FedDiffError

pytestmark = pytest.mark.security


@pytest.mark.parametrize("host", ["10.1.2.3", "broker.example.org", "192.168.0.7", "::ffff:10.0.0.1"])
def test_none_mode_towards_a_remote_broker_is_refused(host):
    with pytest.raises(FedDiffError) as err:
        check_security_mode("none", host)
    assert host in str(err.value) and "--insecure" in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "::1", "127.8.9.10"])
def test_none_mode_on_loopback_runs_with_a_loud_warning(host, caplog):
    with caplog.at_level(logging.WARNING):
        check_security_mode("none", host)
    assert any(r.levelno >= logging.WARNING and "security: none" in r.getMessage() for r in caplog.records)


def test_insecure_flag_allows_a_remote_broker_but_still_warns(caplog):
    with caplog.at_level(logging.WARNING):
        check_security_mode("none", "10.1.2.3", insecure=True)
    assert any("10.1.2.3" in r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING)


@pytest.mark.parametrize("mode", ["signed", "he"])
def test_secured_modes_are_quiet(mode, caplog):
    with caplog.at_level(logging.WARNING):
        check_security_mode(mode, "10.1.2.3")
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]


def test_an_unknown_mode_is_refused():
    with pytest.raises(FedDiffError):
        check_security_mode("sort-of", "127.0.0.1")


@pytest.mark.parametrize("command", [["aggregator"], ["edge", "--id", "hsi"], ["labels", "--id", "lab"]])
def test_role_commands_refuse_a_remote_plaintext_broker_in_one_line(tmp_path, command):
    """The real ``feddiff`` role commands check the mode before they connect: exit 2, one line."""
    import subprocess
    import sys

    import yaml

    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({"name": "j", "scene": {"synthetic": {"seed": 1, "rows": 16, "cols": 16}},
                                   "federation": {"job": "j", "broker": {"host": "10.1.2.3", "port": 1883},
                                                  "clients": {"hsi": {"modalities": ["hsi"]}, "lidar": {"modalities": ["lidar"]}}}}))
    r = subprocess.run([sys.executable, "-m", "feddiff_app.cli", *command, "--config", str(cfg)], capture_output=True, text=True, timeout=120)
    assert r.returncode == 2, r.stderr[-1000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and "--insecure" in lines[0] and "10.1.2.3" in lines[0]
