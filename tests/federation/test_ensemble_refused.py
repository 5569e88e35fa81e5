"""A stage-2 ensemble (model.members > 1) is centralised-only: both federated roles refuse it
before they touch the broker or their state folder, in one line naming the setting."""

import pytest
import yaml

from feddiff_app.cli import main


@pytest.mark.parametrize("role", [["aggregator"], ["edge", "--id", "hsi_station"]])
def test_federated_roles_refuse_an_ensemble_config(tmp_path, capsys, role):
    cfg = tmp_path / "job.yaml"
    cfg.write_text(yaml.safe_dump({
        "scene": {"synthetic": {"seed": 0, "rows": 32, "cols": 40, "bands": 8}},
        "model": {"members": 3},
        "federation": {"clients": {"hsi_station": {"modalities": ["hsi"]}, "lidar_station": {"modalities": ["lidar"]}},
                       "state_dir": str(tmp_path / "state")},
    }))
    assert main([*role, "--config", str(cfg)]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "model.members is 3" in err[0], err
    assert not (tmp_path / "state").exists()
