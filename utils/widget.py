"""The interactive demo: type a review, see the model before and after LoRA side by side, and the words that pushed it.

`render_prediction` does the work as a plain function (tested without a browser); `make_widget`
wires it to ipywidgets so it runs on every change of the text box. The "before" answer is the base
model's: the same predictor with its LoRA adapter switched off by peft's `disable_adapter()`.
"""

from __future__ import annotations

import warnings
from html import escape

import ipywidgets as widgets

from .config import SetupError
from .data import clean_text

WIDGET_MAX_WORDS = 64  # words explained per keystroke: each costs one forward pass
PROMPT = "Type or paste a movie review above to see what the model thinks."
NO_ADAPTER = "no adapter to switch off (a merged model holds the update in its weights)"
BEFORE = "<b>Before LoRA</b>: base model, adapter off"
AFTER = "<b>After LoRA</b>: fine-tuned, adapter on"
PARTS = ("text", "base-label", "base-bar", "label", "bar", "words", "note")  # CSS class suffixes of the widget's parts


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


def p_positive(result: dict) -> float:
    """P(POSITIVE) from one `{'label', 'score'}` result (score is the probability of the label given)."""
    return result["score"] if result["label"] == "POSITIVE" else round(1 - result["score"], 6)


def label_html(result: dict) -> str:
    """The label in its color (green POSITIVE, red NEGATIVE) and P(positive) to 3 decimals."""
    color = "#1f8a3c" if result["label"] == "POSITIVE" else "#c0392b"
    return (f'<b style="color: {color}; font-size: 1.3em">{result["label"]}</b> '
            f'&nbsp; P(positive) = {p_positive(result):.3f}')


def base_model_answer(predictor, text: str) -> dict | None:
    """The base model's answer for `text`: the predictor with its LoRA adapter switched off.

    peft's `PeftModel.disable_adapter()` is a context manager: inside it the LoRA layers add nothing
    and the head saved with the adapter gives way to the one the base model was loaded with (fresh,
    untrained). None for a model without an adapter (a merged model: the update is in its weights).
    """
    model = getattr(predictor, "model", None)
    if not hasattr(model, "disable_adapter"):
        return None
    with model.disable_adapter():
        (result,) = predictor(text)
    return result


def render_prediction(predictor, text, max_words: int = WIDGET_MAX_WORDS) -> dict:
    """What the widget shows for `text`; never raises.

    Returns `{'label': html, 'positive': P(POSITIVE) or None, 'base_label': html, 'base_positive':
    the base model's P(POSITIVE) or None, 'words': html, 'note': html}`: the fine-tuned model's
    answer and the words that pushed it, and beside it the base model's (adapter off).
    Empty text gives a prompt; bad input or any failure gives a one-line message in `note`
    (and `positive` None), so the widget never shows a traceback.
    """
    shown = {"label": "", "positive": None, "base_label": "", "base_positive": None, "words": "", "note": ""}
    if not isinstance(text, str):
        return {**shown, "note": f"⚠ The widget reads one review as text, not {escape(type(text).__name__)}."}
    if not clean_text(text):
        return {**shown, "note": PROMPT}
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            (result,) = predictor(text)
            pairs = predictor.explain(text, max_words=max_words)
            base = base_model_answer(predictor, text)
    except (TypeError, ValueError, SetupError) as exc:
        return {**shown, "note": f"⚠ {escape(str(exc))}"}
    except Exception as exc:  # noqa: BLE001 - the widget shows the problem instead of a traceback
        return {**shown, "note": f"⚠ Could not predict ({type(exc).__name__}): {escape(str(exc))}"}
    notes = [escape(str(w.message)) for w in caught if issubclass(w.category, UserWarning)]
    if result.get("truncated"):
        notes.insert(0, f"The review was cut to the model's first {predictor.max_length} tokens.")
    return {
        "label": label_html(result),
        "positive": p_positive(result),
        "base_label": label_html(base) if base else f'<span style="color: #666">{NO_ADAPTER}</span>',
        "base_positive": p_positive(base) if base else None,
        "words": color_words(pairs),
        "note": " ".join(dict.fromkeys(notes)),
    }


def probability_bar() -> widgets.FloatProgress:
    """An empty P(positive) bar from 0 to 1."""
    return widgets.FloatProgress(value=0.0, min=0.0, max=1.0, description="P(positive)",
                                 style={"description_width": "initial"}, layout=widgets.Layout(width="95%"))


def show_bar(bar: widgets.FloatProgress, positive: float | None) -> None:
    """Fill `bar` to P(positive): green at 0.5 or above, red below, empty when there is no answer."""
    bar.value = positive or 0.0
    bar.bar_style = "" if positive is None else ("success" if positive >= 0.5 else "danger")


def widget_parts(box: widgets.Widget) -> dict[str, widgets.Widget]:
    """The widget's parts by name (`PARTS`: 'text', 'base-label', 'base-bar', 'label', 'bar', 'words', 'note')."""
    found, todo = {}, [box]
    while todo:
        widget = todo.pop()
        found.update({c[len("sentiment-"):]: widget for c in widget._dom_classes if c.startswith("sentiment-")})
        todo.extend(getattr(widget, "children", ()))
    return {name: found[name] for name in PARTS}


def make_widget(predictor, max_words: int = WIDGET_MAX_WORDS) -> widgets.VBox:
    """A text box that predicts as you type: before LoRA beside after LoRA, and the words colored by influence.

    Layout: the text box; two columns, the base model's label and P(positive) bar (adapter off) and
    the fine-tuned model's; the words (fine-tuned model); a note. Each part carries a CSS class
    (`sentiment-text`, `-base-label`, `-base-bar`, `-label`, `-bar`, `-words`, `-note`) for tests and
    styling; `widget_parts(box)` finds them.
    """
    text = widgets.Textarea(placeholder="Type a movie review...", continuous_update=True,
                            layout=widgets.Layout(width="100%", height="6em"))
    base_label, label, words, note = widgets.HTML(), widgets.HTML(), widgets.HTML(), widgets.HTML()
    base_bar, bar = probability_bar(), probability_bar()
    for widget, name in zip((text, base_label, base_bar, label, bar, words, note), PARTS):
        widget.add_class(f"sentiment-{name}")
    half = widgets.Layout(width="50%")
    columns = widgets.HBox([widgets.VBox([widgets.HTML(BEFORE), base_label, base_bar], layout=half),
                            widgets.VBox([widgets.HTML(AFTER), label, bar], layout=half)])

    def update(change=None) -> None:
        """Show both answers for the text box's current value."""
        shown = render_prediction(predictor, text.value, max_words)
        label.value, base_label.value, words.value = shown["label"], shown["base_label"], shown["words"]
        note.value = f'<span style="color: #666">{shown["note"]}</span>' if shown["note"] else ""
        show_bar(bar, shown["positive"])
        show_bar(base_bar, shown["base_positive"])

    text.observe(update, names="value")
    update()
    box = widgets.VBox([text, columns, words, note], layout=widgets.Layout(width="720px"))
    box.add_class("sentiment-widget")
    return box
