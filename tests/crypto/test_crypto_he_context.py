"""Provisioning of the HE label holder's context (crypto.provision.provision_he_holder)."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from crypto import he
from crypto.he_context import HOLDER_PUBLIC, HOLDER_SECRET, HOLDER_SIG, holder_secret_context, verify_public_context
from crypto.directory import load_directory
from crypto.keys import KeyMaterialError
from crypto.provision import provision_he_holder


def test_provisioning_twice_keeps_the_key_and_its_signature_verifies(job_dir):
    pdir = provision_he_holder(job_dir, "lab")
    first = (pdir / HOLDER_SECRET).read_bytes()
    provision_he_holder(job_dir, "lab")
    assert (pdir / HOLDER_SECRET).read_bytes() == first
    assert (pdir / HOLDER_SECRET).stat().st_mode & 0o777 == 0o600 and pdir.stat().st_mode & 0o777 == 0o700
    ctx = verify_public_context(load_directory(job_dir), "lab", (pdir / HOLDER_PUBLIC).read_bytes(), (pdir / HOLDER_SIG).read_text())
    x = np.full((2, 4), 0.25)
    assert np.abs(he.decrypt_batch(holder_secret_context(pdir), he.encrypt_batch(ctx, x), (2, 4)) - x).max() < 1e-3


@pytest.mark.parametrize("party", ["agg", "hsi"])
def test_only_a_labels_party_can_hold_the_he_key(job_dir, party):
    with pytest.raises(KeyMaterialError) as err:
        provision_he_holder(job_dir, party)
    assert party in str(err.value)
    assert not (job_dir / "parties" / party / HOLDER_SECRET).exists()


def test_the_secret_never_lands_outside_the_holders_bundle(job_dir):
    provision_he_holder(job_dir, "lab")
    found = sorted(p.relative_to(job_dir).as_posix() for p in job_dir.rglob(HOLDER_SECRET))
    assert found == ["parties/lab/he_secret.ctx"]


def test_keys_cli_he_holder(job_dir):
    r = subprocess.run([sys.executable, "-m", "feddiff_app.cli", "keys", "he-holder", "--dir", str(job_dir), "--id", "lab"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert (job_dir / "parties" / "lab" / HOLDER_SIG).exists()
    r = subprocess.run([sys.executable, "-m", "feddiff_app.cli", "keys", "he-holder", "--dir", str(job_dir), "--id", "hsi"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1
