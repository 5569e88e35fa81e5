"""Metrics against values computed by hand."""

import numpy as np
import pytest

from feddiff.metrics import classification_metrics


def test_metrics_match_hand_computation():
    # confusion (rows true): [[3,1],[2,4]] -> OA 7/10, AA (3/4+4/6)/2, kappa (0.7-pe)/(1-pe)
    y_true = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    y_pred = np.array([0, 0, 0, 1, 0, 0, 1, 1, 1, 1])
    m = classification_metrics(y_true, y_pred, 2)
    assert m["confusion"] == [[3, 1], [2, 4]]
    assert m["oa"] == pytest.approx(0.7)
    assert m["aa"] == pytest.approx((0.75 + 4 / 6) / 2)
    pe = (4 * 5 + 6 * 5) / 100  # row sums 4, 6; column sums 5, 5
    assert m["kappa"] == pytest.approx((0.7 - pe) / (1 - pe))
    assert m["per_class"] == pytest.approx([0.75, 4 / 6])


def test_perfect_prediction_and_absent_class():
    y = np.array([0, 1, 1, 2])
    m = classification_metrics(y, y, 4)
    assert m["oa"] == 1.0 and m["kappa"] == 1.0 and m["per_class"][3] is None and m["aa"] == 1.0
