"""Key material on disk: who the parties are (the signed directory) and what one party holds.

Why a signed directory instead of trusting whatever public keys arrive with a message: the
broker is run by a third party and relays every byte, so any key it could hand out would be its
own. Each party instead checks one root signature over the full list of parties; the root
public key is the only thing that must reach a party out of band (it sits in job.json and in
every party's bundle, and a deployment may pin it explicitly).

Layout (see crypto.provision): <dir>/job.json, <dir>/directory.json(+.sig), <dir>/ca.crt,
<dir>/root/ (root secrets, offline), <dir>/broker/, <dir>/parties/<name>/.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from feddiff.errors import FedDiffError
from feddiff.state.atomic import atomic_write_bytes

log = logging.getLogger(__name__)

ROLES = ("edge", "aggregator", "labels")
DIRECTORY_VERSION = 1
_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")

JOB_FILE = "job.json"
DIRECTORY_FILE = "directory.json"
DIRECTORY_SIG_FILE = "directory.json.sig"
CA_CERT_FILE = "ca.crt"
ROOT_DIR = "root"
ROOT_SIGN_KEY = "root_sign.key"
CA_KEY = "ca.key"
PARTIES_DIR = "parties"
PARTY_FILE = "party.json"
SIGN_KEY = "sign.key"
AGREE_KEY = "agree.key"
TLS_CERT = "tls.crt"
TLS_KEY = "tls.key"
MQTT_PASSWORD = "mqtt_password"
ROOT_PUB_FILE = "root.pub"


class KeyMaterialError(FedDiffError):
    """Key material is missing, unreadable, tampered with, or belongs to another job."""


def check_name(kind: str, value: str) -> str:
    """Names end up inside MQTT topics, ACL lines and file paths; a '/', '+', '#', ':', space or
    newline there would widen an ACL or escape a directory, so only a safe alphabet passes."""
    if not isinstance(value, str) or not _NAME_RE.match(value):
        raise KeyMaterialError(
            f"invalid {kind} name {value!r}: use 1-64 characters from A-Z a-z 0-9 _ . - "
            "starting with a letter or digit"
        )
    return value


def b64e(b: bytes) -> str:
    return base64.b64encode(b).decode("ascii")


def b64d(s: str) -> bytes:
    return base64.b64decode(s.encode("ascii"), validate=True)


def key_id(sign_public_raw: bytes) -> str:
    """Short stable id of a signing key; carried in every seal so a rotated or foreign key is
    recognised as 'unknown' before any signature math is attempted."""
    return hashlib.sha256(b"feddiff-kid-v1" + sign_public_raw).hexdigest()[:32]


# ----------------------------------------------------------------------------- file helpers


def write_secret(path: Path, data: bytes) -> None:
    """Create ``path`` with mode 0600 from the first byte on (no window where it is world
    readable), atomically replacing an older version."""
    atomic_write_bytes(path, data)
    os.chmod(path, 0o600)


def write_public(path: Path, data: bytes) -> None:
    """Atomic write of a non-secret file (mode 0644)."""
    atomic_write_bytes(path, data)
    os.chmod(path, 0o644)


def check_secret_file(path: Path) -> None:
    """Refuse a secret file that group or others may read or write (one line naming it).

    Why refuse rather than warn: a key another local user could have copied is no longer
    secret, and a warning scrolls past; the owner fixes it with one ``chmod 600``."""
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        raise KeyMaterialError(f"missing key file {path}") from None
    except OSError as e:
        raise KeyMaterialError(f"cannot read {path}: {e.strerror}") from None
    if mode & 0o077:
        raise KeyMaterialError(f"secret file {path} has mode {mode:04o}; others may read it: chmod 600 it (or re-issue the party)")


def read_key_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise KeyMaterialError(f"missing key file {path}") from None
    except OSError as e:
        raise KeyMaterialError(f"cannot read {path}: {e.strerror}") from None


def read_json(path: Path) -> dict[str, Any]:
    try:
        obj = json.loads(read_key_file(path))
    except (ValueError, UnicodeDecodeError):
        raise KeyMaterialError(f"{path} is not valid JSON") from None
    if not isinstance(obj, dict):
        raise KeyMaterialError(f"{path} must hold a JSON object")
    return obj


def canonical_json(obj: Any) -> bytes:
    """One byte string per value: what gets signed must not depend on dict order or spacing
    (the envelope's definition, so key files and headers are signed the same way)."""
    from feddiff.protocol.envelope import canonical_json as canonical

    return canonical(obj)


# ----------------------------------------------------------------------------- key (de)serialisation


def private_pem(key: Ed25519PrivateKey | X25519PrivateKey | Any) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())


def raw_public(key: Ed25519PublicKey | X25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def load_private_pem(path: Path, kind: type) -> Any:
    try:
        key = serialization.load_pem_private_key(read_key_file(path), password=None)
    except (ValueError, TypeError):
        raise KeyMaterialError(f"{path} is not a PEM private key") from None
    if not isinstance(key, kind):
        raise KeyMaterialError(f"{path} holds a {type(key).__name__}, expected {kind.__name__}")
    return key


# ----------------------------------------------------------------------------- directory


def job_of(dir: Path) -> str:
    """The job a provisioning directory belongs to (from job.json)."""
    meta = read_json(Path(dir) / JOB_FILE)
    job = meta.get("job")
    if not isinstance(job, str):
        raise KeyMaterialError(f"{Path(dir) / JOB_FILE} has no job name")
    return job


def root_public_of(dir: Path) -> bytes:
    meta = read_json(Path(dir) / JOB_FILE)
    try:
        pub = b64d(meta["root_sign_public"])
    except (KeyError, ValueError, TypeError, AttributeError):
        raise KeyMaterialError(f"{Path(dir) / JOB_FILE} has no valid root_sign_public") from None
    if len(pub) != 32:
        raise KeyMaterialError(f"{Path(dir) / JOB_FILE} has no valid root_sign_public")
    return pub


@dataclass
class PartyKeys:
    """Everything one party holds. Secrets are excluded from repr so a stray log line or a
    traceback never prints them."""

    job: str
    name: str
    role: str
    sign_key: Ed25519PrivateKey = field(repr=False)
    agree_key: X25519PrivateKey = field(repr=False)
    root_public: bytes = field(repr=False)
    ca_cert: Path = Path()
    tls_cert: Path = Path()
    tls_key: Path = Path()
    mqtt_password_file: Path = Path()

    @property
    def sign_public(self) -> bytes:
        return raw_public(self.sign_key.public_key())

    @property
    def agree_public(self) -> bytes:
        return raw_public(self.agree_key.public_key())

    @property
    def kid(self) -> str:
        return key_id(self.sign_public)

    @property
    def mqtt_username(self) -> str:
        return self.name

    def mqtt_password(self) -> str:
        """Read on demand so the password is not kept in a long-lived object."""
        return read_key_file(self.mqtt_password_file).decode("ascii").strip()


def party_dir(dir: Path, name: str) -> Path:
    return Path(dir) / PARTIES_DIR / check_name("party", name)


def load_party(dir: Path, name: str) -> PartyKeys:
    """Load party ``name`` from provisioning directory ``dir``; refuse keys of another job."""
    dir = Path(dir)
    job = job_of(dir)
    pdir = party_dir(dir, name)
    meta = read_json(pdir / PARTY_FILE)
    if meta.get("job") != job:
        raise KeyMaterialError(f"keys of party {name!r} belong to job {meta.get('job')!r}, but {dir} is job {job!r}")
    if meta.get("name") != name or meta.get("role") not in ROLES:
        raise KeyMaterialError(f"{pdir / PARTY_FILE} does not describe party {name!r}")
    for secret in (SIGN_KEY, AGREE_KEY, TLS_KEY, MQTT_PASSWORD):
        check_secret_file(pdir / secret)
    try:
        root_public = b64d(read_key_file(pdir / ROOT_PUB_FILE).decode("ascii").strip())
    except (ValueError, UnicodeDecodeError):
        raise KeyMaterialError(f"{pdir / ROOT_PUB_FILE} is not a base64 key") from None
    if root_public != root_public_of(dir):
        raise KeyMaterialError(f"root key in {pdir} differs from {dir / JOB_FILE}: keys from another job or a swapped root")
    return PartyKeys(
        job=job,
        name=name,
        role=meta["role"],
        sign_key=load_private_pem(pdir / SIGN_KEY, Ed25519PrivateKey),
        agree_key=load_private_pem(pdir / AGREE_KEY, X25519PrivateKey),
        root_public=root_public,
        ca_cert=dir / CA_CERT_FILE,
        tls_cert=pdir / TLS_CERT,
        tls_key=pdir / TLS_KEY,
        mqtt_password_file=pdir / MQTT_PASSWORD,
    )
