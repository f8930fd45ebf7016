"""Accuracy, F1, precision and recall of a binary classifier, as an `evaluate` metric that loads offline."""

import datasets
import evaluate
from sklearn.metrics import accuracy_score, precision_recall_fscore_support


class ClassificationMetrics(evaluate.Metric):
    """`evaluate.load("utils/classification_metrics.py")`: the four metrics of a NEGATIVE(0)/POSITIVE(1) classifier."""

    def _info(self):
        """What the metric takes: integer predictions and references."""
        return evaluate.MetricInfo(
            description=__doc__, citation="", inputs_description="predictions and references: 0 or 1",
            features=datasets.Features({"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}))

    def _compute(self, predictions, references):
        """Accuracy, and F1, precision and recall of the POSITIVE class, with scikit-learn."""
        p, r, f1, _ = precision_recall_fscore_support(references, predictions, average="binary", pos_label=1,
                                                   zero_division=0)
        return {"accuracy": float(accuracy_score(references, predictions)), "f1": float(f1), "precision": float(p), "recall": float(r)}
