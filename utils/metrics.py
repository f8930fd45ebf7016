"""The Trainer's metrics, with `evaluate`: accuracy, F1, precision and recall of the POSITIVE class.

`evaluate.load("accuracy")` and its siblings fetch their scripts from the Hub, so the project ships
the same four metrics as one `evaluate` module of its own (`classification_metrics.py`), loaded by
path: it works offline. Online, `evaluate.combine(["accuracy", "f1", "precision", "recall"])` gives
the same numbers.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import numpy as np

METRIC_SCRIPT = Path(__file__).with_name("classification_metrics.py")


@lru_cache(maxsize=1)
def _metric():
    """The project's `evaluate` metric module, loaded once."""
    import evaluate

    return evaluate.load(str(METRIC_SCRIPT))


def classification_metrics(labels, preds) -> dict[str, float]:
    """Accuracy, and precision, recall and F1 of the POSITIVE class (label 1)."""
    return _metric().compute(predictions=np.asarray(preds, dtype=np.int64), references=np.asarray(labels, dtype=np.int64))


def compute_metrics(eval_pred) -> dict[str, float]:
    """The Trainer's `compute_metrics` hook: logits and labels in, metrics out (lesson 03 writes it in the open)."""
    logits, labels = eval_pred
    return classification_metrics(labels, np.argmax(logits, axis=-1))
