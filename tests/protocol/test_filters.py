"""CompressFilter (bounded inflation) and DedupFilter (QoS-1 duplicates, persisted windows)."""

from __future__ import annotations

import hashlib
import json
import os
import zlib

import pytest

from feddiff.protocol.envelope import pack, unpack
from feddiff.protocol.filters import CompressFilter, DedupFilter
from feddiff.protocol.message import EnvelopeError, FilterChain, Header, Message


def msg(payload: bytes = b"hello", seq: int = 1, sender: str = "a", ext: dict | None = None) -> Message:
    h = Header(job="j", round=1, step=2, sender=sender, seq=seq, content_type="features", ext=dict(ext or {}))
    return Message(f"feddiff/j/up/{sender}", h, payload)


def inbound_reason(f, m: Message) -> str:
    with pytest.raises(EnvelopeError) as err:
        f.inbound(m)
    return err.value.reason


# -- compression -------------------------------------------------------------------------------

def test_compression_round_trips_through_the_wire_and_records_itself():
    f = CompressFilter(level=6)
    raw = b"abc" * 10000
    (out,) = f.outbound(msg(raw))
    assert out.header.ext["compress"] == {"alg": "zlib", "raw_len": len(raw)}
    assert len(out.payload) < len(raw) // 10
    back = f.inbound(unpack(out.topic, pack(out), 10**6))
    assert back.payload == raw and "compress" not in back.header.ext
    assert back.sha256() == hashlib.sha256(raw).hexdigest()
    assert back.header.payload_sha256 == "", "a header must not describe bytes it no longer travels with"


def test_outbound_does_not_modify_the_callers_message():
    m = msg(b"z" * 1000)
    CompressFilter().outbound(m)
    assert m.payload == b"z" * 1000 and m.header.ext == {}


def test_incompressible_or_tiny_payloads_go_out_unchanged():
    f = CompressFilter()
    noise = os.urandom(5000)
    assert f.outbound(msg(noise))[0].payload == noise
    assert "compress" not in f.outbound(msg(noise))[0].header.ext
    assert f.outbound(msg(b"tiny"))[0].payload == b"tiny"


def test_messages_without_compress_entry_pass_inbound():
    assert CompressFilter().inbound(msg(b"plain")).payload == b"plain"


def test_declared_size_above_the_limit_is_refused_before_inflating():
    (wire,) = CompressFilter().outbound(msg(b"\0" * 100000))
    assert inbound_reason(FilterChain([CompressFilter(max_bytes=1000)]), wire) == "oversized"


def test_sender_refuses_what_a_receiver_would_refuse():
    with pytest.raises(ValueError):
        CompressFilter(max_bytes=1000).outbound(msg(b"\0" * 100000))


def test_control_budget_applies_to_control_content_types_only():
    f = CompressFilter.for_limit(10_000)
    assert f.limit("ready") == 10_000 and f.limit("features") == 10_000
    assert CompressFilter.for_limit(64 << 20).limit("ready") == 1 << 20
    assert CompressFilter.for_limit(64 << 20).limit("features") == 64 << 20


def test_bomb_lying_about_its_size_is_refused():
    bomb = zlib.compress(b"\0" * 10_000_000, 9)
    m = msg(bomb, ext={"compress": {"alg": "zlib", "raw_len": 100}})
    assert inbound_reason(CompressFilter(), m) == "oversized"


@pytest.mark.parametrize("ext, payload", [
    ({"alg": "gzip", "raw_len": 3}, zlib.compress(b"abc")),
    ({"alg": "zlib"}, zlib.compress(b"abc")),
    ({"alg": "zlib", "raw_len": -1}, zlib.compress(b"abc")),
    ({"alg": "zlib", "raw_len": True}, zlib.compress(b"abc")),
    ("zlib", zlib.compress(b"abc")),
])
def test_malformed_compression_parameters_are_bad_header(ext, payload):
    assert inbound_reason(CompressFilter(), msg(payload, ext={"compress": ext})) == "bad_header"


@pytest.mark.parametrize("payload, raw_len", [
    (b"not zlib at all", 3),
    (zlib.compress(b"abcdef")[:-3], 6),
    (zlib.compress(b"abc") + b"trailing", 3),
    (zlib.compress(b"abc"), 10),
])
def test_corrupt_truncated_or_padded_streams_are_bad_payload(payload, raw_len):
    m = msg(payload, ext={"compress": {"alg": "zlib", "raw_len": raw_len}})
    assert inbound_reason(CompressFilter(), m) == "bad_payload"


# -- duplicates --------------------------------------------------------------------------------

def test_exact_repeat_is_swallowed_once_counted():
    d = DedupFilter()
    assert d.inbound(msg()) is not None
    assert d.inbound(msg()) is None
    assert d.inbound(msg()) is None
    assert d.duplicates == 2


def test_same_seq_with_other_bytes_is_not_a_duplicate():
    # the filter runs before the seal is checked: a forgery must not pre-empt the real message
    d = DedupFilter()
    assert d.inbound(msg(b"forged")) is not None
    assert d.inbound(msg(b"real")) is not None


def test_senders_are_independent():
    d = DedupFilter()
    assert d.inbound(msg(sender="a")) is not None
    assert d.inbound(msg(sender="b")) is not None


def test_messages_older_than_the_window_are_dropped_as_stale():
    d = DedupFilter(window=3)
    for seq in range(1, 6):
        assert d.inbound(msg(seq=seq, payload=b"m%d" % seq)) is not None
    assert d.inbound(msg(seq=1, payload=b"m1")) is None
    assert d.stale == 1
    assert d.inbound(msg(seq=5, payload=b"m5")) is None and d.duplicates == 1
    assert d.high_water_marks() == {"a": 5}


def test_out_of_order_within_the_window_is_accepted():
    d = DedupFilter(window=10)
    for seq in (5, 3, 4, 1):
        assert d.inbound(msg(seq=seq, payload=b"%d" % seq)) is not None


def test_a_restarted_receiver_still_recognises_old_messages():
    before = DedupFilter(window=4)
    for seq in range(1, 8):
        before.inbound(msg(seq=seq, payload=b"%d" % seq))
    state = json.loads(json.dumps(before.to_dict()))  # as persisted on disk
    after = DedupFilter.from_dict(state)
    assert after.inbound(msg(seq=7, payload=b"7")) is None  # remembered
    assert after.inbound(msg(seq=2, payload=b"2")) is None  # below the floor
    assert after.inbound(msg(seq=8, payload=b"8")) is not None  # new
    assert after.to_dict()["windows"][0]["floor"] == 4


@pytest.mark.parametrize("state", [{}, {"version": 2, "senders": {}}, {"version": 1, "window": 4, "senders": {"a": {"floor": 1, "seen": []}}},
                                   {"version": 2, "window": 4, "windows": [{"topic": "t", "sender": "a", "floor": "x", "seen": []}]},
                                   {"version": 2, "window": 4, "windows": [{"topic": "t", "sender": "a", "floor": 1, "seen": [["1", "d"]]}]},
                                   {"version": 2, "window": 4, "windows": [{"sender": "a", "floor": 1, "seen": []}]}])
def test_malformed_state_is_a_value_error(state):
    with pytest.raises(ValueError):
        DedupFilter.from_dict(state)


def test_memory_is_bounded_by_window_and_senders():
    d = DedupFilter(window=5, max_senders=3)
    for s in range(10):
        for seq in range(20):
            d.inbound(msg(sender=f"s{s}", seq=seq, payload=b"%d" % seq))
    state = d.to_dict()["windows"]
    assert [w["sender"] for w in state] == ["s7", "s8", "s9"]
    assert all(len(w["seen"]) == 5 for w in state)


def test_memory_is_bounded_by_total_entries():
    d = DedupFilter(window=10, max_senders=100, max_entries=25)
    for s in range(10):
        for seq in range(10):
            d.inbound(msg(sender=f"s{s}", seq=seq, payload=b"%d" % seq))
    assert d.remembered <= 25 and sum(len(w["seen"]) for w in d.to_dict()["windows"]) == d.remembered
    assert d.to_dict()["windows"][-1]["sender"] == "s9"


def test_a_header_naming_another_sender_on_an_uplink_is_refused_before_any_state():
    d = DedupFilter()
    forged = Message("feddiff/j/up/mallory", Header(job="j", round=1, step=1, sender="a", seq=2**62, content_type="x"), b"x")
    with pytest.raises(EnvelopeError) as err:
        d.inbound(forged)
    assert err.value.reason == "wrong_topic" and d.high_water_marks() == {} and d.remembered == 0
    assert d.inbound(msg(seq=5)) is not None  # the genuine sender's floor did not move


def test_the_same_sender_on_two_topics_has_two_windows():
    d = DedupFilter()
    down = Message("feddiff/j/down/x", Header(job="j", round=1, step=1, sender="a", seq=1, content_type="x"), b"hello")
    assert d.inbound(msg()) is not None and d.inbound(down) is not None
