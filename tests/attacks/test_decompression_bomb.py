"""Issue #18 item 5: a small envelope must not inflate into a huge allocation.

The bomb is a real 0.5 MB envelope (zlib of 512 MiB of zeros) published on a real Mosquitto
and received by a channel running the production filter chain."""

from __future__ import annotations

import time
import tracemalloc
import zlib

import pytest

from feddiff.config import Config
from feddiff.protocol.channel import Channel
from feddiff.protocol.endpoint import build_chain
from feddiff.protocol.envelope import pack
from feddiff.protocol.filters import CompressFilter
from feddiff.protocol.message import EnvelopeError, Header, Message

pytestmark = pytest.mark.security

INFLATED = 512 * 1024 * 1024


def bomb(content_type: str = "features", raw_len: int = INFLATED) -> Message:
    """A compress-filter envelope whose payload is zlib of ``raw_len`` zero bytes."""
    z = zlib.compressobj(9)
    block = bytes(1 << 20)
    packed = b"".join(z.compress(block) for _ in range(raw_len >> 20)) + z.flush()
    header = Header(job="j1", round=1, step=1, sender="hsi", seq=10**15, content_type=content_type,
                    timestamp=time.time(), ext={"compress": {"alg": "zlib", "raw_len": raw_len}})
    return Message("feddiff/j1/up/hsi", header, packed)


def test_half_a_megabyte_bomb_through_the_broker_is_refused_without_inflating(mosquitto, transport_factory):
    cfg = Config()
    wire = pack(bomb())
    assert len(wire) < 600_000  # small enough to pass every size limit on the way
    rx_t = transport_factory(mosquitto, "rx")
    rx_t.subscribe("feddiff/j1/up/+")
    rx = Channel(rx_t, "j1", "agg", build_chain(cfg), cfg.federation.max_message_bytes)
    transport_factory(mosquitto, "attacker").publish("feddiff/j1/up/hsi", wire, qos=1)

    tracemalloc.start()
    try:
        assert rx.recv(10) is None
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert dict(rx.stats.rejected) == {"oversized": 1}
    assert peak < 64 * 1024 * 1024, f"receiving the bomb allocated {peak / 2**20:.0f} MiB"


def test_inflation_is_capped_by_the_message_limit():
    f = CompressFilter.for_limit(8 * 1024 * 1024)
    with pytest.raises(EnvelopeError) as err:
        f.inbound(bomb(raw_len=16 * 1024 * 1024))
    assert err.value.reason == "oversized"


@pytest.mark.parametrize("content_type", ["ready", "committed", "done", "get_weights", "metrics"])
def test_control_messages_have_a_small_inflation_budget(content_type):
    f = CompressFilter.for_limit(64 * 1024 * 1024)
    with pytest.raises(EnvelopeError) as err:
        f.inbound(bomb(content_type, raw_len=8 * 1024 * 1024))
    assert err.value.reason == "oversized"
