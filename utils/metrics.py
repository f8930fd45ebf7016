"""Classification metrics computed with numpy, so they work offline (`evaluate.load` needs the Hub)."""

from __future__ import annotations

import numpy as np


def classification_metrics(labels: np.ndarray, preds: np.ndarray) -> dict[str, float]:
    """Accuracy, and precision, recall and F1 of the POSITIVE class (label 1)."""
    labels, preds = np.asarray(labels), np.asarray(preds)
    tp = int(np.sum((preds == 1) & (labels == 1)))
    fp = int(np.sum((preds == 1) & (labels == 0)))
    fn = int(np.sum((preds == 0) & (labels == 1)))
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
    return {"accuracy": float(np.mean(preds == labels)), "f1": f1, "precision": precision, "recall": recall}


def compute_metrics(eval_pred) -> dict[str, float]:
    """The Trainer's `compute_metrics` hook: logits and labels in, metrics out."""
    logits, labels = eval_pred
    return classification_metrics(labels, np.argmax(logits, axis=-1))


def confusion_matrix(labels: np.ndarray, preds: np.ndarray) -> np.ndarray:
    """2x2 counts: rows are the true label (NEGATIVE, POSITIVE), columns the prediction."""
    matrix = np.zeros((2, 2), dtype=int)
    np.add.at(matrix, (np.asarray(labels), np.asarray(preds)), 1)
    return matrix
