"""The job's signed directory: who the parties are (role, signing and agreement keys, TLS
certificate fingerprint), signed by the offline root. Every party verifies it against the root
key pinned in its own bundle before trusting a name.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from crypto.keys import (
    DIRECTORY_FILE,
    DIRECTORY_SIG_FILE,
    DIRECTORY_VERSION,
    ROLES,
    KeyMaterialError,
    read_key_file,
    b64d,
    b64e,
    check_name,
    job_of,
    key_id,
    root_public_of,
)


@dataclass(frozen=True)
class PartyInfo:
    """What everyone may know about a party: its name, role and public keys."""

    name: str
    role: str
    sign_public: bytes
    agree_public: bytes
    tls_cert_sha256: str = ""

    @property
    def kid(self) -> str:
        return key_id(self.sign_public)

    def verify_key(self) -> Ed25519PublicKey:
        return Ed25519PublicKey.from_public_bytes(self.sign_public)

    def agree_key(self) -> X25519PublicKey:
        return X25519PublicKey.from_public_bytes(self.agree_public)

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "role": self.role,
            "sign_public": b64e(self.sign_public),
            "agree_public": b64e(self.agree_public),
            "tls_cert_sha256": self.tls_cert_sha256,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "PartyInfo":
        info = cls(
            name=check_name("party", d["name"]),
            role=d["role"],
            sign_public=b64d(d["sign_public"]),
            agree_public=b64d(d["agree_public"]),
            tls_cert_sha256=str(d.get("tls_cert_sha256", "")),
        )
        if info.role not in ROLES or len(info.sign_public) != 32 or len(info.agree_public) != 32:
            raise ValueError(f"bad entry for {info.name}")
        return info


@dataclass(frozen=True)
class Directory:
    """The root-signed list of parties of one job. Immutable: a new serial means a new file."""

    job: str
    serial: int
    parties: dict[str, PartyInfo]

    def get(self, name: str) -> Optional[PartyInfo]:
        return self.parties.get(name) if isinstance(name, str) else None

    def aggregator(self) -> Optional[PartyInfo]:
        aggs = [p for p in self.parties.values() if p.role == "aggregator"]
        return aggs[0] if len(aggs) == 1 else None

    def to_bytes(self) -> bytes:
        body = {
            "version": DIRECTORY_VERSION,
            "job": self.job,
            "serial": self.serial,
            "parties": [self.parties[n].to_dict() for n in sorted(self.parties)],
        }
        return json.dumps(body, sort_keys=True, indent=1).encode() + b"\n"

    @classmethod
    def from_bytes(cls, raw: bytes) -> "Directory":
        d = json.loads(raw)
        if d.get("version") != DIRECTORY_VERSION:
            raise ValueError("unsupported directory version")
        parties = {}
        for entry in d["parties"]:
            info = PartyInfo.from_dict(entry)
            if info.name in parties:
                raise ValueError(f"duplicate party {info.name}")
            parties[info.name] = info
        serial = d["serial"]
        if not isinstance(serial, int):
            raise ValueError("serial must be an integer")
        return cls(job=check_name("job", d["job"]), serial=serial, parties=parties)


def sign_directory(directory: Directory, root_key: Ed25519PrivateKey) -> tuple[bytes, bytes]:
    """Return (file bytes, signature file bytes). The signature covers the exact file bytes, so
    verification needs no re-serialisation that could differ between versions."""
    raw = directory.to_bytes()
    sig = root_key.sign(b"feddiff-directory-v1\0" + raw)
    return raw, (b64e(sig) + "\n").encode()


def load_directory(dir: Path, root_public: Optional[bytes] = None) -> Directory:
    """Load <dir>/directory.json and verify the root signature over its exact bytes.

    ``root_public`` pins the 32-byte root Ed25519 key; without it the key in <dir>/job.json is
    used (fine where job.json reached the party through a trusted channel together with its
    secrets; whoever can rewrite job.json and directory.json together can otherwise swap roots).
    """
    dir = Path(dir)
    job = job_of(dir)
    pub = root_public if root_public is not None else root_public_of(dir)
    raw = read_key_file(dir / DIRECTORY_FILE)
    try:
        sig = b64d(read_key_file(dir / DIRECTORY_SIG_FILE).decode("ascii").strip())
        Ed25519PublicKey.from_public_bytes(pub).verify(sig, b"feddiff-directory-v1\0" + raw)
    except (InvalidSignature, ValueError, UnicodeDecodeError):
        raise KeyMaterialError(f"{dir / DIRECTORY_FILE}: root signature does not verify (tampered or wrong root key)") from None
    try:
        directory = Directory.from_bytes(raw)
    except (ValueError, KeyError, TypeError, AttributeError) as e:
        raise KeyMaterialError(f"{dir / DIRECTORY_FILE} is signed but malformed: {e}") from None
    if directory.job != job:
        raise KeyMaterialError(f"{dir / DIRECTORY_FILE} belongs to job {directory.job!r}, not job {job!r}")
    return directory


# ----------------------------------------------------------------------------- one party's keys
