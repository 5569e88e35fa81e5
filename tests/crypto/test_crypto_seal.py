"""SealFilter against forgers, tamperers, eavesdroppers and parties stepping out of their role."""

from __future__ import annotations

import base64
import dataclasses
import time

import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from crypto.directory import load_directory

from crypto.keys import load_party
from crypto.provision import issue
from crypto.seal import SealError, SealFilter, decrypt_payload
from feddiff.errors import FedDiffError
from feddiff.protocol.message import EnvelopeError, FilterChain, Message

UP_HSI = "feddiff/j1/up/hsi"
UP_LIDAR = "feddiff/j1/up/lidar"
DOWN_HSI = "feddiff/j1/down/hsi"
CTL = "feddiff/j1/ctl"


@pytest.fixture
def seal(keys, directory):
    """seal('hsi') -> that party's SealFilter."""
    return lambda name, **kw: SealFilter("j1", keys[name], directory, **kw)


def features() -> bytes:
    return np.random.default_rng(0).standard_normal((16, 512)).astype(np.float32).tobytes()


def sealed_up(seal, make_msg, payload: bytes = b"uplink features", **ext) -> Message:
    [out] = seal("hsi").outbound(make_msg(UP_HSI, "hsi", payload, **ext))
    return out


def rejected(filt: SealFilter, msg: Message) -> str:
    with pytest.raises(EnvelopeError) as e:
        filt.inbound(msg)
    return e.value.reason


def with_header(msg: Message, **changes) -> Message:
    return Message(msg.topic, dataclasses.replace(msg.header, **changes), msg.payload)


# ------------------------------------------------------------------ what honest parties get


def test_uplink_round_trip_restores_payload_and_inner_filter_ext(seal, make_msg) -> None:
    payload = features()
    msg = make_msg(UP_HSI, "hsi", payload, compress={"alg": "zstd", "raw_len": 10})
    out = seal("agg").inbound(sealed_up(seal, make_msg, payload, compress={"alg": "zstd", "raw_len": 10}))
    assert out.payload == payload
    assert out.header.ext == msg.header.ext
    assert (out.header.round, out.header.seq, out.header.sender) == (3, 1, "hsi")


def test_downlink_is_readable_by_its_client_only(seal, make_msg) -> None:
    [down] = seal("agg").outbound(make_msg(DOWN_HSI, "agg", b"gradients for hsi"))
    assert seal("hsi").inbound(down).payload == b"gradients for hsi"
    assert rejected(seal("lidar"), down) == "wrong_topic"


def test_broadcast_is_signed_not_encrypted(seal, make_msg) -> None:
    [ctl] = seal("agg").outbound(make_msg(CTL, "agg", b"round 4 starts"))
    assert ctl.payload == b"round 4 starts"
    assert seal("lidar").inbound(ctl).payload == b"round 4 starts"
    assert rejected(seal("lidar"), Message(CTL, ctl.header, b"round 5 starts")) == "bad_signature"


def test_extra_unsigned_ext_entries_are_dropped_before_inner_filters(seal, make_msg) -> None:
    msg = sealed_up(seal, make_msg)
    injected = with_header(msg, ext={**msg.header.ext, "compress": {"alg": "bomb"}})
    assert "compress" not in seal("agg").inbound(injected).header.ext


# ------------------------------------------------------------------ forgers


def test_envelope_signed_with_a_key_outside_the_directory_is_unknown_signer(job_dir, seal, make_msg) -> None:
    real = load_party(job_dir, "hsi")
    mallory = dataclasses.replace(real, sign_key=Ed25519PrivateKey.generate(), agree_key=X25519PrivateKey.generate())
    # Mallory's filter has to be built around a directory that lists her key; ours does not.
    forged_dir = dataclasses.replace(load_directory(job_dir), parties={
        **load_directory(job_dir).parties,
        "hsi": dataclasses.replace(load_directory(job_dir).parties["hsi"], sign_public=mallory.sign_public,
                                   agree_public=mallory.agree_public)})
    [forged] = SealFilter("j1", mallory, forged_dir).outbound(make_msg(UP_HSI, "hsi", b"poisoned features"))
    assert rejected(seal("agg"), forged) == "unknown_signer"


def test_signature_by_another_key_under_the_real_key_id_is_bad_signature(seal, make_msg) -> None:
    forged = sealed_up(seal, make_msg)
    seal_ext = dict(forged.header.ext["seal"])
    seal_ext["sig"] = base64.b64encode(Ed25519PrivateKey.generate().sign(b"whatever")).decode()
    assert rejected(seal("agg"), with_header(forged, ext={"seal": seal_ext})) == "bad_signature"


def test_sender_not_in_directory_is_unknown_signer(seal, make_msg) -> None:
    msg = sealed_up(seal, make_msg)
    assert rejected(seal("agg"), with_header(msg, sender="mallory")) == "unknown_signer"


def test_missing_seal_is_rejected(seal, make_msg) -> None:
    assert rejected(seal("agg"), make_msg(UP_HSI, "hsi", b"plain")) == "unsealed"


# ------------------------------------------------------------------ tampering in transit


@pytest.mark.parametrize("where", [0, 20, -1])
def test_flipped_payload_byte_is_rejected(seal, make_msg, where: int) -> None:
    msg = sealed_up(seal, make_msg, features())
    body = bytearray(msg.payload)
    body[where] ^= 0x01
    assert rejected(seal("agg"), Message(msg.topic, msg.header, bytes(body))) == "bad_signature"


@pytest.mark.parametrize("field,value", [("round", 4), ("step", 8), ("seq", 2), ("content_type", "weights"),
                                         ("timestamp", None)])
def test_changed_header_field_is_rejected(seal, make_msg, field: str, value) -> None:
    msg = sealed_up(seal, make_msg)
    if value is None:
        value = msg.header.timestamp + 1e-3
    assert rejected(seal("agg"), with_header(msg, **{field: value})) == "bad_signature"


def test_changed_covered_ext_is_rejected(seal, make_msg) -> None:
    msg = sealed_up(seal, make_msg, compress={"alg": "zstd"})
    ext = {**msg.header.ext, "compress": {"alg": "none"}}
    assert rejected(seal("agg"), with_header(msg, ext=ext)) == "bad_signature"


def test_flipped_byte_in_seal_nonce_is_rejected(seal, make_msg) -> None:
    msg = sealed_up(seal, make_msg)
    s = dict(msg.header.ext["seal"])
    nonce = bytearray(base64.b64decode(s["nonce"]))
    nonce[0] ^= 1
    s["nonce"] = base64.b64encode(bytes(nonce)).decode()
    assert rejected(seal("agg"), with_header(msg, ext={"seal": s})) == "bad_signature"


# ------------------------------------------------------------------ roles, topics, jobs, time


def test_client_on_another_clients_uplink_is_wrong_topic(seal, make_msg) -> None:
    # hsi's own filter refuses to do it ...
    with pytest.raises(SealError):
        seal("hsi").outbound(make_msg(UP_LIDAR, "hsi", b"pretending to be lidar"))
    # ... and a hand-made message (validly signed for hsi's topic, republished on lidar's) is refused.
    msg = sealed_up(seal, make_msg)
    assert rejected(seal("agg"), Message(UP_LIDAR, msg.header, msg.payload)) == "wrong_topic"


def test_client_claiming_another_name_on_that_names_topic_fails(seal, make_msg) -> None:
    msg = sealed_up(seal, make_msg)
    assert rejected(seal("agg"), Message(UP_LIDAR, dataclasses.replace(msg.header, sender="lidar"),
                                         msg.payload)) == "unknown_signer"


def test_downlink_from_a_client_is_wrong_topic(seal, make_msg) -> None:
    msg = sealed_up(seal, make_msg)
    assert rejected(seal("hsi"), Message(DOWN_HSI, msg.header, msg.payload)) == "wrong_topic"
    assert rejected(seal("hsi"), Message(CTL, msg.header, msg.payload)) == "wrong_topic"


def test_message_for_another_job_is_rejected(other_job, seal, make_msg) -> None:
    j2 = SealFilter("j2", load_party(other_job, "hsi"), load_directory(other_job))
    [msg] = j2.outbound(make_msg("feddiff/j2/up/hsi", "hsi", b"job two", job="j2"))
    assert rejected(seal("agg"), msg) == "wrong_job"
    assert rejected(seal("agg"), Message(UP_HSI, msg.header, msg.payload)) == "wrong_job"


def test_filter_refuses_keys_of_another_job(other_job, directory) -> None:
    with pytest.raises(FedDiffError, match="'j2'.*'j1'|'j1'.*'j2'"):
        SealFilter("j1", load_party(other_job, "hsi"), directory)


def test_old_message_is_stale(seal, make_msg) -> None:
    msg = sealed_up(seal, make_msg)
    later = seal("agg", max_age_s=60, clock=lambda: time.time() + 3600)
    assert rejected(later, msg) == "stale"


# ------------------------------------------------------------------ eavesdroppers


def test_sealed_payload_does_not_contain_the_plaintext(seal, make_msg) -> None:
    plain = features()
    msg = sealed_up(seal, make_msg, plain)
    assert plain not in msg.payload
    for row in range(0, 16, 5):  # no single sample leaks either
        assert plain[row * 2048:(row + 1) * 2048] not in msg.payload
    assert plain[:64] not in repr(msg.header).encode()


def test_decrypting_with_the_wrong_partys_key_fails(seal, make_msg, keys) -> None:
    [down] = seal("agg").outbound(make_msg(DOWN_HSI, "agg", b"only for hsi"))
    assert decrypt_payload(down, "j1", keys["hsi"].agree_key) == b"only for hsi"
    for wrong in (keys["lidar"].agree_key, keys["agg"].agree_key, X25519PrivateKey.generate()):
        with pytest.raises(EnvelopeError) as e:
            decrypt_payload(down, "j1", wrong)
        assert e.value.reason == "decrypt_failed"


def test_message_encrypted_to_a_rotated_key_is_decrypt_failed(job_dir, make_msg) -> None:
    old_dir = load_directory(job_dir)
    hsi = SealFilter("j1", load_party(job_dir, "hsi"), old_dir)
    [msg] = hsi.outbound(make_msg(UP_HSI, "hsi", b"to the old aggregator key"))
    issue(job_dir, "aggregator", "agg")  # rotation: the aggregator gets new keys
    agg = SealFilter("j1", load_party(job_dir, "agg"), load_directory(job_dir))
    with pytest.raises(EnvelopeError) as e:
        agg.inbound(msg)
    assert e.value.reason == "decrypt_failed"


def test_revoked_party_is_unknown_signer(job_dir, make_msg) -> None:
    from crypto.provision import revoke

    lidar = SealFilter("j1", load_party(job_dir, "lidar"), load_directory(job_dir))
    [msg] = lidar.outbound(make_msg(UP_LIDAR, "lidar", b"before revocation"))
    revoke(job_dir, "lidar")
    agg = SealFilter("j1", load_party(job_dir, "agg"), load_directory(job_dir))
    with pytest.raises(EnvelopeError) as e:
        agg.inbound(msg)
    assert e.value.reason == "unknown_signer"


def test_filter_chain_order_compress_seal_chunk_sees_whole_messages(keys, directory, make_msg) -> None:
    class Upper:
        """Stand-in for the compressor: a real, reversible transform that adds its own ext."""

        name = "compress"

        def outbound(self, m: Message) -> list[Message]:
            h = dataclasses.replace(m.header, ext={**m.header.ext, "compress": {"alg": "rev"}})
            return [Message(m.topic, h, m.payload[::-1])]

        def inbound(self, m: Message) -> Message:
            assert m.header.ext["compress"] == {"alg": "rev"}
            return Message(m.topic, m.header, m.payload[::-1])

    tx = FilterChain([Upper(), SealFilter("j1", keys["hsi"], directory)])
    rx = FilterChain([Upper(), SealFilter("j1", keys["agg"], directory)])
    payload = features()
    [wire] = tx.outbound(make_msg(UP_HSI, "hsi", payload))
    assert rx.inbound(wire).payload == payload


# ------------------------------------------------------------------ cost of the payload path


class _CountingSha256:
    """hashlib.sha256 that remembers the size of every byte string it was given."""

    def __init__(self, real) -> None:
        self.real, self.sizes = real, []

    def __call__(self, data=b""):
        self.sizes.append(len(data))
        return self.real(data)


@pytest.mark.parametrize("topic", [CTL, UP_HSI], ids=["signed broadcast", "encrypted uplink"])
def test_each_byte_string_of_the_payload_path_is_hashed_once(seal, make_msg, monkeypatch, topic) -> None:
    import hashlib

    import feddiff.protocol.message as message_module
    from feddiff.protocol.envelope import pack, unpack

    sender, receiver = ("agg", "hsi") if topic == CTL else ("hsi", "agg")
    payload = features()
    counter = _CountingSha256(hashlib.sha256)
    monkeypatch.setattr(message_module.hashlib, "sha256", counter)
    [sealed] = seal(sender).outbound(make_msg(topic, sender, payload))
    wire = pack(sealed)
    n_sent = len(counter.sizes)
    got = seal(receiver).inbound(unpack(topic, wire, 10**8))
    # key ids and key derivation hash a few dozen bytes; the payload path is what is counted
    sent = [n for n in counter.sizes[:n_sent] if n >= len(payload)]
    received = [n for n in counter.sizes[n_sent:] if n >= len(payload)]
    assert got.payload == payload
    # a signed payload travels as it is: one digest serves the seal and the envelope; an
    # encrypted one has two byte strings (plaintext, ciphertext), each hashed once
    expected = 1 if topic == CTL else 2
    assert len(sent) == expected, f"sender hashed {sent}"
    assert len(received) == expected, f"receiver hashed {received}"
