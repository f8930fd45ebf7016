"""Unit tests for utils.plots: what each plot draws matches the numbers it was given."""

import matplotlib

matplotlib.use("Agg")  # no screen: draw into memory

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

from utils import plots  # noqa: E402


@pytest.fixture
def ax():
    """A fresh axes, closed after the test."""
    fig, axes = plt.subplots()
    yield axes
    plt.close(fig)


def test_bars_heights_and_labels(ax):
    """Each bar has the height and the name it was given, and the value is written on it."""
    assert plots.plot_bars({"a": 0.25, "b": 0.75}, ylabel="share", ax=ax) is ax
    assert [p.get_height() for p in ax.patches] == [0.25, 0.75]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["a", "b"]
    assert [t.get_text() for t in ax.texts] == ["0.25", "0.75"]


def test_length_histogram_counts_every_review(ax):
    """The histogram bars add up to the number of reviews in each group; the max length is marked."""
    lengths = {"NEGATIVE": [10, 20, 30, 300], "POSITIVE": [15, 25]}
    plots.plot_length_histogram(lengths, max_length=256, bins=5, ax=ax)
    heights = [p.get_height() for p in ax.patches]
    assert sum(heights) == 6
    assert sum(heights[:5]) == 4 and sum(heights[5:]) == 2
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert "max length 256 (17% truncated)" in legend  # 1 review of 6 is over 256


def test_parameter_counts_lines_follow_inputs(ax):
    """One line per target set, through the given counts; the baseline is a horizontal line."""
    ranks, counts = [1, 2, 4], {"q,v": [10, 20, 40], "all": [30, 60, 120]}
    plots.plot_parameter_counts(ranks, counts, baseline=5, ax=ax)
    lines = ax.get_lines()
    assert list(lines[0].get_xdata()) == ranks and list(lines[0].get_ydata()) == [10, 20, 40]
    assert list(lines[1].get_ydata()) == [30, 60, 120]
    assert list(lines[2].get_ydata()) == [5, 5]
    assert ax.get_yscale() == "log"


def test_confusion_matrix_shows_counts(ax):
    """The image holds the matrix and every cell's count is written in it (thousands separated)."""
    matrix = np.array([[5, 1], [2, 1234]])
    plots.plot_confusion_matrix(matrix, ax=ax)
    assert np.array_equal(ax.images[0].get_array(), matrix)
    assert [t.get_text() for t in ax.texts] == ["5", "1", "2", "1,234"]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["NEGATIVE", "POSITIVE"]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted", "true")


@pytest.mark.parametrize("scores, auc", [([0.1, 0.2, 0.8, 0.9], "1.00"), ([0.9, 0.8, 0.2, 0.1], "0.00"),
                                         ([0.1, 0.6, 0.4, 0.9], "0.75")])
def test_roc_curve_and_auc(ax, scores, auc):
    """The curve runs from (0,0) to (1,1), the legend gives the AUC of the scores, chance is the diagonal."""
    plots.plot_roc([0, 0, 1, 1], scores, name="LoRA", ax=ax)
    curve, chance = ax.get_lines()
    assert (curve.get_xdata()[0], curve.get_ydata()[0]) == (0, 0)
    assert (curve.get_xdata()[-1], curve.get_ydata()[-1]) == (1, 1)
    assert f"LoRA (AUC = {auc})" in curve.get_label()
    assert list(chance.get_xdata()) == [0, 1] and list(chance.get_ydata()) == [0, 1]


def test_calibration_points_are_bin_shares(ax):
    """Each point is (mean predicted probability, share positive) of one bin; the ECE is in the legend."""
    labels = [0, 0, 0, 1, 1, 1, 1, 1]
    scores = [0.1, 0.1, 0.9, 0.9, 0.9, 0.9, 0.1, 0.9]
    plots.plot_calibration(labels, scores, n_bins=2, name="LoRA", ax=ax)
    (points,) = [line for line in ax.get_lines() if line.get_label().startswith("LoRA")]
    assert np.allclose(points.get_xdata(), [0.1, 0.9])
    assert np.allclose(points.get_ydata(), [1 / 3, 4 / 5])
    # bins of 3 and 5 reviews, gaps |1/3 - 0.1| and |4/5 - 0.9|
    assert points.get_label() == f"LoRA (ECE = {3 / 8 * (1 / 3 - 0.1) + 5 / 8 * 0.1:.3f})"


def test_expected_calibration_error():
    """Zero when each bin's mean score is its share of positives; the weighted gaps otherwise."""
    assert plots.expected_calibration_error([0, 1, 0, 1], [0.5, 0.5, 0.5, 0.5]) == pytest.approx(0)
    assert plots.expected_calibration_error([1, 1, 1, 1], [0.95] * 4) == pytest.approx(0.05)
    # two bins: [0.0, 0.5) holds 0.2, 0.2 (no positive: gap 0.2); [0.5, 1] holds 0.9, 0.9 (both positive: gap 0.1)
    assert plots.expected_calibration_error([0, 0, 1, 1], [0.2, 0.2, 0.9, 0.9], n_bins=2) == pytest.approx(0.15)
    # a confident wrong answer costs its whole confidence
    assert plots.expected_calibration_error([0], [0.99]) == pytest.approx(0.99)


def test_accuracy_by_length_buckets():
    """Reviews land in length buckets of similar size, each with its own accuracy."""
    lengths = [10, 11, 12, 13, 100, 110, 120, 130]
    correct = [True, True, True, True, False, True, False, False]
    table = plots.accuracy_by_length(lengths, correct, n_buckets=2)
    assert list(table["reviews"]) == [4, 4]
    assert list(table["accuracy"]) == [1.0, 0.25]
    assert list(table["tokens"]) == ["10-13", "100-130"]
    assert table["reviews"].sum() == len(lengths)


def test_accuracy_by_length_same_lengths_and_bad_input():
    """Equal lengths make one bucket; mismatched inputs say what is wrong."""
    table = plots.accuracy_by_length([50, 50, 50], [True, False, True], n_buckets=4)
    assert list(table["reviews"]) == [3] and table["accuracy"][0] == pytest.approx(2 / 3)
    assert list(table["tokens"]) == ["50"]
    with pytest.raises(ValueError, match="as many lengths"):
        plots.accuracy_by_length([1, 2], [True])


def test_accuracy_by_length_plot(ax):
    """One bar per bucket at the bucket's accuracy."""
    table = plots.accuracy_by_length([10, 20, 30, 40], [True, False, True, True], n_buckets=2)
    plots.plot_accuracy_by_length(table, ax=ax)
    assert [p.get_height() for p in ax.patches] == list(table["accuracy"])


def test_loss_curves_from_log_history(ax):
    """Training and evaluation losses are drawn against their epochs."""
    history = [{"epoch": 0.5, "loss": 0.7}, {"epoch": 1.0, "loss": 0.5}, {"epoch": 1.0, "eval_loss": 0.6}]
    plots.plot_loss_curves(history, ax=ax)
    train, evals = ax.get_lines()
    assert list(train.get_ydata()) == [0.7, 0.5] and list(evals.get_ydata()) == [0.6]


def test_new_axes_when_none_given():
    """Without an axes, each plot makes its own figure and returns its axes."""
    ax = plots.plot_bars({"x": 1.0})
    assert ax.figure is not None and len(ax.patches) == 1
    plt.close(ax.figure)


def test_attention_mask_image_and_padding_share(ax):
    """The image is the mask itself, the title gives its padding share, and the x axis spans `width`."""
    mask = np.array([[1, 1, 1, 1], [1, 1, 0, 0]])
    plots.plot_attention_mask(mask, title="batch", width=10, ax=ax)
    assert np.array_equal(ax.images[0].get_array(), mask)
    assert ax.get_title() == "batch (25% padding)"
    assert ax.get_xlim() == (0, 10)


def test_length_histogram_one_bin_per_length_when_narrow(ax):
    """Short ranges of integer lengths get one bar per length, with no empty gaps between them."""
    plots.plot_length_histogram({"all": [3, 4, 4, 5]}, bins=40, ax=ax)
    assert [p.get_height() for p in ax.patches] == [1, 2, 1]


@pytest.mark.parametrize("r, d, k", [(8, 768, 768), (64, 128, 256)])
def test_lora_diagram_to_scale(ax, r, d, k):
    """W, A and B are drawn with their shapes' proportions, and the title counts r(d + k) trained numbers."""
    plots.plot_lora_diagram(r=r, d=d, k=k, alpha=16, ax=ax)
    box = {p.get_gid(): p for p in ax.patches if p.get_gid()}
    assert set(box) == {"x", "W", "A", "B", "h"}
    assert box["W"].get_height() / box["W"].get_width() == pytest.approx(d / k)
    assert box["A"].get_width() == pytest.approx(box["W"].get_width())  # A has k columns, like W
    assert box["B"].get_height() == pytest.approx(box["W"].get_height())  # B has d rows, like W
    assert box["B"].get_width() == pytest.approx(max(box["W"].get_width() * r / k, 0.06))
    assert f"{r * (d + k):,}" in ax.get_title()
    assert any(t.get_text().endswith(f"= {16 / r:g}") for t in ax.texts)  # the alpha / r scale
