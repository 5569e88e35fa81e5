"""Config errors are one line naming the file and the key; the CLI exits 2 without a traceback."""

import dataclasses
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from feddiff.config import config_from_dict, config_to_dict, load_config
from feddiff.errors import ConfigError

CONFIGS = Path(__file__).resolve().parents[1] / "configs"
SHARED = (Path(__file__).resolve().parents[1] / ".." / "shared" / "data").resolve()


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("scene:\n  synthetc: {seed: 0}\n", "scene.synthetc", "unknown key"),
        ("scene:\n  synthetic: {seed: 0, rowz: 10}\n", "scene.synthetic.rowz", "unknown key"),
        ("scene:\n  synthetic: {seed: 0, rows: 8}\n", "scene.synthetic.rows", "expected a value >= 16"),
        ("scene:\n  synthetic: {seed: 0}\n  split: {fraction: 1.5}\n", "scene.split.fraction", "expected a value <= 1.0"),
        ("scene:\n  synthetic: {seed: 0}\n  split: {mode: random}\n", "scene.split.mode", "expected one of"),
        ("scene:\n  synthetic: {seed: 0}\n  class_names: grass\n", "scene.class_names", "expected a list of a string"),
        ("scene:\n  synthetic: {seed: 0}\ntrain:\n  augment: 3\n", "train.augment", "expected true/false"),
        ("scene:\n  synthetic: {seed: 0}\ntrain:\n  epochs: ten\n", "train.epochs", "expected an integer"),
        ("scene:\n  synthetic: {seed: 0}\ntrain:\n  lr: -1\n", "train.lr", "expected a value >= 0"),
        ("scene:\n  synthetic: {seed: 0}\nmodel:\n  fusion: magic\n", "model.fusion", "expected one of"),
        ("scene:\n  modalities:\n    hsi: {path: nope.npy}\n  train_labels: {path: a.npy}\n  test_labels: {path: b.npy}\n", "scene.modalities.hsi.path", "file not found"),
        ("scene:\n  modalities:\n    hsi: {key: x}\n  labels: {path: a.npy}\n", "scene.modalities.hsi.path", "missing required key"),
        ("scene:\n  synthetic: {seed: 0}\nmodel:\n  feature_timesteps: [900]\n", "model.feature_timesteps[0]", "expected 0 <= t < 500"),
    ],
)
def test_each_config_error_names_file_and_key(tmp_path, text, key, expected):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "\n" not in msg and str(p.name) in msg and key in msg and expected in msg


def test_malformed_yaml_gives_file_line_and_column(tmp_path):
    p = write(tmp_path, "scene: {synthetic: [\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+, column \d+") as err:
        load_config(p)
    assert "\n" not in str(err.value) and p.name in str(err.value)


def test_paths_resolve_relative_to_the_config_file(tmp_path):
    (tmp_path / "d").mkdir()
    for f in ("h.npy", "tr.npy", "te.npy"):
        (tmp_path / "d" / f).write_bytes(b"")
    p = write(tmp_path, "scene:\n  modalities:\n    hsi: {path: d/h.npy}\n  train_labels: {path: d/tr.npy}\n  test_labels: {path: d/te.npy}\n")
    cfg = load_config(p)
    assert cfg.resolve(cfg.scene.modalities["hsi"].path) == (tmp_path / "d" / "h.npy").resolve()


def test_a_config_written_as_a_mapping_reads_back_equal():
    from feddiff_app.demo import DEMO_CONFIG

    cfg = load_config(DEMO_CONFIG)
    assert config_from_dict(config_to_dict(cfg), cfg.source) == cfg


def test_demo_config_loads():
    from feddiff_app.demo import DEMO_CONFIG

    cfg = load_config(DEMO_CONFIG)
    assert cfg.scene.synthetic is not None and cfg.scene.synthetic.rows == 96 and cfg.scene.synthetic.bands == 32


@pytest.mark.skipif(not (SHARED / "trento" / "hsi_sim.npz").exists(), reason=f"benchmark data not found at {SHARED}")
def test_trento_sim_config_loads():
    cfg = load_config(CONFIGS / "trento_sim.yaml")
    assert cfg.resolve(cfg.scene.modalities["hsi"].path) == SHARED / "trento" / "hsi_sim.npz"


@pytest.mark.skipif(not (SHARED / "trento" / "hsi_sim.npz").exists(), reason=f"benchmark data not found at {SHARED}")
def test_trento_accuracy_config_differs_from_the_deployed_one_only_where_documented():
    fast, accurate = load_config(CONFIGS / "trento_sim.yaml"), load_config(CONFIGS / "trento_sim_accurate.yaml")
    assert accurate.scene == fast.scene and accurate.federation == fast.federation
    assert (accurate.model.unet.base_channels, fast.model.unet.base_channels) == (32, 16)
    assert (accurate.train.pretrain_steps, accurate.train.mse_weight, accurate.train.l2, accurate.train.label_smoothing) == (6000, 0.0, 0.0, 0.0)
    assert (accurate.model.dropout, fast.model.dropout) == (0.5, 0.0)
    assert (accurate.model.members, fast.model.members) == (5, 1)
    same = dataclasses.replace(accurate.model, unet=fast.model.unet, dropout=0.0, members=1)
    assert same == fast.model


@pytest.mark.parametrize("name, n_classes", [("trento", 6), ("muufl", 11), ("houston2013", 15), ("augsburg", 7)])
def test_real_cube_configs(name, n_classes):
    """Valid in structure; where the cubes are absent, loading says which file is missing."""
    path = CONFIGS / f"{name}.yaml"
    data = yaml.safe_load(path.read_text())
    assert {"name", "scene"} <= set(data)
    cfg = config_from_dict(data, str(path), check_files=False)
    assert len(cfg.scene.class_names) == n_classes and set(cfg.scene.modalities) == {"hsi", "lidar"}
    hsi = cfg.resolve(cfg.scene.modalities["hsi"].path)
    assert hsi.parent == (CONFIGS / "data" / name).resolve()
    if not hsi.exists():
        with pytest.raises(ConfigError) as err:
            load_config(path)
        msg = str(err.value)
        assert "\n" not in msg and "file not found" in msg and "scene.modalities.hsi.path" in msg and path.name in msg


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_cli_exits_2_with_one_line(tmp_path):
    p = write(tmp_path, "scene:\n  synthetic: {seed: 0}\ntrain:\n  epochz: 3\n")
    r = subprocess.run([sys.executable, "-m", "feddiff_app.cli", "data", "--config", str(p)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "train.epochz: unknown key" in r.stderr
    assert "Traceback" not in r.stderr


def test_every_subcommand_has_help():
    for cmd in ["data", "train", "edge", "aggregator", "status", "keys", "export", "infer", "demo"]:
        r = subprocess.run([sys.executable, "-m", "feddiff_app.cli", cmd, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage" in r.stdout, cmd


def test_help_does_not_import_roles_or_torch():
    code = "import sys; from feddiff_app.cli import build_parser; build_parser(); print(any(m in sys.modules for m in ('torch','edge_client','aggregator','crypto','export')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
