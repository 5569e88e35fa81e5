"""Issue #18 item 10: the seal's ``plain_len`` / ``plain_sha256`` are checked after decryption.

A sender (authenticated, so it signs whatever it likes) describes one plaintext in the signed
seal and encrypts another: inner filters must never receive a header that lies about its
payload."""

from __future__ import annotations

import hashlib
import time

import pytest

from crypto.seal import SealFilter
from feddiff.protocol.envelope import pack, unpack
from feddiff.protocol.message import EnvelopeError, Header, Message
from tests.attacks.conftest import JOB

pytestmark = pytest.mark.security


def lying_message(keys, directory, plain_len: int, plain_sha256: str) -> Message:
    h = Header(job=JOB, round=1, step=1, sender="hsi", seq=1, content_type="features", timestamp=time.time(),
               payload_len=plain_len, payload_sha256=plain_sha256)
    (sealed,) = SealFilter(JOB, keys["hsi"], directory).outbound(Message(f"feddiff/{JOB}/up/hsi", h, b"the real plaintext"))
    return unpack(sealed.topic, pack(sealed), 10**6)


@pytest.mark.parametrize("lie", ["len", "sha256"])
def test_a_seal_describing_another_plaintext_is_refused(party_keys, job_directory, lie):
    real = b"the real plaintext"
    plain_len = len(real) + 1 if lie == "len" else len(real)
    digest = hashlib.sha256(b"another plaintext" if lie == "sha256" else real).hexdigest()
    msg = lying_message(party_keys, job_directory, plain_len, digest)
    with pytest.raises(EnvelopeError) as err:
        SealFilter(JOB, party_keys["agg"], job_directory).inbound(msg)
    assert err.value.reason == "bad_digest"


def test_an_honest_seal_still_opens(party_keys, job_directory):
    real = b"the real plaintext"
    msg = lying_message(party_keys, job_directory, len(real), hashlib.sha256(real).hexdigest())
    out = SealFilter(JOB, party_keys["agg"], job_directory).inbound(msg)
    assert out.payload == real and out.header.payload_len == len(real)
