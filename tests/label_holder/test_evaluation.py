"""The HE label holder keeps evaluation predictions: it scores its own, writes the map once the
scene is covered, and refuses to score predictions someone sends it (a label oracle)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from label_holder.evaluation import HeldPredictions


def held(tmp_path) -> HeldPredictions:
    rows, cols = np.array([0, 1, 2]), np.array([0, 1, 2])
    return HeldPredictions((3, 4), (rows, cols, np.array([0, 1, 1])), ["a", "b"], tmp_path)


def test_scores_the_kept_predictions_of_the_test_pixels(tmp_path):
    h = held(tmp_path)
    h.keep(5, np.array([0, 1]), np.array([0, 1]), np.array([0, 1]))
    with pytest.raises(ValueError, match="1 of 3 test pixels were never predicted"):
        h.metrics(5)
    h.keep(5, np.array([2]), np.array([2]), np.array([0]))
    m = h.metrics(5)
    assert m["oa"] == pytest.approx(2 / 3)
    h.clear(5)
    with pytest.raises(ValueError, match="no predictions kept"):
        h.metrics(5)


def test_the_map_is_written_once_the_whole_scene_is_predicted_and_the_report_names_it(tmp_path):
    h = held(tmp_path)
    rows, cols = np.repeat(np.arange(3), 4), np.tile(np.arange(4), 3)
    h.keep(7, rows[:6], cols[:6], np.zeros(6, np.int64))
    assert not (tmp_path / "classification_map.png").exists()
    h.keep(6, np.array([0, 1, 2]), np.array([0, 1, 2]), np.array([0, 1, 1]))
    h.write_report("j", h.metrics(6), {"enabled": False})
    assert json.loads((tmp_path / "report.json").read_text())["map"] is None
    h.keep(7, rows[6:], cols[6:], np.ones(6, np.int64))
    assert (tmp_path / "classification_map.png").exists()
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["oa"] == 1.0 and report["map"].endswith("classification_map.png")


def test_pixels_outside_the_scene_are_refused(tmp_path):
    with pytest.raises(ValueError, match="outside the 3x4 scene"):
        held(tmp_path).keep(1, np.array([3]), np.array([0]), np.array([0]))
