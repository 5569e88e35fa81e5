"""Issue #18 item 1 (single contributor): in HE mode the label holder decrypts the per-sample
sum of the stations' features; where one station is the only contributor, that sum is its
features. The real aggregator HE fusion refuses such a batch unless the operator set
``federation.he_allow_single_contributor``."""

from __future__ import annotations

import numpy as np
import pytest
import yaml

from aggregator.fusion.he import HeThirdParty
from aggregator.link import Link
from aggregator.status import StatusBoard
from crypto import he
from feddiff.config import load_config
from feddiff.protocol import topics
from feddiff.protocol.endpoint import open_channel

pytestmark = pytest.mark.security


def fusion(tmp_path, port, job, allow):
    doc = {"name": "j1", "scene": {"synthetic": {"seed": 1, "rows": 16, "cols": 16, "bands": 6, "train_per_class": 5}},
           "federation": {"job": "j1", "broker": {"host": "127.0.0.1", "port": port}, "security": "he", "label_holder": "lab",
                          "keys_dir": str(job), "he_allow_single_contributor": allow,
                          "clients": {"both": {"modalities": ["hsi", "lidar"]}}}}
    (tmp_path / "job.yaml").write_text(yaml.safe_dump(doc))
    cfg = load_config(tmp_path / "job.yaml")
    channel = open_channel(cfg, "aggregator", [topics.uplink("j1", "+")], presence=False)
    return HeThirdParty(cfg, Link(cfg, channel, StatusBoard(tmp_path / "status.json", "j1", ["both"]))), channel


@pytest.mark.parametrize("allow", [False, True])
def test_one_station_with_every_modality_is_refused_unless_allowed(tmp_path, mosquitto, job, allow):
    f, channel = fusion(tmp_path, mosquitto.port, job, allow)
    try:
        batch = (np.arange(4), np.arange(4), None)
        if allow:
            assert set(f.request(1, 0, batch, True).masks) == {"both"}
        else:
            with pytest.raises(he.HEError, match="single station"):
                f.request(1, 0, batch, True)
    finally:
        channel.close()
