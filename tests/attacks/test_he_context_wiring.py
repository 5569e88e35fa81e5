"""Issue #18 item 1 (role side): the station code that takes the CKKS context from the
aggregator's JOB encrypts only under the label holder's signed context.

The attacker is the aggregator: it relays the label holder's context to the stations in JOB and
would decrypt every station's features if a context it made itself were accepted. The victim is
the real station uplink (``edge_client.uplink.HeUplink.join``, what ``on_job`` calls) with the
job's provisioned keys; the holder side is the real ``label_holder.holder.holder_context``."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import yaml

from crypto import he
from crypto.he_context import bundle_context, sign_public_context, unbundle_context
from crypto.keys import load_party
from edge_client.uplink import HeUplink, Part
from feddiff.config import load_config
from feddiff.protocol.messages import Job
from label_holder.holder import holder_context

pytestmark = pytest.mark.security

DIM = 8


@pytest.fixture
def cfg(job, tmp_path):
    doc = {
        "name": "j1",
        "scene": {"synthetic": {"seed": 1, "rows": 16, "cols": 16, "bands": 6, "train_per_class": 5}},
        "model": {"he_dim": DIM},
        "federation": {"job": "j1", "security": "he", "label_holder": "lab", "keys_dir": str(job),
                       "clients": {"hsi": {"modalities": ["hsi"]}, "lidar": {"modalities": ["lidar"]}}},
    }
    path = tmp_path / "job.yaml"
    path.write_text(yaml.safe_dump(doc))
    return load_config(path)


def features(up: HeUplink, n: int = 3):
    x = torch.linspace(-1, 1, n * 4).reshape(n, 4)
    return up.features({"hsi": Part(x, None, x)}, n)


def test_the_holders_signed_context_is_accepted_and_survives_its_restart(cfg):
    secret, blob = holder_context(cfg, "lab")
    secret2, blob2 = holder_context(cfg, "lab")  # a restarted holder: same key, same context
    assert blob2 == blob
    up = HeUplink(cfg, "hsi", {"hsi": 4})
    up.join(Job(0, None, blob))
    enc, _ = features(up)
    got = he.decrypt_batch(secret2, enc.cts, enc.shape)
    assert got.shape == (3, DIM) and np.all(np.isfinite(got)) and np.abs(got).max() < 100


@pytest.mark.parametrize("how", ["raw context, as relayed before", "the holder's signature on it", "the aggregator's own signature"])
def test_a_context_substituted_by_the_aggregator_is_refused_by_the_station(cfg, job, how):
    _, genuine = holder_context(cfg, "lab")
    mine = he.make_secret_context()  # the aggregator keeps this secret
    forged = he.public_bytes(mine)
    _, genuine_sig = unbundle_context(genuine)
    blob = {
        "raw context, as relayed before": forged,
        "the holder's signature on it": bundle_context(forged, genuine_sig),
        "the aggregator's own signature": bundle_context(forged, sign_public_context(load_party(job, "agg"), forged)),
    }[how]
    up = HeUplink(cfg, "hsi", {"hsi": 4})
    with pytest.raises(he.HEError) as err:
        up.join(Job(0, None, blob))
    assert "\n" not in str(err.value)
    assert up.public_ctx is None
    with pytest.raises(he.HEError):  # and nothing is encrypted for the aggregator to read
        features(up)
