"""utils.widget without a browser: the render function, the colors, and the widget's wiring."""

from __future__ import annotations

import ipywidgets as widgets
import pytest

from utils.predict import SentimentPredictor
from utils.widget import PROMPT, color_words, make_widget, render_prediction


@pytest.fixture(scope="module")
def predictor(smoke_run) -> SentimentPredictor:
    """A predictor on the session's smoke adapter."""
    return SentimentPredictor.from_pretrained(smoke_run / "adapter")


class StubPredictor:
    """A predictor with fixed answers: POSITIVE when the text contains 'good', else NEGATIVE."""

    max_length = 8

    def __call__(self, text):
        """One result: 0.9 POSITIVE for 'good' texts, 0.8 NEGATIVE otherwise; 'long' texts are cut."""
        result = {"label": "POSITIVE", "score": 0.9} if "good" in text else {"label": "NEGATIVE", "score": 0.8}
        return [{**result, "truncated": True} if "long" in text else result]

    def explain(self, text, max_words=64):
        """+0.4 for 'good', -0.3 for 'bad', 0 for other words."""
        return [(w, 0.4 if w == "good" else -0.3 if w == "bad" else 0.0) for w in text.split()[:max_words]]


class BrokenPredictor(StubPredictor):
    """A predictor whose model fails."""

    def __call__(self, text):
        """Fail like a model out of memory would."""
        raise RuntimeError("CUDA out of memory")


def test_a_review_shows_label_probability_and_every_word(predictor):
    text = "The acting was wonderful & the plot <b>gripping</b>"
    shown = render_prediction(predictor, text)
    p_positive = float(predictor.probabilities(text)[0, 1])
    assert shown["positive"] == pytest.approx(p_positive, abs=1e-3)
    assert ("POSITIVE" if p_positive >= 0.5 else "NEGATIVE") in shown["label"]
    assert f"{p_positive:.3f}" in shown["label"]
    for word in ("The", "acting", "wonderful", "&amp;", "&lt;b&gt;gripping&lt;/b&gt;"):
        assert word in shown["words"]
    assert "<b>gripping" not in shown["words"] and shown["note"] == ""


def test_stub_answers_map_to_probability_and_color():
    good, bad = render_prediction(StubPredictor(), "good film"), render_prediction(StubPredictor(), "bad film")
    assert good["positive"] == pytest.approx(0.9) and "POSITIVE" in good["label"]
    assert bad["positive"] == pytest.approx(0.2) and "NEGATIVE" in bad["label"]


@pytest.mark.parametrize("text", ["", "   ", "\n\t", "<br /><br />"])
def test_empty_text_shows_a_prompt(predictor, text):
    assert render_prediction(predictor, text) == {"label": "", "positive": None, "words": "", "note": PROMPT}


@pytest.mark.parametrize("bad", [None, 42, 3.5, ["a", "list"], b"bytes"])
def test_non_text_gives_a_friendly_message_not_an_error(predictor, bad):
    shown = render_prediction(predictor, bad)
    assert shown["positive"] is None and shown["label"] == ""
    assert "widget reads one review as text" in shown["note"] and "Traceback" not in shown["note"]


def test_a_failing_model_gives_a_message_not_a_traceback():
    shown = render_prediction(BrokenPredictor(), "good film")
    assert shown["positive"] is None
    assert shown["note"] == "⚠ Could not predict (RuntimeError): CUDA out of memory"


def test_a_long_review_says_it_was_cut_and_which_words_were_explained(predictor):
    shown = render_prediction(predictor, "a fine film with a fine cast " * 200, max_words=10)
    assert "cut to the model's first 64 tokens" in shown["note"]
    assert "first 10 words" in shown["note"]
    assert shown["words"].count("<span") == 10


def test_non_english_and_emoji_render(predictor):
    shown = render_prediction(predictor, "Magnifique 😍 film")
    assert shown["positive"] is not None and "😍" in shown["words"]


def test_color_words_shades_by_sign_and_size():
    html = color_words([("good", 0.4), ("bad", -0.2), ("plain", 0.0), ("<i>", 0.1)])
    spans = html.split("</span>")
    assert "rgba(34,160,60,0.75)" in spans[0]  # the strongest word: full shade, green
    assert "rgba(215,50,40,0.38)" in spans[1]  # half as strong, red
    assert ",0.00)" in spans[2]  # no influence: no shade
    assert "&lt;i&gt;" in spans[3] and "<i>" not in html
    assert color_words([]) == ""


def test_the_widget_updates_as_the_text_changes():
    box = make_widget(StubPredictor())
    text, label, bar, words, note = box.children
    assert isinstance(text, widgets.Textarea) and isinstance(bar, widgets.FloatProgress)
    assert note.value.endswith(f"{PROMPT}</span>") and bar.value == 0 and label.value == ""

    text.value = "a good film"
    assert "POSITIVE" in label.value and bar.value == pytest.approx(0.9) and bar.bar_style == "success"
    assert words.value.count("<span") == 3 and note.value == ""

    text.value = "a bad long film"
    assert "NEGATIVE" in label.value and bar.value == pytest.approx(0.2) and bar.bar_style == "danger"
    assert "cut to the model's first 8 tokens" in note.value

    text.value = "   "
    assert label.value == "" and bar.value == 0 and PROMPT in note.value


def test_the_widget_survives_a_failing_model():
    box = make_widget(BrokenPredictor())
    text, label, bar, _, note = box.children
    text.value = "good film"
    assert "Could not predict" in note.value and bar.value == 0 and label.value == ""


def test_the_widget_runs_the_real_predictor(predictor):
    box = make_widget(predictor)
    text, label, bar, words, _ = box.children
    text.value = "This movie was absolutely fantastic!"
    first = bar.value
    assert first == pytest.approx(float(predictor.probabilities(text.value)[0, 1]), abs=1e-3)
    assert "fantastic!" in words.value
    text.value = "I was really disappointed by this film."
    assert bar.value != first and ("POSITIVE" in label.value or "NEGATIVE" in label.value)
