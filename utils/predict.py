"""The predictor: a trained adapter (or merged model) in, `[{'label': 'POSITIVE', 'score': 0.99}]` out."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .config import SetupError
from .data import LABELS, clean_text
from .model import load_backbone


def validate_reviews(texts) -> list[str]:
    """Check a review or a list of reviews and return them cleaned; raise a clear error otherwise."""
    items = [texts] if isinstance(texts, str) else texts
    if not isinstance(items, (list, tuple)) or not items:
        raise TypeError(f"Expected a review (str) or a non-empty list of reviews, got {type(texts).__name__}.")
    cleaned = []
    for i, text in enumerate(items):
        if not isinstance(text, str):
            raise TypeError(f"Review {i} is a {type(text).__name__}, not a str: pass the review's text.")
        text = clean_text(text)
        if not text:
            raise ValueError(f"Review {i} is empty: type a few words of a review.")
        cleaned.append(text)
    return cleaned


def load_adapter(adapter_dir: str | Path):
    """Load a saved LoRA adapter (with its base model) or a merged model folder, and its tokenizer."""
    path = Path(adapter_dir).expanduser()
    if not path.is_dir():
        raise SetupError(f"No adapter folder at {path}: train one first (python fine_tune_sentiment.py "
                         "--output-dir DIR writes DIR/adapter) or pass the folder that holds adapter_config.json.")
    if (path / "adapter_config.json").is_file():
        if not any((path / f).is_file() for f in ("adapter_model.safetensors", "adapter_model.bin")):
            raise SetupError(f"{path} has adapter_config.json but no adapter weights: the save was "
                             "interrupted; train again or copy the whole adapter folder.")
        base = json.loads((path / "adapter_config.json").read_text())["base_model_name_or_path"]
        try:
            model = PeftModel.from_pretrained(load_backbone(base), path)
        except RuntimeError as exc:  # shape mismatch: saved for another backbone
            raise SetupError(f"The adapter in {path} does not fit the base model {base!r}: "
                             "it was trained on another backbone.") from exc
    elif (path / "config.json").is_file():
        model = AutoModelForSequenceClassification.from_pretrained(path, dtype=torch.float32)
    else:
        raise SetupError(f"{path} holds neither an adapter (adapter_config.json) nor a model (config.json).")
    return model, AutoTokenizer.from_pretrained(path)


class SentimentPredictor:
    """Predict NEGATIVE/POSITIVE for reviews with a fine-tuned model, batched, on the GPU if there is one."""

    def __init__(self, model, tokenizer, max_length: int | None = None, batch_size: int = 32):
        self.device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = model.to(self.device).eval()
        self.tokenizer = tokenizer
        self.max_length = min(max_length or tokenizer.model_max_length, 512)
        self.batch_size = batch_size

    @classmethod
    def from_pretrained(cls, adapter_dir: str | Path, **kwargs) -> "SentimentPredictor":
        """A predictor from an adapter folder (as saved by training) or a merged model folder."""
        return cls(*load_adapter(adapter_dir), **kwargs)

    @torch.inference_mode()
    def probabilities(self, texts) -> torch.Tensor:
        """P(NEGATIVE), P(POSITIVE) for each review, as an (n, 2) tensor on the CPU."""
        texts = validate_reviews(texts)
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        probs = torch.empty(len(texts), 2)
        for start in range(0, len(texts), self.batch_size):
            idx = order[start:start + self.batch_size]
            batch = self.tokenizer([texts[i] for i in idx], truncation=True, max_length=self.max_length,
                                   padding=True, return_tensors="pt").to(self.device)
            probs[idx] = self.model(**batch).logits.float().softmax(-1).cpu()
        return probs

    def __call__(self, texts) -> list[dict]:
        """`[{'label': 'POSITIVE', 'score': 0.99}, ...]`, one dict per review."""
        probs = self.probabilities(texts)
        return [{"label": LABELS[int(p.argmax())], "score": round(float(p.max()), 4)} for p in probs]
