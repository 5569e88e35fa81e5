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
import re
import struct
import types
import typing

from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from feddiff.config import Config, SceneSpec, config_from_dict
from feddiff.errors import ConfigError
from feddiff.protocol.chunking import ChunkFilter
from feddiff.protocol.envelope import MAGIC, pack, unpack
from feddiff.protocol.message import EnvelopeError, Header, Message

FUZZ = settings(max_examples=200, deadline=None, database=None, suppress_health_check=list(HealthCheck))

scalars = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12)
json_like = st.recursive(scalars, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)
finite = st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=12)
json_finite = st.recursive(finite, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4), max_leaves=10)

# -- envelope -----------------------------------------------------------------------------------

VALID = {
    "job": st.from_regex(r"[A-Za-z0-9_.\-]{1,12}", fullmatch=True),
    "round": st.integers(0, 100),
    "step": st.integers(0, 50),
    "sender": st.from_regex(r"[A-Za-z0-9_.\-]{1,12}", fullmatch=True),
    "seq": st.integers(0, 2**63),
    "content_type": st.sampled_from(["features", "backward", "hello", ""]),
    "version": st.just(1),
    "timestamp": st.floats(0, 2e9) | st.integers(0, 2**31),
    "ext": st.dictionaries(st.sampled_from(["chunk", "compress", "seal", "x"]), json_finite, max_size=2),
}


def rarely(draw) -> bool:
    return draw(st.integers(0, 9)) == 0


@st.composite
def envelopes(draw):
    """Mostly a well-formed envelope; now and then one field of the header missing, of the
    wrong type or out of range, a wrong length or digest, or a lying header length."""
    payload = draw(st.binary(max_size=64))
    head = {k: draw(s) for k, s in VALID.items()}
    head["payload_len"] = len(payload)
    head["payload_sha256"] = hashlib.sha256(payload).hexdigest()
    if rarely(draw):
        del head[draw(st.sampled_from(sorted(head)))]
    if rarely(draw):
        head[draw(st.sampled_from(sorted(head) + ["extra"]))] = draw(json_finite)
    if rarely(draw):
        head["payload_len"] = draw(st.integers(-1, 100))
    if rarely(draw):
        head["payload_sha256"] = draw(st.text(max_size=64))
    canonical = not rarely(draw)  # the parser insists on canonical JSON (what signatures cover)
    raw = json.dumps(head, sort_keys=canonical, separators=(",", ":") if canonical else (", ", ": "), ensure_ascii=not canonical).encode()
    hlen = draw(st.integers(0, 2**32 - 1)) if rarely(draw) else len(raw)
    return MAGIC + struct.pack(">I", hlen) + raw + payload


@FUZZ
@given(envelopes())
def test_envelope_parser_accepts_or_rejects_never_crashes(data):
    try:
        msg = unpack("feddiff/j/up/a", data, 10**6)
    except EnvelopeError as exc:
        event(f"rejected: {exc.reason}")
        assert re.fullmatch(r"[a-z_]+", exc.reason), exc.reason  # a stable tag the status counts
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
    for _ in range(draw(st.integers(1, 16))):
        kind = draw(st.sampled_from(["genuine"] * 6 + ["forged", "random"]))
        sender = "b" if rarely(draw) else "a"
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
        ext = draw(st.dictionaries(st.just("chunk"), json_like, max_size=1)) if rarely(draw) else {"chunk": info}
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


def _sometimes_wrong(good, wrong=json_like):
    """``good`` 19 times in 20 (st.one_of would weigh the two alike)."""
    return st.integers(0, 19).flatmap(lambda i: wrong if i == 7 else good)  # 7: hypothesis favours 0


def _scalar(tp, meta: dict):
    lo, hi = meta.get("range") or (None, None)
    if meta.get("choices"):
        return st.sampled_from(meta["choices"]) | st.text(max_size=6)
    if tp is bool:
        return st.booleans()
    if tp is int:
        lo = -3 if lo is None else int(lo) - 1
        return st.integers(lo, lo + 200 if hi is None else int(hi) + 1)
    if tp is float:
        return st.floats(-1.0 if lo is None else lo - 0.1, 1e3 if hi is None else hi + 0.1) | st.just(float("nan"))
    if tp is str:
        return st.text(max_size=12) | st.text(min_size=250, max_size=300)  # long names reach the file checks
    return json_like


def _schema_value(tp, meta: dict, depth: int):
    """A strategy for a value at a field of type ``tp``: 19 times in 20 shaped like the
    schema (so the walk goes deep and some configs are valid), else any JSON value."""
    origin = typing.get_origin(tp)
    if dataclasses.is_dataclass(tp):
        return _sometimes_wrong(schema_dicts(tp, depth + 1)) if depth < 4 else json_like
    if origin is dict:
        item = typing.get_args(tp)[1]
        return _sometimes_wrong(st.dictionaries(st.sampled_from(["hsi", "lidar", "a", "b"]), _schema_value(item, {}, depth + 1), max_size=2))
    if origin is list:
        return _sometimes_wrong(st.lists(_schema_value(typing.get_args(tp)[0], {}, depth + 1), min_size=0, max_size=5))
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in typing.get_args(tp) if a is not type(None)][0]
        return st.none() | _schema_value(inner, meta, depth)
    return _sometimes_wrong(_scalar(tp, meta))


def schema_dicts(cls, depth: int = 0):
    """Dicts with the dataclass's own keys (each present or not, so defaults fill the rest),
    and rarely a key the schema does not have."""
    hints = typing.get_type_hints(cls)
    fields = [f for f in dataclasses.fields(cls) if not f.metadata.get("internal")]
    known = st.fixed_dictionaries({}, optional={f.name: st.deferred(lambda f=f: _schema_value(hints[f.name], dict(f.metadata), depth)) for f in fields})
    required = [f.name for f in fields if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING]
    required += ["scene"] if cls is Config else []  # without one, every example stops at the first check
    if required:  # mostly present, or the walk always stops at "missing required key"
        known = st.builds(lambda base, req: {**req, **base}, known, st.fixed_dictionaries({n: st.deferred(lambda n=n: _schema_value(hints[n], {}, depth)) for n in required}))
    if cls is SceneSpec:  # the three kinds of scene exclude each other: usually keep one
        known = st.builds(_one_scene_kind, known, st.sampled_from(["synthetic", "synthetic", "modalities", "sample_table", None]))
    return _sometimes_wrong(known, st.builds(lambda d, v: {**d, "unknown_key": v}, known, json_like))


def _one_scene_kind(d, keep):
    if not isinstance(d, dict) or keep is None:
        return d
    d = {k: v for k, v in d.items() if k not in ("synthetic", "modalities", "sample_table") or k == keep}
    d.setdefault(keep, {})
    return d


def _with_hsi_path(path: str) -> dict:
    return {"scene": {"modalities": {"hsi": {"path": path}}, "labels": {"path": "labels.npy"}, "split": {"mode": "per_class_count"}}}


@FUZZ
@given(schema_dicts(Config))
# found by this test (each escaped as OSError/ValueError/RuntimeError before the fix in
# feddiff/config.py), pinned so that 200 random examples need not find them again
@example(_with_hsi_path("x" * 300))  # ENAMETOOLONG from Path.exists()
@example(_with_hsi_path("cube\0.tif"))  # embedded NUL byte in Path.resolve()
@example(_with_hsi_path("~no_such_user_xyz/cube.tif"))  # RuntimeError from expanduser()
def test_config_loader_raises_only_config_error(doc):
    try:
        cfg = config_from_dict(doc, "fuzz.yaml")
    except ConfigError as exc:
        event("ConfigError: " + str(exc).split(": ")[2].split(" ")[0] if str(exc).count(": ") > 1 else "ConfigError")
        assert str(exc).startswith("fuzz.yaml: "), str(exc)  # names the file (a newline can only come from a value quoted in it)
        return
    event("valid config")
    assert isinstance(cfg, Config)
