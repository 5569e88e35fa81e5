"""Create a job's trust root and issue, rotate or revoke the parties' keys.

Why everything hangs off one provisioning directory: the root signing key and the CA key sign
every later change (new party, rotation, revocation), and the broker's password file and ACL are
re-rendered from the signed directory each time, so the three views (who exists, who may talk to
the broker, who may publish where) cannot drift apart. In production ``<out>/root`` stays on the
offline machine that runs ``feddiff keys``; each party receives job.json, directory.json(+.sig),
ca.crt and its own ``parties/<name>/``; the broker operator receives ``broker/`` and ca.crt.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
import shutil
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

import crypto.broker_conf as broker_conf
import crypto.tls as tls
from crypto.directory import Directory, PartyInfo, load_directory, sign_directory
from crypto.keys import AGREE_KEY, CA_CERT_FILE, CA_KEY, DIRECTORY_FILE, DIRECTORY_SIG_FILE, JOB_FILE, MQTT_PASSWORD, PARTY_FILE, ROLES, ROOT_DIR, ROOT_PUB_FILE, ROOT_SIGN_KEY, SIGN_KEY, TLS_CERT, TLS_KEY, KeyMaterialError, b64e, check_name, job_of, load_private_pem, party_dir, private_pem, raw_public, read_json, write_public, write_secret

log = logging.getLogger(__name__)

BROKER_DIR = "broker"
_HOST_RE = re.compile(r"^[A-Za-z0-9.:-]{1,253}$")


def _mkdir_private(path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    path.chmod(0o700)


def _write_directory(out: Path, directory: Directory, root_key: Ed25519PrivateKey) -> None:
    raw, sig = sign_directory(directory, root_key)
    # Signature first would briefly pair a new signature with the old file; either order has a
    # window, and a reader in that window gets a clean 'does not verify' error, never bad data.
    write_public(out / DIRECTORY_FILE, raw)
    write_public(out / DIRECTORY_SIG_FILE, sig)


def _render_broker(out: Path, directory: Directory) -> None:
    """Re-render passwd, acl and mosquitto.conf for exactly the parties in ``directory``."""
    bdir = out / BROKER_DIR
    passwords = {}
    for name in directory.parties:
        pw_file = party_dir(out, name) / MQTT_PASSWORD
        try:
            passwords[name] = pw_file.read_text("ascii").strip()
        except OSError:
            raise KeyMaterialError(f"missing {pw_file}: re-issue party {name!r} to regenerate its password") from None
    write_secret(bdir / "passwd", broker_conf.render_passwd(passwords).encode())
    write_public(bdir / "acl", broker_conf.render_acl(directory).encode())
    port = int(read_json(out / JOB_FILE).get("broker_port", broker_conf.DEFAULT_PORT))
    write_public(bdir / "mosquitto.conf", broker_conf.render_conf(bdir, out / CA_CERT_FILE, port=port).encode())


def _root_key(out: Path) -> Ed25519PrivateKey:
    key = load_private_pem(out / ROOT_DIR / ROOT_SIGN_KEY, Ed25519PrivateKey)
    meta = read_json(out / JOB_FILE)
    if b64e(raw_public(key.public_key())) != meta.get("root_sign_public"):
        raise KeyMaterialError(f"{out / ROOT_DIR / ROOT_SIGN_KEY} is not the root key of job {meta.get('job')!r}")
    return key


def init_job(job: str, out: Path, broker_host: str = "127.0.0.1") -> None:
    """Create the trust root of ``job`` in ``out``: root Ed25519 key, TLS CA, broker certificate,
    an empty signed directory and the broker configuration. Refuses to overwrite an existing job."""
    check_name("job", job)
    if not isinstance(broker_host, str) or not _HOST_RE.match(broker_host):
        raise KeyMaterialError(f"invalid broker host {broker_host!r}")
    out = Path(out)
    if (out / JOB_FILE).exists():
        existing = job_of(out)
        if existing != job:
            raise KeyMaterialError(f"{out} already holds keys of job {existing!r}; refusing to initialise job {job!r} there")
        raise KeyMaterialError(f"{out} already holds job {job!r}; refusing to overwrite its root keys")
    out.mkdir(parents=True, exist_ok=True)
    _mkdir_private(out / ROOT_DIR)
    _mkdir_private(out / BROKER_DIR)

    root_key = Ed25519PrivateKey.generate()
    ca = tls.make_ca(job)
    server = tls.make_server_cert(ca, job, broker_host)

    write_secret(out / ROOT_DIR / ROOT_SIGN_KEY, private_pem(root_key))
    write_secret(out / ROOT_DIR / CA_KEY, ca.key_pem())
    write_public(out / CA_CERT_FILE, ca.cert_pem())
    write_public(out / BROKER_DIR / "broker.crt", server.cert_pem())
    write_secret(out / BROKER_DIR / "broker.key", server.key_pem())
    meta = {
        "job": job,
        "root_sign_public": b64e(raw_public(root_key.public_key())),
        "ca_cert_sha256": ca.fingerprint(),
        "broker_host": broker_host,
        "broker_port": broker_conf.DEFAULT_PORT,
        "created": int(time.time()),
    }
    write_public(out / JOB_FILE, (json.dumps(meta, indent=1, sort_keys=True) + "\n").encode())
    directory = Directory(job=job, serial=1, parties={})
    _write_directory(out, directory, root_key)
    _render_broker(out, directory)
    log.info("initialised job %s in %s (root key id %s)", job, out, meta["root_sign_public"][:8])


def issue(dir: Path, role: str, name: str, job: str | None = None) -> None:
    """Issue (or rotate, when ``name`` exists with the same role) a party's keys.

    Writes the party's Ed25519 signing key, X25519 agreement key, TLS client certificate and MQTT
    password, adds it to the signed directory with a new serial and re-renders the broker files.
    ``job``, when given, must match the job of ``dir`` (guards against mixing two jobs' keys).
    """
    dir = Path(dir)
    actual = job_of(dir)
    if job is not None and job != actual:
        raise KeyMaterialError(f"{dir} holds keys of job {actual!r}, not of job {job!r}")
    if role not in ROLES:
        raise KeyMaterialError(f"invalid role {role!r}: expected one of {', '.join(ROLES)}")
    check_name("party", name)
    root_key = _root_key(dir)
    directory = load_directory(dir)
    existing = directory.get(name)
    if existing is not None and existing.role != role:
        raise KeyMaterialError(f"party {name!r} of job {actual!r} already exists with role {existing.role!r}")
    agg = next((p for p in directory.parties.values() if p.role == "aggregator"), None)
    if role == "aggregator" and agg is not None and agg.name != name:
        raise KeyMaterialError(f"job {actual!r} already has aggregator {agg.name!r}")

    ca = tls.load_ca((dir / CA_CERT_FILE).read_bytes(), (dir / ROOT_DIR / CA_KEY).read_bytes())
    sign_key = Ed25519PrivateKey.generate()
    agree_key = X25519PrivateKey.generate()
    client = tls.make_client_cert(ca, actual, name)
    password = secrets.token_urlsafe(32)

    pdir = party_dir(dir, name)
    _mkdir_private(pdir)
    write_secret(pdir / SIGN_KEY, private_pem(sign_key))
    write_secret(pdir / AGREE_KEY, private_pem(agree_key))
    write_secret(pdir / TLS_KEY, client.key_pem())
    write_secret(pdir / MQTT_PASSWORD, (password + "\n").encode())
    write_public(pdir / TLS_CERT, client.cert_pem())
    write_public(pdir / ROOT_PUB_FILE, (read_json(dir / JOB_FILE)["root_sign_public"] + "\n").encode())
    write_public(pdir / PARTY_FILE, (json.dumps({"job": actual, "name": name, "role": role}, sort_keys=True) + "\n").encode())

    info = PartyInfo(
        name=name,
        role=role,
        sign_public=raw_public(sign_key.public_key()),
        agree_public=raw_public(agree_key.public_key()),
        tls_cert_sha256=client.fingerprint(),
    )
    parties = dict(directory.parties)
    parties[name] = info
    new_dir = Directory(job=actual, serial=directory.serial + 1, parties=parties)
    _write_directory(dir, new_dir, root_key)
    _render_broker(dir, new_dir)
    log.info("%s %s %s for job %s (key id %s, directory serial %d)",
             "rotated" if existing else "issued", role, name, actual, info.kid[:8], new_dir.serial)


def revoke(dir: Path, name: str) -> None:
    """Remove ``name`` from the directory, delete its key bundle here and re-render passwd/ACL.

    Peers that reload the directory reject the party's messages as 'unknown_signer'; the broker
    refuses its password once reloaded (SIGHUP) or restarted. Its TLS certificate stays valid
    until expiry (no CRL is published), which is why the password check is also required.
    """
    dir = Path(dir)
    root_key = _root_key(dir)
    directory = load_directory(dir)
    if directory.get(name) is None:
        raise KeyMaterialError(f"party {name!r} is not in the directory of job {directory.job!r}")
    parties = {n: p for n, p in directory.parties.items() if n != name}
    new_dir = Directory(job=directory.job, serial=directory.serial + 1, parties=parties)
    _write_directory(dir, new_dir, root_key)
    _render_broker(dir, new_dir)
    shutil.rmtree(party_dir(dir, name), ignore_errors=True)
    log.info("revoked %s from job %s (directory serial %d)", name, directory.job, new_dir.serial)


def provision_he_holder(dir: Path, name: str) -> Path:
    """Give label holder ``name`` its CKKS key for ``he`` jobs, in its bundle: the secret
    context (0600) and the public context with the holder's signature over it, which stations
    verify against the directory (``crypto.he_context.verify_public_context``). Running it
    again keeps the existing key (delete ``he_secret.ctx`` first to rotate it). Returns the
    party directory."""
    from crypto.he_context import HOLDER_ROLES, ensure_holder_context
    from crypto.keys import load_party

    me = load_party(Path(dir), name)
    if me.role not in HOLDER_ROLES:
        raise KeyMaterialError(f"party {name!r} has role {me.role!r}; the HE label holder must have role 'labels'")
    pdir = party_dir(Path(dir), name)
    ensure_holder_context(pdir, me)
    log.info("HE context of label holder %s in %s", name, pdir)
    return pdir
