"""Issue #18 item 9: a secret key file others can read is refused (one line naming the file,
exit 2), not merely warned about: a key another local user could have copied is not secret."""

from __future__ import annotations

import subprocess
import sys

import pytest

from crypto.keys import KeyMaterialError, load_party

pytestmark = pytest.mark.security

SECRETS = ["sign.key", "agree.key", "tls.key", "mqtt_password"]


@pytest.mark.parametrize("secret", SECRETS)
@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644])
def test_loading_a_party_with_a_readable_secret_is_refused(job, secret, mode):
    path = job / "parties" / "hsi" / secret
    path.chmod(mode)
    with pytest.raises(KeyMaterialError) as err:
        load_party(job, "hsi")
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_the_keys_cli_exits_2_with_one_line_naming_the_file(job):
    path = job / "parties" / "lidar" / "sign.key"
    path.chmod(0o644)
    r = subprocess.run([sys.executable, "-m", "feddiff_app.cli", "keys", "check", "--dir", str(job), "--id", "lidar"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and str(path) in lines[0], r.stderr


def test_a_bundle_with_0600_secrets_passes_the_check(job):
    r = subprocess.run([sys.executable, "-m", "feddiff_app.cli", "keys", "check", "--dir", str(job), "--id", "lidar"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr


def test_a_readable_he_group_secret_is_refused(job):
    from crypto.he_groups import load_group_secret, provision_group
    from crypto.provision import issue

    issue(job, "edge", "hsi_b")
    provision_group(job, "hsi", ["hsi", "hsi_b"])
    path = job / "parties" / "hsi" / "he_group_hsi.ctx"
    path.chmod(0o644)
    with pytest.raises(KeyMaterialError) as err:
        load_group_secret(job, "hsi", "hsi")
    assert str(path) in str(err.value)
