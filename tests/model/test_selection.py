"""Per-scene choices come from validation pixels: the record names every candidate's curve and
the winner, self-training adds confident pool pixels class by class, and the test labels are
never an input to either."""

from __future__ import annotations

import numpy as np

from feddiff.config import config_from_dict
from feddiff.data.loader import load_scene
from feddiff.model.centralised import train_centralised
from feddiff.model.pseudo import select_confident, unlabelled_pool
from feddiff.model.selection import best_epoch

CFG = {
    "scene": {"synthetic": {"seed": 2, "rows": 48, "cols": 64, "bands": 16, "train_per_class": 30}},
    "model": {"unet": {"base_channels": 8, "num_res_blocks": 1}, "head_channels": 16, "feature_timesteps": [5, 100], "comm": {"rank": 8}},
    "train": {"min_steps": 0, "pretrain_steps": 20, "pretrain_batch": 32, "epochs": 8, "batch_size": 16, "threads": 2,
              "val_fraction": 0.25, "self_train": "auto", "pseudo_pool": 300},
}


def test_best_epoch_takes_the_later_of_ties():
    assert best_epoch([{"val_oa": 0.5}, {"val_oa": 0.8}, {"val_oa": 0.7}, {"val_oa": 0.8}]) == (4, 0.8)


def test_select_confident_is_class_balanced_and_thresholded():
    proba = np.array([[0.95, 0.05], [0.99, 0.01], [0.97, 0.03], [0.2, 0.8], [0.05, 0.95], [0.6, 0.4]])
    idx, lab = select_confident(proba, per_class=2, threshold=0.9)
    assert idx.tolist() == [1, 2, 4] and lab.tolist() == [0, 0, 1]


def test_pool_never_holds_a_training_pixel():
    train = np.zeros((20, 30), np.int64)
    train[::3, ::2] = 1
    rows, cols = unlabelled_pool(train, 10_000, seed=1)
    assert rows.shape[0] == (train == 0).sum() and not train[rows, cols].any()
    a, b = unlabelled_pool(train, 50, 3), unlabelled_pool(train, 50, 3)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_training_records_what_validation_chose(tmp_path):
    cfg = config_from_dict(CFG, str(tmp_path / "c.yaml"))
    scene = load_scene(cfg)
    res = train_centralised(cfg, scene, ["hsi", "lidar"], progress=False)
    sel = res.history.selection
    n_train = int((scene.train_labels > 0).sum())
    assert sel["validation"]["val_pixels"] + sel["validation"]["fit_pixels"] == n_train
    names = [c["name"] for c in sel["candidates"]]
    assert names == ["plain", "self_train"]
    for c in sel["candidates"]:
        assert len(c["val_oa_by_epoch"]) == 8 and round(c["best_val_oa"], 4) == max(c["val_oa_by_epoch"])
    chosen = next(c for c in sel["candidates"] if c["name"] == sel["chosen"]["name"])
    assert sel["chosen"]["epochs"] == chosen["best_epoch"] == len(res.history.epochs)
    extra = sel["candidates"][1]["pseudo_pixels"] if sel["chosen"]["name"] == "self_train" else 0
    assert sel["chosen"]["final_pixels"] == n_train + extra  # the final run refits on every training pixel
    assert res.metrics["oa"] > 0.4, res.metrics["oa"]  # chance is 1/6
