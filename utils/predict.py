"""The predictor: a trained adapter (or merged model) in, `[{'label': 'POSITIVE', 'score': 0.99}]` out.

Also what the lessons and the widget build on it: word-level explanations (`explain`), merging the
adapter into the base model for export (`merge_adapter`), and a latency measurement.
"""

from __future__ import annotations

import json
import os
import statistics
import time
import warnings
from collections.abc import Iterable, Iterator, Mapping, Set
from contextlib import contextmanager
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer
from transformers.utils import logging as hf_logging

from .bundle import bundled_model
from .config import SetupError
from .data import LABELS, clean_text, is_blank
from .model import config_essentials, load_backbone
from .runs import RUN_INFO

MAX_CHARS_PER_TOKEN = 20  # a review is cut at max_length * this many characters before tokenizing
EXPLAIN_MAX_WORDS = 128  # explain() occludes at most this many words (one forward pass each)
HEAD_NAMES = ("classifier", "score")  # the classification head's module names (peft saves it with the adapter)
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings and progress bars inside the block (restored afterwards).

    Loading a base model for an adapter prints a "LOAD REPORT" listing the classification head as
    MISSING: the head comes from the adapter, so that warning is noise here (`load_adapter` checks
    the head itself).
    """
    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()


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


def _weight_shapes(path: Path) -> dict[str, list[int]]:
    """The tensor names and shapes in an adapter folder's weights file; SetupError if it cannot be read."""
    try:
        if (path / WEIGHT_FILES[0]).is_file():
            from safetensors import safe_open

            with safe_open(str(path / WEIGHT_FILES[0]), framework="pt") as f:
                return {k: list(f.get_slice(k).get_shape()) for k in f.keys()}
        weights = torch.load(path / WEIGHT_FILES[1], map_location="cpu", weights_only=True)
        return {k: list(v.shape) for k, v in weights.items()}
    except Exception as exc:  # noqa: BLE001 - any failure here means a damaged file
        raise SetupError(f"The adapter weights in {path} cannot be read ({type(exc).__name__}): "
                         "the file is damaged; train again or copy the adapter folder again.") from exc


def _read_json(path: Path) -> dict:
    """A JSON file's contents; {} when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def _check_one_save(path: Path, config: dict, shapes: dict) -> None:
    """Refuse adapter files that come from different saves (a save interrupted between peft's two files)."""
    ranks = sorted({shape[0] for key, shape in shapes.items() if ".lora_A." in key})
    lora, targets = _read_json(path / RUN_INFO).get("lora"), config.get("target_modules")
    saved = {"r": config.get("r"), "lora_alpha": config.get("lora_alpha"),
             "target_modules": sorted(targets) if isinstance(targets, list) else targets}
    if ranks and not config.get("rank_pattern") and ranks != [config.get("r")]:
        why = f"adapter_config.json says r={config.get('r')}, the weights have r={ranks[0]}"
    elif lora and lora != saved:
        why = f"adapter_config.json records other LoRA settings than {RUN_INFO}"
    else:
        return
    raise SetupError(f"The files in {path} come from different saves ({why}): a save was interrupted; "
                     "train again or copy the whole adapter folder again.")


def _check_run(path: Path, config: dict) -> None:
    """Warn when the run folder around the adapter did not finish, or recorded other LoRA settings."""
    settings = _read_json(path.parent / "run_config.json")
    if not settings:
        return
    if not (path.parent / "metrics.json").is_file():
        warnings.warn(f"The run in {path.parent} did not finish (no metrics.json): {path} may be left from an "
                      "earlier run with other settings.", UserWarning, stacklevel=3)
    elif (settings.get("lora_r"), settings.get("lora_alpha")) != (config.get("r"), config.get("lora_alpha")):
        warnings.warn(f"{path.parent / 'run_config.json'} records lora_r={settings.get('lora_r')}, lora_alpha="
                      f"{settings.get('lora_alpha')} but the adapter in {path} has r={config.get('r')}, lora_alpha="
                      f"{config.get('lora_alpha')}: they come from different runs.", UserWarning, stacklevel=3)


def _choose_base(path: Path, stored: str, base_model) -> tuple[str, str]:
    """The base model to load (name or folder) and where that choice came from, for error messages.

    `base_model=` first, then LORA_MODEL, then the LORA_BUNDLE room bundle's copy of the model the
    adapter names, then the adapter's own reference; an adapter trained on a local folder names only
    that folder, found through the run's run_config.json on the machine that trained it, and through
    `base_model=` anywhere else.
    """
    if base_model:
        return str(base_model), "base_model="
    if os.environ.get("LORA_MODEL"):
        return os.environ["LORA_MODEL"], "LORA_MODEL"
    bundled = bundled_model(stored)
    if bundled:
        return str(bundled), "LORA_BUNDLE"
    identity = _read_json(path / RUN_INFO).get("base_model", {})
    if identity.get("source") != "local":
        return stored, "adapter_config.json"
    recorded = Path(str(_read_json(path.parent / "run_config.json").get("model", ""))).expanduser()
    if recorded.name == stored and recorded.is_dir():
        return str(recorded), "run_config.json"
    sizes = ", ".join(f"{k} {v}" for k, v in identity.get("config", {}).items())
    raise SetupError(f"The adapter in {path} was trained on a local model folder named {stored!r} ({sizes}): "
                     f"say where that model is on this machine, SentimentPredictor.from_pretrained(adapter, "
                     f"base_model=PATH), LORA_MODEL=PATH, or LORA_BUNDLE=the room bundle it was trained from.")


def _check_identity(path: Path, backbone, base: str, how: str) -> None:
    """Refuse a base model whose architecture or sizes differ from those the adapter was trained on."""
    trained = _read_json(path / RUN_INFO).get("base_model", {})
    here = config_essentials(backbone.config)
    diff = [f"{k} {v} (this model: {here.get(k)})" for k, v in trained.get("config", {}).items() if here.get(k) != v]
    if diff:
        raise SetupError(f"The adapter in {path} does not fit the base model {base!r} (from {how}): it was "
                         f"trained on {trained.get('name')!r} with {', '.join(diff)}; pass base_model= the "
                         "folder of that model.")


def _check_adapter_folder(path: Path) -> tuple[str, dict]:
    """Check that `path` holds one complete adapter with its classification head; return its base model and config."""
    has_weights = any((path / f).is_file() for f in WEIGHT_FILES)
    if not (path / "adapter_config.json").is_file():
        raise SetupError(f"{path} has adapter weights but no adapter_config.json: copy the whole adapter "
                         "folder (both files come from the same save_pretrained).")
    if not has_weights:
        raise SetupError(f"{path} has adapter_config.json but no adapter weights: the save was "
                         "interrupted; train again or copy the whole adapter folder.")
    try:
        config = json.loads((path / "adapter_config.json").read_text())
        base = config["base_model_name_or_path"]
    except (ValueError, KeyError) as exc:
        raise SetupError(f"{path / 'adapter_config.json'} is damaged (no base_model_name_or_path): "
                         "train again or copy the adapter folder again.") from exc
    shapes = _weight_shapes(path)
    _check_one_save(path, config, shapes)
    modules = [k.split(".") for k in shapes if "lora_" not in k]
    if not any(name in parts for parts in modules for name in HEAD_NAMES):
        raise SetupError(f"The adapter in {path} has no classification head (saved without "
                         "modules_to_save): its predictions would be random. Train again with the head "
                         "in modules_to_save (utils.model.lora_config does this).")
    return base, config


def load_adapter(adapter_dir: str | Path, base_model: str | Path | None = None):
    """Load a saved LoRA adapter (with its base model) or a merged model folder, and its tokenizer.

    `base_model` (else the LORA_MODEL variable) says where the adapter's base model is on this
    machine: a Hub name or a local folder; by default the adapter's own reference is used.
    Every problem with the folder (missing, incomplete, damaged, no head, made for another base
    model) raises a one-line SetupError saying what to do; a run that did not finish, or whose
    run_config.json records other LoRA settings, gives a warning.
    """
    path = Path(adapter_dir).expanduser()
    if not path.is_dir():
        raise SetupError(f"No adapter folder at {path}: train one first (python fine_tune_sentiment.py "
                         "--output-dir DIR writes DIR/adapter) or pass the folder that holds adapter_config.json.")
    with quiet_transformers():
        if (path / "adapter_config.json").is_file() or any((path / f).is_file() for f in WEIGHT_FILES):
            stored, config = _check_adapter_folder(path)
            _check_run(path, config)
            base, how = _choose_base(path, stored, base_model)
            try:
                backbone = load_backbone(base)
            except SetupError as exc:
                reason = f": {exc}" if Path(base).expanduser().is_dir() else " here"
                raise SetupError(f"The adapter in {path} needs its base model {base!r} (from {how}), which cannot "
                                 f"be loaded{reason}. Pass base_model=PATH (or set LORA_MODEL=PATH) with the folder "
                                 "of that model on this machine.") from exc
            _check_identity(path, backbone, base, how)
            try:
                model = PeftModel.from_pretrained(backbone, path)
            except (RuntimeError, ValueError) as exc:  # size mismatch, or no module of that name
                raise SetupError(f"The adapter in {path} does not fit the base model {base!r} (from {how}): it "
                                 "was trained on another backbone; pass base_model= the model it was trained on.") from exc
        elif (path / "config.json").is_file():
            model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
        else:
            raise SetupError(f"{path} holds neither an adapter (adapter_config.json) nor a model (config.json).")
        try:
            tokenizer = AutoTokenizer.from_pretrained(path)
        except (OSError, ValueError) as exc:
            raise SetupError(f"{path} has no tokenizer files: save the tokenizer next to the model "
                             "(tokenizer.save_pretrained).") from exc
    if len(tokenizer) > model.config.vocab_size:
        raise SetupError(f"The tokenizer in {path} has {len(tokenizer):,} tokens but the model only "
                         f"{model.config.vocab_size:,}: the adapter was trained on another backbone.")
    return model, tokenizer


def merge_adapter(adapter_dir: str | Path, out_dir: str | Path, base_model: str | Path | None = None) -> Path:
    """Fold the LoRA update into the base weights (`merge_and_unload`) and save model + tokenizer in `out_dir`.

    The result is a plain transformers checkpoint (no peft needed): `SentimentPredictor.from_pretrained`,
    `AutoModelForSequenceClassification.from_pretrained` or `pipeline("text-classification", ...)` load it.
    """
    out = Path(out_dir).expanduser()
    if out.resolve() == Path(adapter_dir).expanduser().resolve():
        raise ValueError("out_dir is the adapter folder: merge into another folder (the adapter would be lost).")
    model, tokenizer = load_adapter(adapter_dir, base_model)
    if not isinstance(model, PeftModel):
        raise SetupError(f"{adapter_dir} holds a merged model already: there is no adapter to merge.")
    merged = model.merge_and_unload()  # returns the base model with W + (alpha/r)·BA in place
    out.mkdir(parents=True, exist_ok=True)
    with quiet_transformers():
        merged.save_pretrained(out)
        tokenizer.save_pretrained(out)
    return out


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
