"""Config errors are one line naming the file and the key; the CLI exits 2 without a traceback."""

import subprocess
import sys

import pytest

from feddiff.config import load_config
from feddiff.errors import ConfigError


def write(tmp_path, text):
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize(
    "text, key, expected",
    [
        ("scene:\n  synthetc: {seed: 0}\n", "scene.synthetc", "unknown key"),
        ("scene:\n  synthetic: {seed: 0}\ntrain:\n  epochs: ten\n", "train.epochs", "expected an integer"),
        ("scene:\n  synthetic: {seed: 0}\ntrain:\n  lr: -1\n", "train.lr", "expected a value >= 0"),
        ("scene:\n  synthetic: {seed: 0}\nmodel:\n  fusion: magic\n", "model.fusion", "expected one of"),
        ("scene:\n  modalities:\n    hsi: {path: nope.npy}\n  train_labels: {path: a.npy}\n  test_labels: {path: b.npy}\n", "scene.modalities.hsi.path", "file not found"),
        ("scene:\n  synthetic: {seed: 0}\nmodel:\n  feature_timesteps: [900]\n", "model.feature_timesteps[0]", "expected 0 <= t < 500"),
    ],
)
def test_each_config_error_names_file_and_key(tmp_path, text, key, expected):
    p = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_config(p)
    msg = str(err.value)
    assert "\n" not in msg and str(p.name) in msg and key in msg and expected in msg


def test_malformed_yaml_gives_line_and_column(tmp_path):
    p = write(tmp_path, "scene: {synthetic: [\n")
    with pytest.raises(ConfigError, match=r"malformed YAML at line \d+"):
        load_config(p)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(tmp_path / "absent.yaml")


def test_cli_exits_2_with_one_line(tmp_path):
    p = write(tmp_path, "scene:\n  synthetic: {seed: 0}\ntrain:\n  epochz: 3\n")
    r = subprocess.run([sys.executable, "-m", "feddiff.cli", "data", "--config", str(p)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().count("\n") == 0 and "train.epochz: unknown key" in r.stderr
    assert "Traceback" not in r.stderr


def test_every_subcommand_has_help():
    for cmd in ["data", "train", "edge", "aggregator", "status", "keys", "export", "infer", "demo"]:
        r = subprocess.run([sys.executable, "-m", "feddiff.cli", cmd, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage" in r.stdout, cmd


def test_help_does_not_import_roles_or_torch():
    code = "import sys; from feddiff.cli import build_parser; build_parser(); print(any(m in sys.modules for m in ('torch','edge_client','aggregator','crypto','export')))"
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout.strip() == "False"
