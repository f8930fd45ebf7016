"""Plots the lessons share (matplotlib; each function draws on the axes it is given or on new ones).

Every `plot_*` function returns the axes it drew on, so a notebook can add to it or test it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
from matplotlib.axes import Axes
from matplotlib.patches import Circle, Rectangle
import numpy as np
import pandas as pd
from sklearn.calibration import CalibrationDisplay
from sklearn.metrics import ConfusionMatrixDisplay, RocCurveDisplay

from .data import LABELS


def _axes(ax: Axes | None = None, figsize: tuple[float, float] = (6, 3.5)) -> Axes:
    """`ax` itself, or the axes of a new figure of `figsize`."""
    return ax if ax is not None else plt.subplots(figsize=figsize)[1]


def plot_loss_curves(log_history: list[dict], ax: Axes | None = None) -> Axes:
    """Training loss per logging step and evaluation loss per epoch, from `trainer.state.log_history`."""
    ax = _axes(ax)
    train = [(h["epoch"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["epoch"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    if train:
        ax.plot(*zip(*train), label="training loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="evaluation loss")
    ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss during training")
    ax.legend()
    return ax


def plot_bars(values: Mapping[str, float], ylabel: str = "", title: str = "", fmt: str = "{:.2f}",
              ax: Axes | None = None) -> Axes:
    """One labelled bar per entry of `values` (name -> number), each with its value written on top."""
    ax = _axes(ax)
    names, heights = list(values), [float(v) for v in values.values()]
    bars = ax.bar(names, heights, color=[f"C{i}" for i in range(len(names))])
    ax.bar_label(bars, labels=[fmt.format(h) for h in heights], padding=2)
    ax.set(ylabel=ylabel, title=title)
    ax.set_ylim(0, max([*heights, 0]) * 1.15 or 1)
    return ax


def plot_length_histogram(lengths: Mapping[str, Sequence[int]], max_length: int | None = None,
                          bins: int = 40, ax: Axes | None = None) -> Axes:
    """Histograms of review lengths in tokens, one per group (e.g. per label), with the max length marked."""
    ax = _axes(ax)
    everything = np.concatenate([np.asarray(v) for v in lengths.values()])
    low, high = int(everything.min()), int(everything.max())
    # one bin per length when the range is narrow (no empty gaps between integer lengths)
    edges = np.arange(low, high + 2) - 0.5 if high - low < bins else np.histogram_bin_edges(everything, bins=bins)
    for name, values in lengths.items():
        ax.hist(values, bins=edges, alpha=0.6, label=f"{name} ({len(values):,})")
    if max_length:
        cut = float(np.mean(everything > max_length))
        ax.axvline(max_length, color="k", linestyle="--", label=f"max length {max_length} ({cut:.0%} truncated)")
    ax.set(xlabel="review length (tokens)", ylabel="reviews", title="Review lengths")
    ax.legend()
    return ax


def plot_attention_mask(mask: np.ndarray, title: str = "", width: int | None = None,
                        ax: Axes | None = None) -> Axes:
    """One batch's attention mask as an image: a row per review, dark = real token, light = padding."""
    ax = _axes(ax, figsize=(6, 2))
    mask = np.asarray(mask)
    ax.imshow(mask, cmap="Blues", vmin=-0.3, vmax=1, aspect="auto", interpolation="nearest",
              extent=(0, mask.shape[1], mask.shape[0], 0))
    ax.set_xlim(0, max(width or 0, mask.shape[1]))
    share = 1 - mask.sum() / mask.size
    ax.set(xlabel="token position", ylabel="review", title=f"{title} ({share:.0%} padding)".strip())
    return ax


def plot_parameter_counts(ranks: Sequence[int], counts: Mapping[str, Sequence[int]], baseline: int | None = None,
                          baseline_label: str = "classification head alone", ax: Axes | None = None) -> Axes:
    """Trainable parameters against LoRA rank, one line per set of target modules (log scales)."""
    ax = _axes(ax)
    for i, (name, values) in enumerate(counts.items()):
        ax.plot(ranks, values, "o-", color=f"C{i}", label=name)
    if baseline is not None:
        ax.axhline(baseline, color="gray", linestyle=":", label=baseline_label)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    ax.set_xticks(list(ranks), [str(r) for r in ranks])
    ax.set(xlabel="LoRA rank r", ylabel="trainable parameters", title="Trainable parameters by rank and targets")
    ax.legend(fontsize="small")
    return ax


def plot_lora_diagram(r: int = 8, d: int = 768, k: int = 768, alpha: float = 16, ax: Axes | None = None) -> Axes:
    """The LoRA picture, to scale: x goes through the frozen W (d x k) and through A (r x k) then B (d x r) into h."""
    ax = _axes(ax, figsize=(8, 5))

    def size(n: int) -> float:
        """Drawing length of `n` rows or columns: W's longer side is 4 units; a rank-1 strip stays visible."""
        return max(4 * n / max(d, k), 0.06)

    b_left = 1.7 + size(k)
    plus = (b_left + size(r) + 1.4, 0.0)
    boxes = {  # name: (left, bottom, width, height, colour)
        "x": (0, -size(k) / 2, 0.25, size(k), "C0"),
        "W": (1, 2.5 - size(d) / 2, size(k), size(d), "0.75"),
        "A": (1, -2.5 - size(r) / 2, size(k), size(r), "C1"),
        "B": (b_left, -2.5 - size(d) / 2, size(r), size(d), "C1"),
        "h": (plus[0] + 0.9, -size(d) / 2, 0.25, size(d), "C2"),
    }
    for name, (x0, y0, w, h, colour) in boxes.items():
        ax.add_patch(Rectangle((x0, y0), w, h, facecolor=colour, edgecolor="k", gid=name))
    ax.add_patch(Circle(plus, 0.25, facecolor="w", edgecolor="k"))
    ax.text(*plus, "+", ha="center", va="center", fontsize=14)
    arrows = [((0.25, 0), (1, 2.5)), ((0.25, 0), (1, -2.5)), ((1 + size(k), -2.5), (b_left, -2.5)),
              ((1 + size(k), 2.5), (plus[0] - 0.2, 0.15)), ((b_left + size(r), -2.5), (plus[0] - 0.2, -0.15)),
              ((plus[0] + 0.25, 0), (plus[0] + 0.9, 0))]
    for start, end in arrows:  # x -> W, x -> A, A -> B, Wx -> +, BAx -> +, + -> h
        ax.annotate("", xy=end, xytext=start, arrowprops={"arrowstyle": "->", "color": "k"})
    ax.text((b_left + size(r) + plus[0]) / 2 + 0.15, -1.3, f"x α/r\n= {alpha / r:g}", fontsize="small")
    labels = {"x": f"x\n({k})", "h": f"h\n({d})", "W": f"W  {d} x {k}, frozen\n{d * k:,} weights",
              "A": f"A  {r} x {k}\n(random at start)", "B": f"B  {d} x {r}\n(zero at start)"}
    for name, text in labels.items():
        x0, y0, w, h, _ = boxes[name]
        below = name != "W"
        ax.text(x0 + w / 2, y0 - 0.15 if below else y0 + h + 0.1, text, ha="center",
                va="top" if below else "bottom", fontsize="small")
    ax.set_title(f"LoRA: h = Wx + (α/r)·BAx\ntrained: A and B, r(d + k) = {r * (d + k):,} numbers "
                 f"({r * (d + k) / (d * k):.1%} of W's {d * k:,})", fontsize="medium")
    ax.set(xlim=(-0.3, plus[0] + 1.5), ylim=(-5.6, 5.4), aspect="equal")
    ax.axis("off")
    return ax


def plot_confusion_matrix(matrix: np.ndarray, labels: Sequence[str] = tuple(LABELS.values()),
                          ax: Axes | None = None) -> Axes:
    """A confusion matrix with the counts written in (scikit-learn's ConfusionMatrixDisplay): rows true, columns predicted."""
    ax = _axes(ax, figsize=(4, 3.5))
    ConfusionMatrixDisplay(np.asarray(matrix), display_labels=list(labels)).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format=",")
    ax.set(xlabel="predicted", ylabel="true", title="Confusion matrix")
    return ax


def plot_roc(labels: Sequence[int], scores: Sequence[float], name: str = "model", ax: Axes | None = None) -> Axes:
    """The ROC curve of P(POSITIVE) `scores` against 0/1 `labels` (scikit-learn's RocCurveDisplay), AUC in the legend."""
    ax = _axes(ax, figsize=(4, 4))
    RocCurveDisplay.from_predictions(labels, scores, name=name, ax=ax, plot_chance_level=True)
    ax.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC curve")
    return ax


def expected_calibration_error(labels: Sequence[int], scores: Sequence[float], n_bins: int = 10) -> float:
    """ECE: the gap between predicted P(POSITIVE) and the share of positives, averaged over equal-width bins by size.

    The bins are those of the calibration plot (`sklearn.calibration.calibration_curve`, uniform).
    """
    labels, scores = np.asarray(labels, dtype=float), np.asarray(scores, dtype=float)
    bins = np.searchsorted(np.linspace(0, 1, n_bins + 1)[1:-1], scores)
    return float(sum(abs(labels[bins == b].mean() - scores[bins == b].mean()) * np.mean(bins == b)
                     for b in np.unique(bins)))


def plot_calibration(labels: Sequence[int], scores: Sequence[float], n_bins: int = 10, name: str = "model",
                     ax: Axes | None = None) -> Axes:
    """Reliability diagram (scikit-learn's CalibrationDisplay): share positive per bin of P(POSITIVE), ECE in the legend.

    Call it again on the same axes to compare models (the diagonal is drawn once).
    """
    ax = _axes(ax, figsize=(4, 4))
    ece = expected_calibration_error(labels, scores, n_bins)
    CalibrationDisplay.from_predictions(labels, scores, n_bins=n_bins, strategy="uniform",
                                        name=f"{name} (ECE = {ece:.3f})", ax=ax)
    ax.set(xlabel="predicted P(POSITIVE)", ylabel="share actually POSITIVE", title="Calibration",
           xlim=(0, 1), ylim=(0, 1))
    ax.legend(loc="upper left")
    return ax


def accuracy_by_length(lengths: Sequence[int], correct: Sequence[bool], n_buckets: int = 5) -> pd.DataFrame:
    """Accuracy per review-length bucket (quantiles, so buckets hold similar numbers of reviews)."""
    lengths, correct = np.asarray(lengths), np.asarray(correct, dtype=float)
    if len(lengths) != len(correct) or not len(lengths):
        raise ValueError("accuracy_by_length needs as many lengths as correct flags, and at least one.")
    edges = np.unique(np.quantile(lengths, np.linspace(0, 1, n_buckets + 1)).round().astype(int))
    bucket = np.clip(np.searchsorted(edges, lengths, side="right") - 1, 0, max(len(edges) - 2, 0))
    rows = []
    for b in np.unique(bucket):
        inside = bucket == b
        low, high = lengths[inside].min(), lengths[inside].max()
        rows.append({"tokens": f"{low}-{high}" if high > low else f"{low}", "reviews": int(inside.sum()),
                     "accuracy": float(correct[inside].mean())})
    return pd.DataFrame(rows)


def plot_accuracy_by_length(table: pd.DataFrame, ax: Axes | None = None) -> Axes:
    """Bars of accuracy per length bucket, from `accuracy_by_length`, with each bucket's size written on top."""
    ax = _axes(ax)
    bars = ax.bar(table["tokens"], table["accuracy"], color="C0")
    ax.bar_label(bars, labels=[f"{a:.2f}\n(n={n})" for a, n in zip(table["accuracy"], table["reviews"])],
                 fontsize="small", padding=2)
    ax.set(xlabel="review length (tokens)", ylabel="accuracy", title="Accuracy by review length", ylim=(0, 1.2))
    return ax
