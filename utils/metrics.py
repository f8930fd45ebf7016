"""Classification metrics with scikit-learn (offline: `evaluate.load` needs the Hub for its scripts)."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, precision_recall_fscore_support


def classification_metrics(labels, preds) -> dict[str, float]:
    """Accuracy, and precision, recall and F1 of the POSITIVE class (label 1)."""
    precision, recall, f1, _ = precision_recall_fscore_support(labels, preds, average="binary", pos_label=1,
                                                               zero_division=0)
    return {"accuracy": float(accuracy_score(labels, preds)), "f1": float(f1),
            "precision": float(precision), "recall": float(recall)}


def compute_metrics(eval_pred) -> dict[str, float]:
    """The Trainer's `compute_metrics` hook: logits and labels in, metrics out."""
    logits, labels = eval_pred
    return classification_metrics(labels, np.argmax(logits, axis=-1))
