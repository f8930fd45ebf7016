"""The interactive demo: type a review, see the label, P(positive) as a bar, and the words that pushed it.

`render_prediction` does the work as a plain function (tested without a browser); `make_widget`
wires it to ipywidgets so it runs on every change of the text box.
"""

from __future__ import annotations

import warnings
from html import escape

import ipywidgets as widgets

from .config import SetupError
from .data import clean_text

WIDGET_MAX_WORDS = 64  # words explained per keystroke: each costs one forward pass
PROMPT = "Type or paste a movie review above to see what the model thinks."


def color_words(pairs: list[tuple[str, float]]) -> str:
    """HTML of the words shaded by weight: green pushed towards POSITIVE, red towards NEGATIVE."""
    top = max((abs(w) for _, w in pairs), default=0.0) or 1.0
    spans = []
    for word, weight in pairs:
        rgb = "34,160,60" if weight > 0 else "215,50,40"
        alpha = 0.75 * abs(weight) / top
        spans.append(f'<span title="{weight:+.4f}" style="background: rgba({rgb},{alpha:.2f}); '
                     f'padding: 1px 3px; border-radius: 3px">{escape(word)}</span>')
    return " ".join(spans)


def render_prediction(predictor, text, max_words: int = WIDGET_MAX_WORDS) -> dict:
    """What the widget shows for `text`; never raises.

    Returns `{'label': html, 'positive': P(POSITIVE) or None, 'words': html, 'note': html}`.
    Empty text gives a prompt; bad input or any failure gives a one-line message in `note`
    (and `positive` None), so the widget never shows a traceback.
    """
    shown = {"label": "", "positive": None, "words": "", "note": ""}
    if not isinstance(text, str):
        return {**shown, "note": f"⚠ The widget reads one review as text, not {escape(type(text).__name__)}."}
    if not clean_text(text):
        return {**shown, "note": PROMPT}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (result,) = predictor(text)
            pairs = predictor.explain(text, max_words=max_words)
    except (TypeError, ValueError, SetupError) as exc:
        return {**shown, "note": f"⚠ {escape(str(exc))}"}
    except Exception as exc:  # noqa: BLE001 - the widget shows the problem instead of a traceback
        return {**shown, "note": f"⚠ Could not predict ({type(exc).__name__}): {escape(str(exc))}"}
    positive = result["score"] if result["label"] == "POSITIVE" else 1 - result["score"]
    color = "#1f8a3c" if result["label"] == "POSITIVE" else "#c0392b"
    notes = [escape(str(w.message)) for w in caught if issubclass(w.category, UserWarning)]
    if result.get("truncated"):
        notes.insert(0, f"The review was cut to the model's first {predictor.max_length} tokens.")
    return {
        "label": f'<b style="color: {color}; font-size: 1.3em">{result["label"]}</b> '
                 f'&nbsp; P(positive) = {positive:.3f}',
        "positive": positive,
        "words": color_words(pairs),
        "note": " ".join(dict.fromkeys(notes)),
    }


def make_widget(predictor, max_words: int = WIDGET_MAX_WORDS) -> widgets.VBox:
    """A text box that predicts as you type: label, P(positive) bar, and the words colored by influence.

    Children, in order: Textarea, label (HTML), bar (FloatProgress), words (HTML), note (HTML).
    Each carries a CSS class (`sentiment-text`, `-label`, `-bar`, `-words`, `-note`) for tests and styling.
    """
    text = widgets.Textarea(placeholder="Type a movie review...", continuous_update=True,
                            layout=widgets.Layout(width="100%", height="6em"))
    label = widgets.HTML()
    bar = widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description="P(positive)",
                                style={"description_width": "initial"}, layout=widgets.Layout(width="60%"))
    words, note = widgets.HTML(), widgets.HTML()
    for widget, name in ((text, "text"), (label, "label"), (bar, "bar"), (words, "words"), (note, "note")):
        widget.add_class(f"sentiment-{name}")

    def update(change=None) -> None:
        """Show the prediction for the text box's current value."""
        shown = render_prediction(predictor, text.value, max_words)
        label.value, words.value = shown["label"], shown["words"]
        note.value = f'<span style="color: #666">{shown["note"]}</span>' if shown["note"] else ""
        bar.value = shown["positive"] or 0.0
        bar.bar_style = "" if shown["positive"] is None else ("success" if shown["positive"] >= 0.5 else "danger")

    text.observe(update, names="value")
    update()
    box = widgets.VBox([text, label, bar, words, note], layout=widgets.Layout(width="640px"))
    box.add_class("sentiment-widget")
    return box
