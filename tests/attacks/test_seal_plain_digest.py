"""Issue #18 item 10: the seal's ``plain_len`` / ``plain_sha256`` are checked after decryption.

A sender (authenticated, so it signs whatever it likes) describes one plaintext in the signed
seal and encrypts another: inner filters must never receive a header that lies about its
payload."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.keys import b64e, raw_public
from crypto.primitives import derive_key, length_prefixed
from crypto.seal import _AD_DOMAIN, _SIG_DOMAIN, MODE_ENCRYPT, SEAL_VERSION, SealFilter, _view
from feddiff.protocol.envelope import pack, unpack
from feddiff.protocol.message import EnvelopeError, Header, Message
from tests.attacks.conftest import JOB

pytestmark = pytest.mark.security


def lying_message(keys, directory, plain_len: int, plain_sha256: str, real: bytes = b"the real plaintext") -> Message:
    """What a sender running its own sealing code can produce: a validly signed and encrypted
    seal whose plain_len / plain_sha256 describe something else than the plaintext inside."""
    me, agg = keys["hsi"], directory.aggregator()
    topic = f"feddiff/{JOB}/up/hsi"
    h = Header(job=JOB, round=1, step=1, sender="hsi", seq=1, content_type="features", timestamp=time.time())
    eph = X25519PrivateKey.generate()
    epk, nonce = raw_public(eph.public_key()), os.urandom(12)
    seal = {"v": SEAL_VERSION, "kid": me.kid, "covered": [], "plain_len": plain_len, "plain_sha256": plain_sha256,
            "mode": MODE_ENCRYPT, "to": agg.name, "epk": b64e(epk), "nonce": b64e(nonce)}
    key = derive_key(eph.exchange(agg.agree_key()), epk, agg.agree_public, JOB)
    body = AESGCM(key).encrypt(nonce, real, _AD_DOMAIN + length_prefixed(_view(h, [], seal)) + length_prefixed(topic.encode()))
    seal["sig"] = b64e(me.sign_key.sign(_SIG_DOMAIN + length_prefixed(_view(h, [], seal)) + length_prefixed(topic.encode()) + length_prefixed(body)))
    h.ext = {"seal": seal}
    return unpack(topic, pack(Message(topic, h, body)), 10**6)


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


def test_our_sealer_describes_what_it_seals_whatever_the_header_claims(party_keys, job_directory):
    h = Header(job=JOB, round=1, step=1, sender="hsi", seq=1, content_type="features", timestamp=time.time(),
               payload_len=5, payload_sha256="0" * 64)
    (sealed,) = SealFilter(JOB, party_keys["hsi"], job_directory).outbound(Message(f"feddiff/{JOB}/up/hsi", h, b"payload"))
    out = SealFilter(JOB, party_keys["agg"], job_directory).inbound(unpack(sealed.topic, pack(sealed), 10**6))
    assert out.payload == b"payload" and out.header.payload_sha256 == hashlib.sha256(b"payload").hexdigest()
