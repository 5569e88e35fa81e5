"""Fuzzing the three parsers that take input from outside: the envelope parser (bytes from
the broker), the chunk reassembler (headers chosen by whoever publishes), and the config
loader (files written by hand).

The contract is the same for all three: any input either parses or raises the module's own
error (EnvelopeError / ConfigError), which the daemon counts or the CLI prints as one line. Any
other exception is a crash of a long-running daemon or a traceback for a user. Bounded: 200
examples each, no deadline (2 shared cores), a fixed database-free profile so CI is repeatable.

tests/protocol/test_fuzz.py fuzzes the same parsers with byte-level noise; the strategies here
instead build *well-formed-looking* input (valid JSON headers with correct digests, chunk sets
cut from a real message, configs that follow the schema's key names) so the examples reach the
checks behind the first line of defence.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import typing

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from feddiff.config import Config, config_from_dict
from feddiff.errors import ConfigError
from feddiff.protocol.chunking import ChunkFilter
from feddiff.protocol.envelope import MAGIC, pack, unpack
from feddiff.protocol.message import EnvelopeError, Header, Message

FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
json_like = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)

# -- envelope -----------------------------------------------------------------------------------

FIELDS = {
    "job": st.text(max_size=8),
    "round": st.integers(-5, 2**63),
    "step": st.integers(-5, 50),
    "sender": st.text(max_size=8),
    "seq": st.integers(-5, 2**64),
    "content_type": st.sampled_from(["features", "backward", "hello", ""]),
    "version": st.sampled_from([1, 1, 1, 0, 2, True]),
    "timestamp": st.floats() | st.integers(),
    "ext": st.dictionaries(st.sampled_from(["chunk", "compress", "seal", "x"]), json_like, max_size=3),
}


@st.composite
def envelopes(draw):
    """A header that is valid JSON with plausible fields, some of them wrong, and a digest
    that matches the payload unless the example decides otherwise."""
    payload = draw(st.binary(max_size=64))
    head = {k: draw(s) for k, s in FIELDS.items() if draw(st.integers(0, 15))}  # usually all keys
    head["payload_len"] = draw(st.sampled_from([len(payload), len(payload) + 1, -1]))
    head["payload_sha256"] = draw(st.sampled_from([hashlib.sha256(payload).hexdigest(), "0" * 64]))
    for k in draw(st.lists(st.sampled_from(list(head) + ["extra"]), max_size=2)):  # a wrong type here and there
        head[k] = draw(json_like)
    try:
        raw = json.dumps(head, sort_keys=True).encode()
    except ValueError:
        raw = b"{}"
    hlen = draw(st.sampled_from([len(raw), len(raw), len(raw) + 3, 2**32 - 1]))
    return MAGIC + struct.pack(">I", hlen) + raw + payload


@FUZZ
@given(envelopes())
def test_envelope_parser_accepts_or_rejects_never_crashes(data):
    try:
        msg = unpack("feddiff/j/up/a", data, 10**6)
    except EnvelopeError as exc:
        event(f"rejected: {exc.reason}")
        assert exc.reason in {"oversized", "bad_magic", "truncated", "bad_header", "bad_version", "bad_length", "bad_digest"}, exc.reason
        return
    event("parsed")
    # what parses is what the rest of the code assumes: typed fields, an honest digest
    h = msg.header
    assert isinstance(h.round, int) and isinstance(h.seq, int) and isinstance(h.ext, dict) and isinstance(h.timestamp, float)
    assert h.payload_len == len(msg.payload) and hashlib.sha256(msg.payload).hexdigest() == h.payload_sha256
    assert unpack("feddiff/j/up/a", pack(msg), 10**6).payload == msg.payload  # and it round-trips


# -- chunk reassembly ---------------------------------------------------------------------------

REAL = bytes(range(256)) * 3  # 768 bytes, cut into 4 chunks of 200
REAL_PARTS = ChunkFilter(max_chunk_bytes=200).outbound(Message("t", Header("j", 0, 0, "a", 7, "features"), REAL))


@st.composite
def chunk_streams(draw):
    """Arrivals from two senders: genuine chunks of a real message, some with one field of the
    chunk header forged, and made-up chunks with random headers."""
    out = []
    for _ in range(draw(st.integers(1, 14))):
        kind = draw(st.sampled_from(["genuine", "forged", "random"]))
        sender = draw(st.sampled_from(["a", "b"]))
        if kind == "random":
            info = draw(st.fixed_dictionaries({}, optional={
                "id": st.sampled_from(["a:7", "b:1", "", 3, None]),
                "index": st.integers(-2, 5) | json_like,
                "count": st.integers(-1, 5) | json_like,
                "total_len": st.integers(-1, 900) | json_like,
                "sha256": st.sampled_from([hashlib.sha256(REAL).hexdigest(), "0" * 64, 12]),
            }))
            payload = draw(st.binary(max_size=250))
        else:
            part = draw(st.sampled_from(REAL_PARTS))
            info, payload = dict(part.header.ext["chunk"]), part.payload
            if kind == "forged":
                key = draw(st.sampled_from(sorted(info)))
                info[key] = draw(st.integers(-1, 1000) | st.text(max_size=4) | json_like)
                if draw(st.booleans()):
                    payload = draw(st.binary(max_size=250))
        ext = {"chunk": info} if draw(st.integers(0, 9)) else draw(st.dictionaries(st.just("chunk"), json_like, max_size=1))
        out.append((sender, ext, payload))
    return out


@FUZZ
@given(chunk_streams())
def test_chunk_reassembler_yields_only_whole_messages_and_stays_bounded(stream):
    rx = ChunkFilter(max_total_bytes=1000, max_pending=3, timeout_s=60)
    for sender, ext, payload in stream:
        msg = Message("t", Header("j", 0, 0, sender, 7, "features", ext=ext), payload)
        try:
            got = rx.inbound(msg)
        except EnvelopeError as exc:
            event(f"chunk rejected: {exc.reason}")
            continue
        finally:
            assert len(rx.pending) <= 3
        if got is None or "chunk" not in ext or not isinstance(ext["chunk"], dict):
            continue
        event("reassembled")
        # a reassembled message is exactly the bytes its chunk header promised
        info = ext["chunk"]
        assert len(got.payload) == info["total_len"] and hashlib.sha256(got.payload).hexdigest() == info["sha256"]
        assert "chunk" not in got.header.ext


# -- config loader ------------------------------------------------------------------------------


def _schema_value(tp, depth: int):
    """A strategy for a value at a field of type ``tp``: usually shaped like the schema (so the
    walk goes deeper), sometimes any JSON value (a wrong type)."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp) and depth < 4:
        return schema_dicts(tp, depth + 1) | json_like
    if origin is dict and depth < 4:
        item = typing.get_args(tp)[1]
        return st.dictionaries(st.text(max_size=6), _schema_value(item, depth + 1), max_size=3) | json_like
    if origin is list:
        return st.lists(_schema_value(typing.get_args(tp)[0], depth + 1), max_size=5) | json_like
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", typing.Union)):
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return st.none() | _schema_value(inner, depth)
    if tp is str:
        return st.text(max_size=300) | json_like  # long names and odd characters reach the file checks
    if tp in (int, float):
        return st.integers(-(2**70), 2**70) | st.floats() | json_like
    return json_like


def schema_dicts(cls, depth: int = 0):
    hints = typing.get_type_hints(cls)
    fields = [f.name for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    return st.fixed_dictionaries({}, optional={**{n: st.deferred(lambda n=n: _schema_value(hints[n], depth)) for n in fields}, "unknown_key": json_like})


@FUZZ
@given(schema_dicts(Config) | json_like)
def test_config_loader_raises_only_config_error(doc):
    try:
        cfg = config_from_dict(doc, "fuzz.yaml")
    except ConfigError as exc:
        event("ConfigError: " + str(exc).split(": ")[2].split(" ")[0] if str(exc).count(": ") > 1 else "ConfigError")
        assert "\n" not in str(exc) and str(exc).startswith("fuzz.yaml"), str(exc)
        return
    event("valid config")
    assert isinstance(cfg, Config)
