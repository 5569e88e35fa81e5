"""SealFilter: end-to-end encryption and signatures on every message, keyed by the directory.

Why end to end and not just TLS: the broker is run by a third party and terminates TLS, so it
sees every payload TLS protects. A sealed uplink can be read only by the aggregator and a sealed
downlink only by its client; the broadcast and presence topics are signed but not encrypted
(everyone subscribed may read them, only the aggregator / the named client may write them).

Construction (one message):
  * encrypted topics: ephemeral X25519 key ``e``; ``k = HKDF-SHA256(X25519(e, recipient),
    salt = e_pub || recipient_pub, info = "feddiff-seal-v1 " + job)``; AES-256-GCM with a random
    96-bit nonce; associated data = canonical header view + topic. A fresh ``e`` per message
    means a fresh key per message, so nonce reuse cannot happen even across restarts.
  * every topic: Ed25519 signature of the sender over canonical header view + topic + payload
    (the ciphertext when encrypted), so the aggregator can tell which party sent what and a
    party cannot re-sign another party's ciphertext under its own name (the sender's name is
    inside the associated data).

The header view covers the routing fields (job, round, step, sender, seq, content type,
version, timestamp), the ext entries present when sealing (e.g. the compressor's) and the seal
itself minus the signature. Fields written by later stages (chunk ext, envelope payload length
and hash) are deliberately outside it: they describe transport framing, they change between
the sealing and the wire, and the payload is authenticated directly. On the way in only the
covered ext entries are passed on, so inner filters see authenticated metadata only.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any, Callable, Optional

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from crypto.directory import Directory, PartyInfo
from crypto.keys import PartyKeys, b64d, b64e, canonical_json, raw_public
from crypto.primitives import derive_key, length_prefixed
from feddiff.errors import FedDiffError
from feddiff.protocol.message import EnvelopeError, Header, Message

log = logging.getLogger(__name__)

SEAL_KEY = "seal"
SEAL_VERSION = 1
MODE_ENCRYPT = "x25519-hkdf-aes256gcm"
MODE_SIGN = "sign"
_SIG_DOMAIN = b"feddiff-seal-sig-v1\0"
_AD_DOMAIN = b"feddiff-seal-ad-v1\0"
_MAX_PAYLOAD = 1 << 31


class SealError(FedDiffError):
    """Our own side asked to seal something the policy forbids (wrong sender, unknown peer)."""


@dataclasses.dataclass(frozen=True)
class Route:
    """What a topic means: its job, its kind (up/down/ctl/presence) and the client it names."""

    job: str
    kind: str
    client: str = ""


def parse_topic(topic: str) -> Optional[Route]:
    """Parse feddiff/<job>/up|down|presence/<client> or feddiff/<job>/ctl (``topics.parse_topic``); None otherwise."""
    from feddiff.protocol.topics import parse_topic as parse

    try:
        job, kind, client = parse(topic)
    except ValueError:
        return None
    return Route(job, kind, client or "")


def _view(h: Header, covered: list[str], seal_wo_sig: dict[str, Any]) -> bytes:
    return canonical_json(
        {
            "job": h.job,
            "round": h.round,
            "step": h.step,
            "sender": h.sender,
            "seq": h.seq,
            "content_type": h.content_type,
            "version": h.version,
            "timestamp": h.timestamp,
            "ext": {k: h.ext[k] for k in covered},
            "seal": seal_wo_sig,
        }
    )


def decrypt_payload(msg: Message, job: str, agree_key: X25519PrivateKey) -> bytes:
    """Open the AEAD of a sealed message with ``agree_key``; checks nothing else (callers run
    the signature and policy checks first). Raises EnvelopeError('decrypt_failed') for a wrong
    key, a modified ciphertext or a modified header/topic."""
    try:
        seal = msg.header.ext[SEAL_KEY]
        seal_wo_sig = {k: v for k, v in seal.items() if k != "sig"}
        view = _view(msg.header, seal["covered"], seal_wo_sig)
        epk = b64d(seal["epk"])
        nonce = b64d(seal["nonce"])
        shared = agree_key.exchange(X25519PublicKey.from_public_bytes(epk))
        key = derive_key(shared, epk, raw_public(agree_key.public_key()), job)
        return AESGCM(key).decrypt(nonce, bytes(msg.payload), _AD_DOMAIN + length_prefixed(view) + length_prefixed(msg.topic.encode()))
    except (InvalidTag, ValueError, TypeError, KeyError, AttributeError):
        raise EnvelopeError("decrypt_failed", f"from {getattr(msg.header, 'sender', '?')!r}") from None


class SealFilter:
    """Outbound: encrypt to the recipient and sign; inbound: verify, check policy, decrypt.

    Rejections raise ``EnvelopeError`` with a stable reason: unsealed, malformed, wrong_job,
    unknown_signer, wrong_topic, bad_signature, stale, decrypt_failed, bad_digest (the opened
    plaintext is not the one the signed seal describes). Nothing else escapes
    ``inbound``, whatever the bytes.
    """

    name = SEAL_KEY

    def __init__(
        self,
        job: str,
        me: PartyKeys,
        directory: Directory,
        max_age_s: float = 300,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if me.job != job:
            raise SealError(f"keys of party {me.name!r} belong to job {me.job!r}, not job {job!r}")
        if directory.job != job:
            raise SealError(f"directory belongs to job {directory.job!r}, not job {job!r}")
        listed = directory.get(me.name)
        if listed is None or listed.sign_public != me.sign_public or listed.agree_public != me.agree_public:
            raise SealError(f"party {me.name!r} is not in the directory of job {job!r} with these keys (rotated or revoked?)")
        self.job = job
        self.me = me
        self.directory = directory
        self.max_age_s = float(max_age_s)
        self.clock = clock

    # ------------------------------------------------------------------ policy

    def _recipient(self, route: Route) -> Optional[PartyInfo]:
        """Who must be able to read a message on ``route``; None for sign-only topics."""
        if route.kind == "up":
            return self.directory.aggregator()
        if route.kind == "down":
            return self.directory.get(route.client)
        return None

    def _allowed(self, sender: PartyInfo, route: Route) -> bool:
        """May ``sender`` publish on ``route``? Mirrors the broker ACL (crypto.broker_conf)."""
        if route.kind in ("down", "ctl"):
            return sender.role == "aggregator"
        if route.kind == "up":
            return sender.role in ("edge", "labels") and route.client == sender.name
        if route.kind == "presence":
            return route.client == sender.name
        return False

    # ------------------------------------------------------------------ outbound

    def outbound(self, msg: Message) -> list[Message]:
        h = msg.header
        route = parse_topic(msg.topic)
        me_info = self.directory.get(self.me.name)
        if route is None or route.job != self.job or h.job != self.job:
            raise SealError(f"cannot seal for topic {msg.topic!r} / job {h.job!r} as a party of job {self.job!r}")
        if h.sender != self.me.name or me_info is None or not self._allowed(me_info, route):
            raise SealError(f"party {self.me.name!r} ({self.me.role}) may not publish as {h.sender!r} on {msg.topic!r}")
        timestamp = h.timestamp if isinstance(h.timestamp, (int, float)) and h.timestamp > 0 else self.clock()
        ext = {k: v for k, v in h.ext.items() if k != SEAL_KEY}
        h = dataclasses.replace(h, timestamp=float(timestamp), ext=ext)
        covered = sorted(ext)
        seal: dict[str, Any] = {
            "v": SEAL_VERSION,
            "kid": self.me.kid,
            "covered": covered,
            "plain_len": len(msg.payload),  # what is sealed, whatever the header claimed
            "plain_sha256": msg.sha256(),
        }
        recipient = self._recipient(route)
        if route.kind in ("up", "down"):
            if recipient is None:
                raise SealError(f"no recipient in the directory of job {self.job!r} for topic {msg.topic!r}")
            eph = X25519PrivateKey.generate()
            epk = raw_public(eph.public_key())
            nonce = os.urandom(12)
            seal.update(mode=MODE_ENCRYPT, to=recipient.name, epk=b64e(epk), nonce=b64e(nonce))
            key = derive_key(eph.exchange(recipient.agree_key()), epk, recipient.agree_public, self.job)
            ad = _AD_DOMAIN + length_prefixed(_view(h, covered, seal)) + length_prefixed(msg.topic.encode())
            body = AESGCM(key).encrypt(nonce, bytes(msg.payload), ad)
        else:
            seal.update(mode=MODE_SIGN, to="")
            body = bytes(msg.payload)
        signed = _SIG_DOMAIN + length_prefixed(_view(h, covered, seal)) + length_prefixed(msg.topic.encode()) + length_prefixed(body)
        seal["sig"] = b64e(self.me.sign_key.sign(signed))
        out_h = dataclasses.replace(h, ext={**ext, SEAL_KEY: seal}, payload_len=0, payload_sha256="")
        if seal["mode"] == MODE_SIGN:
            return [msg.with_header(out_h)]  # the same bytes: pack reuses the digest just taken
        return [Message(msg.topic, out_h, body)]

    # ------------------------------------------------------------------ inbound

    def inbound(self, msg: Message) -> Optional[Message]:
        try:
            return self._inbound(msg)
        except EnvelopeError as e:
            log.warning("seal rejected message on %r: %s", getattr(msg, "topic", "?"), e.reason)
            raise
        except Exception as e:  # noqa: BLE001 - the contract: only EnvelopeError escapes
            log.warning("seal rejected malformed message: %s", type(e).__name__)
            raise EnvelopeError("malformed", type(e).__name__) from None

    def _inbound(self, msg: Message) -> Message:
        h = msg.header
        ext = h.ext
        if not isinstance(ext, dict) or not isinstance(ext.get(SEAL_KEY), dict):
            raise EnvelopeError("unsealed", "no seal in header")
        seal = ext[SEAL_KEY]
        route = parse_topic(msg.topic)
        if route is None:
            raise EnvelopeError("wrong_topic", "not a feddiff topic")
        if h.job != self.job or route.job != self.job:
            raise EnvelopeError("wrong_job", f"message for job {h.job!r} on {route.job!r}, this is job {self.job!r}")

        covered = seal.get("covered")
        sig = seal.get("sig")
        if (
            seal.get("v") != SEAL_VERSION
            or not isinstance(seal.get("kid"), str)
            or not isinstance(covered, list)
            or not all(isinstance(k, str) and k != SEAL_KEY and k in ext for k in covered)
            or not isinstance(sig, str)
            or not isinstance(msg.payload, (bytes, bytearray))
            or len(msg.payload) > _MAX_PAYLOAD
        ):
            raise EnvelopeError("malformed", "seal fields")

        sender = self.directory.get(h.sender)
        if sender is None or sender.kid != seal["kid"]:
            raise EnvelopeError("unknown_signer", f"{h.sender!r} with key {str(seal['kid'])[:8]} is not in the directory")
        if not self._allowed(sender, route):
            raise EnvelopeError("wrong_topic", f"{sender.role} {sender.name!r} may not publish on {msg.topic!r}")

        seal_wo_sig = {k: v for k, v in seal.items() if k != "sig"}
        view = _view(h, covered, seal_wo_sig)
        topic_b = msg.topic.encode()
        payload = bytes(msg.payload)
        try:
            sender.verify_key().verify(b64d(sig), _SIG_DOMAIN + length_prefixed(view) + length_prefixed(topic_b) + length_prefixed(payload))
        except (InvalidSignature, ValueError):
            raise EnvelopeError("bad_signature", f"from {sender.name!r}") from None

        ts = h.timestamp
        now = self.clock()
        if isinstance(ts, bool) or not isinstance(ts, (int, float)) or not math.isfinite(ts) or abs(now - ts) > self.max_age_s:
            raise EnvelopeError("stale", f"timestamp outside the {self.max_age_s:g}s window")

        recipient = self._recipient(route)
        mode = seal.get("mode")
        if route.kind in ("up", "down"):
            if mode != MODE_ENCRYPT:
                raise EnvelopeError("unsealed", f"payload on {route.kind}link topic is not encrypted")
            if recipient is None or seal.get("to") != recipient.name or recipient.name != self.me.name:
                raise EnvelopeError("wrong_topic", f"message on {msg.topic!r} is not addressed to {self.me.name!r}")
            opened = Message(msg.topic, h, decrypt_payload(msg, self.job, self.me.agree_key))
        elif mode == MODE_SIGN:
            opened = msg  # unpack hashed these very bytes already
        else:
            raise EnvelopeError("malformed", f"seal mode {mode!r} on {route.kind} topic")

        # the signed description must match what was opened
        if len(opened.payload) != seal.get("plain_len") or opened.sha256() != seal.get("plain_sha256"):
            raise EnvelopeError("bad_digest", f"plaintext from {sender.name!r} does not match its sealed length/sha256")
        out_h = dataclasses.replace(h, ext={k: ext[k] for k in covered}, payload_len=len(opened.payload), payload_sha256=seal["plain_sha256"])
        return opened.with_header(out_h)
