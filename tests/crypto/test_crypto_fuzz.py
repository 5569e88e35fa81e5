"""Whatever arrives from the broker, SealFilter.inbound and ReplayGuard.inbound either return a
message or raise EnvelopeError: a hostile peer cannot crash a receiver."""

from __future__ import annotations

import dataclasses

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crypto.replay import ReplayGuard
from crypto.seal import SealFilter
from feddiff.protocol.message import EnvelopeError, Header, Message

json_leaf = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), st.text(max_size=20),
                      st.binary(max_size=20))
json_val = st.recursive(json_leaf, lambda c: st.one_of(st.lists(c, max_size=3),
                                                        st.dictionaries(st.text(max_size=8), c, max_size=3)),
                        max_leaves=8)
any_scalar = st.one_of(json_leaf, st.just("hsi"), st.just("j1"))
b64ish = st.one_of(st.text(max_size=90), st.binary(min_size=0, max_size=70).map(
    lambda b: __import__("base64").b64encode(b).decode()))
seal_dict = st.fixed_dictionaries(
    {},
    optional={
        "v": st.one_of(st.just(1), json_leaf),
        "kid": st.one_of(st.text(max_size=40), json_leaf),
        "covered": st.one_of(st.just([]), st.lists(st.text(max_size=8), max_size=3), json_leaf),
        "mode": st.sampled_from(["x25519-hkdf-aes256gcm", "sign", "other"]),
        "to": st.sampled_from(["agg", "hsi", "", "x"]),
        "epk": b64ish,
        "nonce": b64ish,
        "sig": b64ish,
        "plain_len": json_leaf,
        "plain_sha256": json_leaf,
    },
)
topics = st.one_of(
    st.sampled_from(["feddiff/j1/up/hsi", "feddiff/j1/down/agg", "feddiff/j1/ctl", "feddiff/j1/presence/hsi",
                     "feddiff/j2/up/hsi", "feddiff//up/", "feddiff/j1/up/hsi/x", ""]),
    st.text(max_size=30),
)
headers = st.builds(
    Header,
    job=any_scalar, round=any_scalar, step=any_scalar, sender=st.one_of(st.sampled_from(["hsi", "lidar", "agg"]), any_scalar),
    seq=any_scalar, content_type=any_scalar, version=any_scalar, payload_len=any_scalar,
    payload_sha256=any_scalar, timestamp=st.one_of(st.floats(), st.integers(), json_leaf),
    ext=st.one_of(st.dictionaries(st.text(max_size=8), json_val, max_size=3).map(lambda d: d),
                  st.builds(lambda s, d: {**d, "seal": s}, seal_dict, st.dictionaries(st.text(max_size=8), json_val, max_size=2)),
                  json_leaf),
)


@pytest.fixture(scope="module")
def agg_filter(keys, directory) -> SealFilter:
    return SealFilter("j1", keys["agg"], directory)


def _accepts_or_rejects(filt, msg: Message) -> None:
    try:
        out = filt.inbound(msg)
    except EnvelopeError:
        return
    assert out is None or isinstance(out, Message)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(topic=topics, header=headers, payload=st.one_of(st.binary(max_size=200), json_leaf))
def test_random_envelopes_never_crash_the_seal_filter(agg_filter, topic, header, payload) -> None:
    _accepts_or_rejects(agg_filter, Message(topic, header, payload))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(header=headers)
def test_random_headers_never_crash_the_replay_guard(header) -> None:
    _accepts_or_rejects(ReplayGuard(None, 300), Message("feddiff/j1/up/hsi", header, b""))


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_mutated_genuine_envelopes_are_rejected_cleanly(keys, directory, make_msg, agg_filter, data) -> None:
    [msg] = SealFilter("j1", keys["hsi"], directory).outbound(make_msg("feddiff/j1/up/hsi", "hsi", b"x" * 40,
                                                                        compress={"alg": "zstd"}))
    seal = dict(msg.header.ext["seal"])
    field = data.draw(st.sampled_from(sorted(seal) + ["payload", "ext", "sender", "timestamp"]))
    header, payload = msg.header, msg.payload
    if field == "payload":
        payload = data.draw(st.binary(max_size=80).filter(lambda b: b != msg.payload))
    elif field == "ext":
        header = dataclasses.replace(header, ext={**header.ext, "compress": data.draw(json_val)})
    elif field in ("sender", "timestamp"):
        header = dataclasses.replace(header, **{field: data.draw(any_scalar)})
    else:
        seal[field] = data.draw(json_val)
        header = dataclasses.replace(header, ext={**header.ext, "seal": seal})
    changed = Message(msg.topic, header, payload)
    if changed.header == msg.header and changed.payload == msg.payload:
        return
    with pytest.raises(EnvelopeError):
        agg_filter.inbound(changed)
