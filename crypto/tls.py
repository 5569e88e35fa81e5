"""X.509 for the broker link: one CA per job, a server cert for the broker, a client cert per party.

Why TLS on top of sealed envelopes: sealing protects payloads end to end, but MQTT metadata
(topics, sizes, timing, usernames and passwords) would otherwise cross the network in clear.
Why ECDSA P-256 rather than Ed25519 certificates: every OpenSSL that Mosquitto and Python's
``ssl`` link against accepts P-256 in TLS 1.2 and 1.3; Ed25519 certificates are not universal.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 5 * 365
LEAF_DAYS = 365


@dataclass
class CertAndKey:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    def fingerprint(self) -> str:
        return hashlib.sha256(self.cert.public_bytes(serialization.Encoding.DER)).hexdigest()


def _now() -> dt.datetime:
    # Back-date a little so a peer whose clock lags by minutes still accepts a fresh cert.
    return dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=5)


def _name(cn: str, job: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, f"feddiff job {job}"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_ca(job: str) -> CertAndKey:
    """Self-signed CA that may sign leaves only (path length 0)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = _name(f"feddiff {job} CA", job)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(_now() + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True,
                          crl_sign=True, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return CertAndKey(cert, key)


def _san_entries(hosts: list[str]) -> list[x509.GeneralName]:
    out: list[x509.GeneralName] = []
    seen: set[str] = set()
    for h in hosts:
        if not h or h in seen:
            continue
        seen.add(h)
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            out.append(x509.DNSName(h))
    return out


def _leaf(ca: CertAndKey, job: str, cn: str, server: bool, hosts: list[str]) -> CertAndKey:
    key = ec.generate_private_key(ec.SECP256R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(cn, job))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(_now())
        .not_valid_after(_now() + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=True, key_cert_sign=False,
                          crl_sign=False, encipher_only=False, decipher_only=False),
            critical=True,
        )
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
    )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_san_entries(hosts)), critical=False)
    return CertAndKey(builder.sign(ca.key, hashes.SHA256()), key)


def make_server_cert(ca: CertAndKey, job: str, broker_host: str) -> CertAndKey:
    """Broker certificate valid for 127.0.0.1, localhost and ``broker_host``."""
    return _leaf(ca, job, f"feddiff {job} broker", True, ["127.0.0.1", "localhost", broker_host])


def make_client_cert(ca: CertAndKey, job: str, name: str) -> CertAndKey:
    """Client certificate whose CN is the party name (informational: identity for ACLs comes
    from the MQTT username/password, ``use_identity_as_username false``)."""
    return _leaf(ca, job, name, False, [])


def load_ca(cert_pem: bytes, key_pem: bytes) -> CertAndKey:
    cert = x509.load_pem_x509_certificate(cert_pem)
    key = serialization.load_pem_private_key(key_pem, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("CA key is not an EC key")
    return CertAndKey(cert, key)
