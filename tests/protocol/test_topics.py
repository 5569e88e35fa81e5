"""Topic scheme: builders, parser, and ids that cannot escape their topic level."""

from __future__ import annotations

import pytest

from feddiff.protocol import topics


def test_builders_follow_the_scheme():
    assert topics.uplink("j", "hsi") == "feddiff/j/up/hsi"
    assert topics.downlink("j", "hsi") == "feddiff/j/down/hsi"
    assert topics.broadcast("j") == "feddiff/j/ctl"
    assert topics.presence("j", "hsi") == "feddiff/j/presence/hsi"


@pytest.mark.parametrize("topic, parsed", [
    ("feddiff/j/up/hsi", ("j", "up", "hsi")),
    ("feddiff/j/down/hsi", ("j", "down", "hsi")),
    ("feddiff/j/ctl", ("j", "ctl", None)),
    ("feddiff/j/presence/a.b-c_d", ("j", "presence", "a.b-c_d")),
])
def test_parse_inverts_the_builders(topic, parsed):
    assert topics.parse_topic(topic) == parsed


@pytest.mark.parametrize("bad", ["a/b", "a+", "#", "", "x" * 65, "sp ace", "tab\t", "ü"])
def test_invalid_ids_are_refused_by_every_builder(bad):
    for build in (lambda: topics.uplink("j", bad), lambda: topics.downlink("j", bad), lambda: topics.presence("j", bad),
                  lambda: topics.broadcast(bad), lambda: topics.uplink(bad, "c")):
        with pytest.raises(ValueError):
            build()


def test_wildcard_only_in_the_client_position_of_a_subscription():
    assert topics.uplink("j", topics.ANY) == "feddiff/j/up/+"
    with pytest.raises(ValueError):
        topics.broadcast("+")
    with pytest.raises(ValueError):
        topics.parse_topic("feddiff/j/up/+")


@pytest.mark.parametrize("bad", ["feddiff/j", "feddiff/j/up", "feddiff/j/up/a/b", "other/j/up/a", "feddiff/j/sideways/a",
                                 "feddiff//up/a", "feddiff/j/ctl/x", "feddiff/j/up/"])
def test_parse_refuses_topics_outside_the_scheme(bad):
    with pytest.raises(ValueError):
        topics.parse_topic(bad)
