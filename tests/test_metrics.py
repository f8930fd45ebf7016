"""utils.metrics against values worked out by hand."""

import numpy as np
import pytest

from utils.metrics import classification_metrics, compute_metrics

LABELS = np.array([1, 1, 1, 0, 0, 0, 0, 1])
PREDS = np.array([1, 1, 0, 0, 0, 1, 0, 1])  # tp=3, fn=1, fp=1, tn=3


def test_metrics_match_hand_counts():
    m = classification_metrics(LABELS, PREDS)
    assert m["accuracy"] == pytest.approx(6 / 8)
    assert m["precision"] == pytest.approx(3 / 4)
    assert m["recall"] == pytest.approx(3 / 4)
    assert m["f1"] == pytest.approx(0.75)


def test_no_positive_predictions_give_zero_not_nan():
    m = classification_metrics(np.array([1, 0]), np.array([0, 0]))
    assert (m["precision"], m["recall"], m["f1"], m["accuracy"]) == (0.0, 0.0, 0.0, 0.5)


def test_compute_metrics_takes_logits():
    logits = np.array([[0.1, 2.0], [3.0, -1.0], [0.0, 0.5]])
    assert compute_metrics((logits, np.array([1, 0, 0])))["accuracy"] == pytest.approx(2 / 3)

