"""Provisioning: secrets are private, the directory is authentic, jobs do not mix."""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from crypto import keys_cli
from crypto.broker_conf import topic_rules
from crypto.directory import Directory, load_directory, sign_directory
from crypto.keys import KeyMaterialError, b64e, load_party, raw_public
from crypto.provision import init_job, issue, revoke
from feddiff.errors import FedDiffError

SECRETS = ["root/root_sign.key", "root/ca.key", "broker/broker.key", "broker/passwd"] + [
    f"parties/{p}/{f}" for p in ("agg", "hsi", "lidar", "lab") for f in ("sign.key", "agree.key", "tls.key", "mqtt_password")
]


def mode(p: Path) -> int:
    return stat.S_IMODE(p.stat().st_mode)


def test_every_secret_file_is_owner_only(job_dir: Path) -> None:
    for rel in SECRETS:
        assert mode(job_dir / rel) == 0o600, rel
    assert mode(job_dir / "root") == 0o700
    assert mode(job_dir / "parties" / "hsi") == 0o700


def test_layout_matches_the_documented_one(job_dir: Path) -> None:
    for rel in ["job.json", "directory.json", "directory.json.sig", "ca.crt", "broker/broker.crt",
                "broker/mosquitto.conf", "broker/acl", "parties/hsi/tls.crt"]:
        assert (job_dir / rel).is_file(), rel


def test_directory_lists_every_party_and_its_signature_verifies(job_dir: Path) -> None:
    d = load_directory(job_dir)
    assert d.job == "j1"
    assert {n: p.role for n, p in d.parties.items()} == {"agg": "aggregator", "hsi": "edge", "lidar": "edge", "lab": "labels"}
    hsi = load_party(job_dir, "hsi")
    assert d.parties["hsi"].sign_public == hsi.sign_public
    assert d.parties["hsi"].agree_public == hsi.agree_public


def test_tampered_directory_is_detected(job_dir: Path) -> None:
    raw = json.loads((job_dir / "directory.json").read_text())
    # The broker operator tries to slip in its own key for 'hsi'.
    raw["parties"][1]["sign_public"] = b64e(raw_public(Ed25519PrivateKey.generate().public_key()))
    (job_dir / "directory.json").write_text(json.dumps(raw, sort_keys=True, indent=1) + "\n")
    with pytest.raises(KeyMaterialError, match="signature does not verify"):
        load_directory(job_dir)


def test_one_flipped_byte_in_directory_is_detected(job_dir: Path) -> None:
    raw = bytearray((job_dir / "directory.json").read_bytes())
    raw[len(raw) // 2] ^= 0x01
    (job_dir / "directory.json").write_bytes(bytes(raw))
    with pytest.raises(KeyMaterialError):
        load_directory(job_dir)


def test_directory_resigned_by_an_attacker_root_fails_against_the_pinned_root(job_dir: Path) -> None:
    honest_root = base64.b64decode((job_dir / "parties/hsi/root.pub").read_text())
    evil = Ed25519PrivateKey.generate()
    d = load_directory(job_dir)
    raw, sig = sign_directory(Directory(d.job, d.serial + 1, {}), evil)
    (job_dir / "directory.json").write_bytes(raw)
    (job_dir / "directory.json.sig").write_bytes(sig)
    meta = json.loads((job_dir / "job.json").read_text())
    meta["root_sign_public"] = b64e(raw_public(evil.public_key()))
    (job_dir / "job.json").write_text(json.dumps(meta))
    with pytest.raises(KeyMaterialError, match="signature does not verify"):
        load_directory(job_dir, root_public=honest_root)
    with pytest.raises(KeyMaterialError, match="swapped root"):
        load_party(job_dir, "hsi")


def test_keys_of_another_job_are_refused_naming_both_jobs(job_dir: Path, other_job: Path) -> None:
    import shutil

    shutil.rmtree(job_dir / "parties/hsi")
    shutil.copytree(other_job / "parties/hsi", job_dir / "parties/hsi")
    with pytest.raises(FedDiffError) as e:
        load_party(job_dir, "hsi")
    msg = str(e.value)
    assert "'j1'" in msg and "'j2'" in msg and "\n" not in msg


def test_cli_issue_into_another_jobs_directory_names_both_jobs(job_dir: Path) -> None:
    args = argparse.Namespace(keys_cmd="issue", job="j2", out=None, broker_host=None, dir=job_dir, role="edge", id="x")
    with pytest.raises(FedDiffError) as e:
        keys_cli.run(args)
    assert "'j1'" in str(e.value) and "'j2'" in str(e.value)


def test_init_refuses_to_overwrite_another_job(job_dir: Path) -> None:
    with pytest.raises(FedDiffError, match="'j1'.*'j9'|'j9'.*'j1'"):
        init_job("j9", job_dir)


def test_cli_init_and_issue(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "cli"
    assert keys_cli.run(argparse.Namespace(keys_cmd="init", job="demo", out=out, broker_host="broker.example",
                                           dir=None, role=None, id=None)) == 0
    assert keys_cli.run(argparse.Namespace(keys_cmd="issue", job=None, out=None, broker_host=None,
                                           dir=out, role="edge", id="hsi")) == 0
    assert set(load_directory(out).parties) == {"hsi"}
    password = (out / "parties/hsi/mqtt_password").read_text().strip()
    printed = capsys.readouterr()
    assert password not in printed.out + printed.err
    cert = x509.load_pem_x509_certificate((out / "broker/broker.crt").read_bytes())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "broker.example" in san.get_values_for_type(x509.DNSName)
    assert "localhost" in san.get_values_for_type(x509.DNSName)
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]


@pytest.mark.parametrize("name", ["a/b", "+", "#", "x y", "a:b", "", "ok\nuser evil"])
def test_names_that_could_widen_an_acl_are_rejected(job_dir: Path, name: str) -> None:
    with pytest.raises(FedDiffError):
        issue(job_dir, "edge", name)


def test_second_aggregator_is_refused(job_dir: Path) -> None:
    with pytest.raises(FedDiffError, match="already has aggregator"):
        issue(job_dir, "aggregator", "agg2")


def test_passwd_holds_mosquitto_pbkdf2_hashes_of_each_party_password(job_dir: Path) -> None:
    lines = dict(line.split(":", 1) for line in (job_dir / "broker/passwd").read_text().splitlines())
    assert set(lines) == {"agg", "hsi", "lidar", "lab"}
    _, seven, iters, salt, digest = lines["hsi"].split("$")
    pw = (job_dir / "parties/hsi/mqtt_password").read_text().strip()
    assert seven == "7"
    assert hashlib.pbkdf2_hmac("sha512", pw.encode(), base64.b64decode(salt), int(iters)) == base64.b64decode(digest)
    assert pw not in (job_dir / "broker/passwd").read_text()


def test_acl_gives_an_edge_only_its_own_topics(job_dir: Path) -> None:
    acl = (job_dir / "broker/acl").read_text()
    block = acl.split("user hsi\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert sorted(block) == sorted(f"topic {a} {t}" for a, t in topic_rules("j1", "hsi", "edge"))
    assert sorted(block) == sorted([
        "topic write feddiff/j1/up/hsi", "topic write feddiff/j1/presence/hsi",
        "topic read feddiff/j1/down/hsi", "topic read feddiff/j1/ctl"])
    conf = (job_dir / "broker/mosquitto.conf").read_text()
    for line in ["require_certificate true", "use_identity_as_username false", "allow_anonymous false"]:
        assert line in conf.splitlines()


def test_revoke_removes_party_from_directory_passwd_and_acl(job_dir: Path) -> None:
    before = load_directory(job_dir).serial
    revoke(job_dir, "lidar")
    d = load_directory(job_dir)
    assert "lidar" not in d.parties and d.serial == before + 1
    assert "lidar" not in (job_dir / "broker/passwd").read_text()
    assert "lidar" not in (job_dir / "broker/acl").read_text()
    assert not (job_dir / "parties/lidar").exists()


def test_reissue_rotates_keys_and_bumps_serial(job_dir: Path) -> None:
    old = load_party(job_dir, "hsi")
    serial = load_directory(job_dir).serial
    issue(job_dir, "edge", "hsi")
    new = load_party(job_dir, "hsi")
    d = load_directory(job_dir)
    assert new.sign_public != old.sign_public and d.parties["hsi"].sign_public == new.sign_public
    assert d.serial == serial + 1


def test_party_keys_repr_has_no_secret(job_dir: Path) -> None:
    hsi = load_party(job_dir, "hsi")
    text = repr(hsi)
    assert "sign_key" not in text and "agree_key" not in text
    assert hsi.mqtt_password() not in text
