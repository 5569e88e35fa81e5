"""Metrics against values computed by hand in the test."""

import math

import numpy as np
import pytest

from feddiff.metrics import classification_metrics, confusion_matrix, format_metrics


def test_two_classes_by_hand():
    # confusion (rows true): [[3, 1], [2, 4]]
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    y_pred = np.array([0, 0, 0, 1, 0, 0, 1, 1, 1, 1])
    m = classification_metrics(y_true, y_pred, 2)
    assert m["confusion"] == [[3, 1], [2, 4]]
    assert m["oa"] == pytest.approx(7 / 10)
    assert m["per_class"] == pytest.approx([3 / 4, 4 / 6])
    assert m["aa"] == pytest.approx((3 / 4 + 4 / 6) / 2)
    pe = (4 * 5 + 6 * 5) / 100  # row sums 4, 6; column sums 5, 5
    assert m["kappa"] == pytest.approx((0.7 - pe) / (1 - pe))


def test_three_classes_by_hand():
    # rows true, cols pred:
    #   [[5, 1, 0],
    #    [2, 6, 2],
    #    [0, 1, 3]]      n = 20, diagonal 14
    cm = np.array([[5, 1, 0], [2, 6, 2], [0, 1, 3]])
    y_true = np.concatenate([np.full(cm[i, j], i) for i in range(3) for j in range(3)])
    y_pred = np.concatenate([np.full(cm[i, j], j) for i in range(3) for j in range(3)])
    perm = np.random.default_rng(0).permutation(20)  # order must not matter
    m = classification_metrics(y_true[perm], y_pred[perm], 3)
    assert m["confusion"] == cm.tolist()
    assert m["oa"] == pytest.approx(14 / 20)
    assert m["per_class"] == pytest.approx([5 / 6, 6 / 10, 3 / 4])
    assert m["aa"] == pytest.approx((5 / 6 + 6 / 10 + 3 / 4) / 3)
    # row sums 6, 10, 4; column sums 7, 8, 5
    pe = (6 * 7 + 10 * 8 + 4 * 5) / 20**2
    assert m["kappa"] == pytest.approx((14 / 20 - pe) / (1 - pe))
    assert all(isinstance(v, float) for v in (m["oa"], m["aa"], m["kappa"]))


def test_perfect_prediction_and_absent_class():
    y = np.array([0, 1, 1, 2])
    m = classification_metrics(y, y, 4)
    assert m["oa"] == 1.0 and m["kappa"] == 1.0 and m["aa"] == 1.0
    assert m["per_class"] == [1.0, 1.0, 1.0, None]  # class 3 has no test pixel: no accuracy, not 0


def test_chance_level_kappa_is_zero():
    y_true = np.array([0, 0, 1, 1])
    y_pred = np.array([0, 1, 0, 1])
    assert classification_metrics(y_true, y_pred, 2)["kappa"] == pytest.approx(0.0)


def test_single_class_everywhere_and_empty_input():
    m = classification_metrics(np.zeros(5, int), np.zeros(5, int), 3)
    assert m["kappa"] == 1.0 and m["oa"] == 1.0
    e = classification_metrics(np.zeros(0, int), np.zeros(0, int), 2)
    assert math.isnan(e["oa"]) and math.isnan(e["kappa"]) and e["per_class"] == [None, None]


def test_out_of_range_ids_and_length_mismatch():
    with pytest.raises(ValueError, match="y_pred"):
        confusion_matrix(np.array([0, 1]), np.array([0, 2]), 2)
    with pytest.raises(ValueError, match="y_true"):
        confusion_matrix(np.array([-1, 1]), np.array([0, 1]), 2)
    with pytest.raises(ValueError):
        confusion_matrix(np.array([0, 1]), np.array([0]), 2)


def test_format_metrics_prints_percent():
    m = classification_metrics(np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1]), np.array([0, 0, 0, 1, 0, 0, 1, 1, 1, 1]), 3)
    text = format_metrics(m, ["grass", "trees", "water"])
    assert "OA 70.00%" in text and f"AA {100 * m['aa']:.2f}%" in text and f"kappa {m['kappa']:.4f}" in text
    grass = next(line for line in text.splitlines() if "grass" in line).split()
    assert grass == ["grass", "75.00%", "4"]
    water = next(line for line in text.splitlines() if "water" in line).split()
    assert water == ["water", "-", "0"]
