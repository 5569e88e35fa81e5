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
