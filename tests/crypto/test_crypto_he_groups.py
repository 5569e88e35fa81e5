"""Horizontal HE averaging: per-group CKKS keys, FedAvg as a ciphertext sum the aggregator cannot read.

Real provisioning (``feddiff keys he-group`` on a real job directory) and real TenSEAL, no mocks.
"""

from __future__ import annotations

import numpy as np
import pytest
import tenseal as ts

from crypto import he, he_groups
from feddiff_app import cli
from crypto.keys import KeyMaterialError
from crypto.provision import issue


@pytest.fixture
def group_job(job_dir):
    """The shared job plus a second hsi station, and the hsi group key for both."""
    issue(job_dir, "edge", "hsi2")
    he_groups.provision_group(job_dir, "hsi", ["hsi", "hsi2"])
    return job_dir


def _fake_branch(rng: np.random.Generator) -> dict[str, np.ndarray]:
    return {
        "conv.weight": (rng.standard_normal((16, 12, 3, 3)) * 0.2).astype(np.float32),
        "conv.bias": rng.standard_normal(16).astype(np.float32),
        "proj.weight": (rng.standard_normal((16, 300)) * 0.05).astype(np.float32),
        "norm.steps": np.array(int(rng.integers(0, 100)), dtype=np.int64),
    }


def test_group_secret_goes_to_members_only_and_is_0600(group_job) -> None:
    for member in ("hsi", "hsi2"):
        path = he_groups.secret_path(group_job, member, "hsi")
        assert path.stat().st_mode & 0o777 == 0o600
        assert he_groups.load_group_secret(group_job, member, "hsi").is_private()
    assert he_groups.secret_path(group_job, "hsi", "hsi").read_bytes() == he_groups.secret_path(group_job, "hsi2", "hsi").read_bytes()
    for outsider in ("agg", "lidar", "lab"):  # aggregator, another modality's station, label holder
        assert not list((group_job / "parties" / outsider).glob("*.ctx"))
        with pytest.raises(KeyMaterialError, match="missing"):
            he_groups.load_group_secret(group_job, outsider, "hsi")
    public = he_groups.load_group_public(group_job, "agg", "hsi")
    assert not public.is_private() and not public.has_secret_key() and not public.has_galois_keys()


def test_a_secret_context_is_refused_where_the_aggregator_expects_a_public_one(group_job) -> None:
    he_groups.public_path(group_job, "agg", "hsi").write_bytes(he_groups.secret_path(group_job, "hsi", "hsi").read_bytes())
    with pytest.raises(he.HEError, match="secret key"):
        he_groups.load_group_public(group_job, "agg", "hsi")


def test_ckks_fedavg_equals_plaintext_fedavg(group_job) -> None:
    """(a) Each member encrypts w_i * n_i / N; the aggregator only adds; a member decrypts."""
    rng = np.random.default_rng(7)
    states = [_fake_branch(rng) for _ in range(3)]
    samples = [120, 45, 300]
    total = sum(samples)
    secret = he_groups.load_group_secret(group_job, "hsi", "hsi")
    public = he_groups.load_group_public(group_job, "agg", "hsi")
    shares, layout = [], None
    for state, n in zip(states, samples):
        flat, layout = he_groups.flatten(state)
        shares.append(he_groups.encrypt_share(secret, flat, n, total))
    summed = he_groups.sum_shares(public, shares)
    got = he_groups.decrypt_average(secret, summed, layout)
    for k in states[0]:
        want = sum(s[k].astype(np.float64) * (n / total) for s, n in zip(states, samples))
        assert got[k].dtype == states[0][k].dtype and got[k].shape == states[0][k].shape
        if np.issubdtype(states[0][k].dtype, np.integer):
            assert got[k] == np.rint(want)
        else:
            np.testing.assert_allclose(got[k], want, atol=1e-5, rtol=0)


def test_aggregator_and_eavesdropper_cannot_decrypt_shares_or_sum(group_job) -> None:
    """(c) The public context (all the aggregator holds) adds but does not decrypt."""
    secret = he_groups.load_group_secret(group_job, "hsi2", "hsi")
    public = he_groups.load_group_public(group_job, "agg", "hsi")
    flat, layout = he_groups.flatten(_fake_branch(np.random.default_rng(8)))
    share = he_groups.encrypt_share(secret, flat, 1, 2)
    summed = he_groups.sum_shares(public, [share, share])
    for cts in (share, summed):
        with pytest.raises(ValueError, match="secret"):
            ts.ckks_vector_from(public, cts[0]).decrypt()
        with pytest.raises(he.HEError):
            he_groups.decrypt_average(public, cts, layout)
        assert np.asarray(flat[:64], dtype=np.float64).tobytes() not in b"".join(cts)


def test_another_groups_key_does_not_decrypt_to_the_weights(group_job) -> None:
    issue(group_job, "edge", "lidar2")
    he_groups.provision_group(group_job, "lidar", ["lidar", "lidar2"])
    flat, layout = he_groups.flatten(_fake_branch(np.random.default_rng(9)))
    cts = he_groups.encrypt_share(he_groups.load_group_secret(group_job, "hsi", "hsi"), flat, 1, 1)
    wrong = he.decrypt_vector(he_groups.load_group_secret(group_job, "lidar", "lidar"), cts)
    assert not np.allclose(wrong[: flat.size], flat, atol=1e-2)


@pytest.mark.parametrize(
    ("members", "match"),
    [(["hsi"], "at least two"), (["hsi", "ghost"], "not in the directory"), (["hsi", "lab"], "only edge"), (["hsi", "bad/name"], "invalid party name")],
)
def test_bad_groups_are_refused_in_one_line(job_dir, members, match) -> None:
    with pytest.raises(KeyMaterialError, match=match) as exc:
        he_groups.provision_group(job_dir, "hsi", members)
    assert "\n" not in str(exc.value)


def test_keys_cli_he_group(job_dir, capsys) -> None:
    issue(job_dir, "edge", "hsi2")
    assert cli.main(["keys", "he-group", "--dir", str(job_dir), "--group", "hsi", "--members", "hsi,hsi2"]) == 0
    assert "public context for agg" in capsys.readouterr().out
    assert he_groups.secret_path(job_dir, "hsi2", "hsi").exists()
    assert cli.main(["keys", "he-group", "--dir", str(job_dir), "--group", "hsi", "--members", "hsi"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("feddiff keys: error: ") and err.count("\n") == 1


def test_main_cli_knows_he_group() -> None:
    from feddiff_app.cli import build_parser

    args = build_parser().parse_args(["keys", "he-group", "--dir", "D", "--group", "hsi", "--members", "a,b"])
    assert (args.keys_cmd, args.group, args.members) == ("he-group", "hsi", "a,b")


def test_each_party_loads_exactly_the_group_keys_its_job_needs(job_dir) -> None:
    from feddiff.config import config_from_dict

    issue(job_dir, "edge", "hsi2")
    clients = {"hsi": {"modalities": ["hsi"]}, "hsi2": {"modalities": ["hsi"]}, "lidar": {"modalities": ["lidar"]}}
    cfg = config_from_dict({"scene": {"synthetic": {"seed": 1, "rows": 16, "cols": 16, "bands": 4}},
                            "federation": {"security": "he", "label_holder": "lab", "keys_dir": str(job_dir), "clients": clients}})
    with pytest.raises(KeyMaterialError, match="he_group_hsi.ctx missing"):
        he_groups.member_contexts(cfg, "hsi")
    he_groups.provision_group(job_dir, "hsi", ["hsi", "hsi2"])
    assert set(he_groups.member_contexts(cfg, "hsi2")) == {"hsi"}
    assert he_groups.member_contexts(cfg, "lidar") == {}  # alone in its modality: nothing to average
    public = he_groups.aggregator_contexts(cfg, "agg")
    assert set(public) == {"hsi"} and not public["hsi"].is_private()
