"""The predictor: a trained adapter (or merged model) in, `[{'label': 'POSITIVE', 'score': 0.99}]` out.

Also what the lessons and the widget build on it: input checks (`validate_reviews`), word-level
explanations (`SentimentPredictor.explain`) and a latency measurement. The adapter's files are read
by `utils.adapter` (`load_adapter`, `merge_adapter`, imported here too).
"""

from __future__ import annotations

import statistics
import time
import warnings
from collections.abc import Iterable, Mapping, Set
from pathlib import Path

import torch

from .adapter import load_adapter, merge_adapter  # merge_adapter: re-exported, lessons import it from here
from .data import LABELS, clean_text, is_blank
from .system import quiet_transformers  # re-exported: lessons import it from here

MAX_CHARS_PER_TOKEN = 20  # a review is cut at max_length * this many characters before tokenizing
EXPLAIN_MAX_WORDS = 128  # explain() occludes at most this many words (one forward pass each)
__all__ = ["SentimentPredictor", "validate_reviews", "measure_latency", "load_adapter", "merge_adapter",
           "quiet_transformers", "MAX_CHARS_PER_TOKEN", "EXPLAIN_MAX_WORDS"]


def _clean_prefix(text: str, max_chars: int) -> str:
    """`clean_text(text)[:max_chars + 1]` without cleaning all of a huge text (the extra character marks "longer")."""
    if len(text) > 4 * max_chars:
        head = clean_text(text[:4 * max_chars])
        if len(head) > max_chars + 8:  # a tag or space cut at the end of the slice cannot reach the part kept
            return head[:max_chars + 1]
    return clean_text(text)[:max_chars + 1]


def validate_reviews(texts, max_chars: int | None = None) -> list[str]:
    """Check a review or a list of reviews and return them cleaned; raise a clear one-line error otherwise.

    Accepted: a str, or a list/tuple (or any ordered collection: a pandas Series, a datasets
    column) of str. `None`, numbers, bytes, dicts, sets and other types raise TypeError (naming
    the position in a list); an empty list, or a review that is empty or only whitespace, control
    or zero-width characters, raises ValueError.
    `<br />` tags and runs of whitespace are cleaned as in training (`utils.data.clean_text`).
    Any language and emoji are accepted.
    With `max_chars`, each review is cleaned and kept only up to `max_chars + 1` characters
    (the predictor cuts there anyway), so a megabyte of text costs no more than a long review.
    """
    if texts is None:
        raise TypeError("No review given (None): pass a review's text, or a list of texts.")
    items = [texts] if isinstance(texts, str) else texts
    if isinstance(items, (bytes, bytearray, Mapping, Set)) or not isinstance(items, Iterable):
        raise TypeError(f"Expected a review (str) or a list of reviews, got {type(texts).__name__}: "
                        "pass the review's text.")
    items = list(items)  # a list, tuple, pandas Series, numpy array, datasets column...
    if not items:
        raise ValueError("The list of reviews is empty: pass at least one review.")
    cleaned = []
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"Review {i} is of type {type(text).__name__}, not str: pass the review's text.")
        text = _clean_prefix(text, max_chars) if max_chars else clean_text(text)
        if is_blank(text):
            raise ValueError(f"Review {i} is empty: type a few words of a review.")
        cleaned.append(text)
    return cleaned


class SentimentPredictor:
    """Predict NEGATIVE/POSITIVE for reviews with a fine-tuned model, batched, on the GPU if there is one.

    `predictor("Great film!")` or `predictor([...])` returns one dict per review:
    `{'label': 'POSITIVE', 'score': 0.97}` (score = probability of that label). Reviews are cleaned
    as in training, and cut to `max_length` tokens like in training (the first tokens are kept); a
    review that was cut gets a third key, `'truncated': True` (absent otherwise). Text longer than
    `max_length * MAX_CHARS_PER_TOKEN` characters is cut before tokenizing, so a 1 MB review costs
    no more than a long one. Any language and emoji are accepted (unknown pieces become [UNK]), but
    the model learnt English reviews only: read scores on other text as unreliable.
    """

    def __init__(self, model, tokenizer, max_length: int | None = None, batch_size: int = 32):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_length = min(max_length or tokenizer.model_max_length, 512)
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, adapter_dir: str | Path, base_model: str | Path | None = None,
                        **kwargs) -> "SentimentPredictor":
        """A predictor from an adapter folder (as saved by training) or a merged model folder.

        `base_model`: where the adapter's base model is on this machine (a Hub name or a folder),
        when it is not where the adapter says (see `load_adapter`).
        """
        return cls(*load_adapter(adapter_dir, base_model), **kwargs)

    def _validate(self, texts) -> list[str]:
        """`validate_reviews`, keeping no more characters than max_length tokens can use (and one more)."""
        return validate_reviews(texts, max_chars=self.max_length * MAX_CHARS_PER_TOKEN)

    def _encode(self, texts: list[str]) -> tuple[dict, list[bool], list[int]]:
        """Tokenize cleaned texts, cut to max_length: (model inputs on the device, truncated?, characters kept)."""
        budget = self.max_length * MAX_CHARS_PER_TOKEN
        cut = [t[:budget] for t in texts]
        fast = getattr(self.tokenizer, "is_fast", False)
        enc = self.tokenizer(cut, truncation=True, max_length=self.max_length, padding=True,
                             return_offsets_mapping=fast, return_tensors="pt")
        full = (enc["attention_mask"].sum(-1) >= self.max_length).tolist()
        if fast:  # where the last kept token ends in the text; anything after it was cut
            kept = enc.pop("offset_mapping")[..., 1].max(-1).values.tolist()
        else:
            kept = [len(c) for c in cut]
        truncated = [len(t) > budget or (f and bool(c[k:].strip())) for t, c, k, f in zip(texts, cut, kept, full)]
        return enc.to(self.device), truncated, kept

    @torch.inference_mode()
    def _predict(self, texts: list[str]) -> tuple[torch.Tensor, list[bool], list[int]]:
        """(n, 2) probabilities, truncated flags and characters kept for cleaned texts (empty ones allowed)."""
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        probs, truncated, kept = torch.empty(len(texts), 2), [False] * len(texts), [0] * len(texts)
        for start in range(0, len(texts), self.batch_size):
            idx = order[start:start + self.batch_size]
            enc, flags, ends = self._encode([texts[i] for i in idx])
            probs[idx] = self.model(**enc).logits.float().softmax(-1).cpu()
            for i, flag, end in zip(idx, flags, ends):
                truncated[i], kept[i] = flag, end
        return probs, truncated, kept

    def probabilities(self, texts) -> torch.Tensor:
        """P(NEGATIVE), P(POSITIVE) for each review, as an (n, 2) tensor on the CPU."""
        return self._predict(self._validate(texts))[0]

    def __call__(self, texts) -> list[dict]:
        """`[{'label': 'POSITIVE', 'score': 0.99}, ...]`, one dict per review; `'truncated': True` on cut ones."""
        probs, truncated, _ = self._predict(self._validate(texts))
        results = []
        for p, cut in zip(probs, truncated):
            result = {"label": LABELS[int(p.argmax())], "score": round(float(p.max()), 4)}
            results.append({**result, "truncated": True} if cut else result)
        return results

    def explain(self, text: str, max_words: int = EXPLAIN_MAX_WORDS) -> list[tuple[str, float]]:
        """Which words pushed the decision, by occlusion: `[(word, weight), ...]` in reading order.

        weight = P(POSITIVE | review) - P(POSITIVE | review without that word): above 0 the word
        pushed towards POSITIVE, below 0 towards NEGATIVE. Words are split on whitespace (punctuation
        stays attached) and every variant runs in batches, one per word. Only words the model sees
        are explained: those within the first max_length tokens, and at most `max_words` of them
        (each costs a forward pass); when words are left out a UserWarning says how many.
        """
        if isinstance(text, (list, tuple)):
            raise TypeError("explain() takes one review (a str): call it once per review.")
        (clean,) = self._validate(text)
        _, (truncated,), (kept,) = self._encode([clean])  # tokenizing tells what the model reads
        seen = clean[:kept].split()  # the words within the max_length tokens kept
        words = seen[:max_words]
        if truncated or len(words) < len(seen):
            why = (f"the model reads only the first {self.max_length} tokens" if len(words) == len(seen)
                   else f"explain() occludes at most {max_words} words")
            warnings.warn(f"Explained the first {len(words)} words of the review only: {why}.",
                          UserWarning, stacklevel=2)
        variants = [" ".join(seen[:i] + seen[i + 1:]) for i in range(len(words))]
        positive = self._predict([" ".join(seen), *variants])[0][:, 1]
        return [(word, round(float(positive[0] - p), 4)) for word, p in zip(words, positive[1:])]


def measure_latency(predictor: SentimentPredictor, text: str, repeats: int = 30, warmup: int = 3) -> float:
    """Median milliseconds of `predictor(text)` over `repeats` runs, after `warmup` untimed ones."""
    for _ in range(warmup):
        predictor(text)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        predictor(text)  # returns CPU values: the GPU has finished
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)
