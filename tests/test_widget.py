"""utils.widget without a browser: the render function, before and after LoRA, the colors, and the widget's wiring."""

from __future__ import annotations

from contextlib import contextmanager

import ipywidgets as widgets
import pytest

from utils.predict import SentimentPredictor
from utils.widget import (NO_ADAPTER, PROMPT, base_model_answer, color_words, make_widget, render_prediction,
                          widget_parts)

EMPTY = {"label": "", "positive": None, "base_label": "", "base_positive": None, "words": ""}


@pytest.fixture(scope="module")
def predictor(smoke_run) -> SentimentPredictor:
    """A predictor on the session's smoke adapter."""
    return SentimentPredictor.from_pretrained(smoke_run / "adapter")


class StubModel:
    """A model whose adapter can be switched off, like peft's PeftModel."""

    def __init__(self):
        self.adapter_on = True

    @contextmanager
    def disable_adapter(self):
        """Switch the adapter off inside the block, on again after it (even on an error)."""
        self.adapter_on = False
        try:
            yield
        finally:
            self.adapter_on = True


class StubPredictor:
    """A predictor with fixed answers: POSITIVE when the text contains 'good', else NEGATIVE; 0.51 POSITIVE adapter off."""

    max_length = 8

    def __init__(self):
        self.model = StubModel()

    def __call__(self, text):
        """One result: 0.9 POSITIVE for 'good' texts, 0.8 NEGATIVE otherwise; 'long' texts are cut."""
        if not getattr(self.model, "adapter_on", True):
            return [{"label": "POSITIVE", "score": 0.51}]
        result = {"label": "POSITIVE", "score": 0.9} if "good" in text else {"label": "NEGATIVE", "score": 0.8}
        return [{**result, "truncated": True} if "long" in text else result]

    def explain(self, text, max_words=64):
        """+0.4 for 'good', -0.3 for 'bad', 0 for other words."""
        return [(w, 0.4 if w == "good" else -0.3 if w == "bad" else 0.0) for w in text.split()[:max_words]]


class MergedStub(StubPredictor):
    """A predictor on a merged model: no adapter to switch off."""

    def __init__(self):
        self.model = object()


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
    assert render_prediction(predictor, text) == {**EMPTY, "note": PROMPT}


@pytest.mark.parametrize("bad", [None, 42, 3.5, ["a", "list"], b"bytes"])
def test_non_text_gives_a_friendly_message_not_an_error(predictor, bad):
    shown = render_prediction(predictor, bad)
    assert shown["positive"] is None and shown["base_positive"] is None and shown["label"] == ""
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


def test_the_widget_updates_both_answers_as_the_text_changes():
    parts = widget_parts(make_widget(StubPredictor()))
    text, label, bar, base_label, base_bar = (parts[k] for k in ("text", "label", "bar", "base-label", "base-bar"))
    words, note = parts["words"], parts["note"]
    assert isinstance(text, widgets.Textarea) and isinstance(bar, widgets.FloatProgress)
    assert isinstance(base_bar, widgets.FloatProgress) and base_bar is not bar
    assert note.value.endswith(f"{PROMPT}</span>") and bar.value == 0 and label.value == ""
    assert base_bar.value == 0 and base_label.value == ""

    text.value = "a good film"
    assert "POSITIVE" in label.value and bar.value == pytest.approx(0.9) and bar.bar_style == "success"
    assert "0.510" in base_label.value and base_bar.value == pytest.approx(0.51) and base_bar.bar_style == "success"
    assert words.value.count("<span") == 3 and note.value == ""

    text.value = "a bad long film"
    assert "NEGATIVE" in label.value and bar.value == pytest.approx(0.2) and bar.bar_style == "danger"
    assert base_bar.value == pytest.approx(0.51)  # the base model does not know the review is bad
    assert "cut to the model's first 8 tokens" in note.value

    text.value = "   "
    assert label.value == "" and bar.value == 0 and base_bar.value == 0 and PROMPT in note.value


def test_the_widget_lays_the_two_answers_side_by_side():
    box = make_widget(StubPredictor())
    text, columns, words, note = box.children
    before, after = columns.children
    assert isinstance(columns, widgets.HBox) and "Before LoRA" in before.children[0].value
    assert "After LoRA" in after.children[0].value
    parts = widget_parts(box)
    assert before.children[1:] == (parts["base-label"], parts["base-bar"])
    assert after.children[1:] == (parts["label"], parts["bar"])


def test_the_widget_survives_a_failing_model():
    parts = widget_parts(make_widget(BrokenPredictor()))
    parts["text"].value = "good film"
    assert "Could not predict" in parts["note"].value and parts["bar"].value == 0 and parts["label"].value == ""
    assert parts["base-bar"].value == 0 and parts["base-label"].value == ""


def test_the_widget_runs_the_real_predictor(predictor):
    parts = widget_parts(make_widget(predictor))
    parts["text"].value = "This movie was absolutely fantastic!"
    first = parts["bar"].value
    assert first == pytest.approx(float(predictor.probabilities(parts["text"].value)[0, 1]), abs=1e-3)
    assert "fantastic!" in parts["words"].value and "P(positive)" in parts["base-label"].value
    parts["text"].value = "I was really disappointed by this film."
    assert parts["bar"].value != first and ("POSITIVE" in parts["label"].value or "NEGATIVE" in parts["label"].value)


def test_the_base_answer_is_the_stub_with_its_adapter_off_and_the_adapter_comes_back():
    stub = StubPredictor()
    shown = render_prediction(stub, "a bad film")
    assert shown["positive"] == pytest.approx(0.2) and shown["base_positive"] == pytest.approx(0.51)
    assert "POSITIVE" in shown["base_label"] and stub.model.adapter_on


def test_a_merged_model_has_no_base_answer_and_says_why():
    shown = render_prediction(MergedStub(), "a good film")
    assert shown["positive"] == pytest.approx(0.9)
    assert shown["base_positive"] is None and NO_ADAPTER in shown["base_label"]
    assert base_model_answer(MergedStub(), "a good film") is None


def test_the_base_answer_is_the_real_model_with_its_lora_adapter_off(predictor):
    text = "A wonderful, moving film."
    tuned = float(predictor.probabilities(text)[0, 1])
    with predictor.model.disable_adapter():  # peft 0.21: LoRA layers and the saved head off inside the block
        base = float(predictor.probabilities(text)[0, 1])
    shown = render_prediction(predictor, text)
    assert shown["base_positive"] == pytest.approx(base, abs=1e-3) and shown["positive"] == pytest.approx(tuned, abs=1e-3)
    assert base != pytest.approx(tuned, abs=1e-2), "switching the adapter off changed nothing"
    assert float(predictor.probabilities(text)[0, 1]) == pytest.approx(tuned, abs=1e-6), "the adapter did not come back on"


def test_the_base_models_untrained_head_answers_near_50_50(predictor):
    texts = ["A wonderful, moving film.", "Dull, long and badly acted.", "It was a film."]
    with predictor.model.disable_adapter():
        base = predictor.probabilities(texts)[:, 1]
    assert ((base - 0.5).abs() < 0.15).all(), f"a fresh head's small random weights give logits near 0: {base}"
