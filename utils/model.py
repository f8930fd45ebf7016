"""The backbone (DistilBERT or any local encoder), its tokenizer, and the LoRA adapters around it."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import warnings
from pathlib import Path

import torch
from peft import LoraConfig, PeftModel, TaskType, get_peft_model
from transformers import (AutoModelForSequenceClassification, AutoTokenizer, DistilBertConfig,
                          DistilBertModel, DistilBertTokenizer)

from .config import SMOKE_MODEL, RunConfig, SetupError, check_hub, hub_error
from .data import LABELS, clean_text, load_smoke_reviews

# Where LoRA goes in each architecture (the attention's query and value projections), and the
# layers of the classification head that are trained in full and saved with the adapter.
LORA_TARGETS = {"distilbert": ["q_lin", "v_lin"], "bert": ["query", "value"], "roberta": ["query", "value"]}
HEAD_MODULES = {"distilbert": ["pre_classifier", "classifier"], "bert": ["pooler", "classifier"],
                "roberta": ["classifier"]}
SMOKE_CACHE = Path(os.environ.get("LORA_CACHE", Path.home() / ".cache" / "lora-sentiment")) / "smoke-distilbert-v1"


def build_smoke_model(path: Path = SMOKE_CACHE) -> Path:
    """Build (once) a tiny random DistilBERT and a WordPiece tokenizer for the smoke review set.

    The vocabulary is every word of the shipped reviews plus single characters, so any text
    tokenizes; the sorted word list makes it the same on every machine.
    """
    if (path / "config.json").is_file():
        return path
    reviews = load_smoke_reviews()
    texts = list(reviews["train"]["text"]) + list(reviews["test"]["text"])
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", clean_text(t).lower())})
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"-:;()"))
    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + chars + ["##" + c for c in chars] + words
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(tokens))}
    tokenizer = DistilBertTokenizer(vocab=vocab)
    config = DistilBertConfig(vocab_size=len(vocab), dim=128, n_layers=2, n_heads=4, hidden_dim=256,
                              max_position_embeddings=512, pad_token_id=0, dropout=0.0,
                              attention_dropout=0.0, seq_classif_dropout=0.0)
    torch.manual_seed(0)
    model = DistilBertModel(config)
    tmp = Path(tempfile.mkdtemp(dir=path.parent if path.parent.exists() else None))
    model.save_pretrained(tmp)
    tokenizer.save_pretrained(tmp)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.replace(tmp, path)  # atomic: a second process building at once keeps the first copy
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def resolve_model_path(name: str) -> str:
    """Where to load `name` from: the smoke model's folder, a local folder, or the Hub name itself."""
    if name == SMOKE_MODEL:
        return str(build_smoke_model())
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise SetupError(f"{local} is not a model checkpoint (no config.json): pass a folder saved by save_pretrained.")
        return str(local.resolve())
    if name.startswith((".", "/", "~")):
        raise SetupError(f"Model folder {local} does not exist: check --model / LORA_MODEL.")
    check_hub(f"the model {name!r}")
    return name


def load_tokenizer(name: str, max_length: int | None = None):
    """The tokenizer of `name` (Hub name, local folder or `smoke-distilbert`), capped at `max_length`."""
    try:
        tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(name))
    except OSError as exc:
        raise hub_error(f"the tokenizer of {name!r}") from exc
    if max_length:
        tokenizer.model_max_length = max_length
    return tokenizer


def load_backbone(name: str):
    """A pretrained encoder with a fresh 2-label classification head (NEGATIVE/POSITIVE), in float32."""
    try:
        return AutoModelForSequenceClassification.from_pretrained(
            resolve_model_path(name), num_labels=2, id2label=LABELS,
            label2id={v: k for k, v in LABELS.items()}, dtype=torch.float32)
    except OSError as exc:
        raise hub_error(f"the model {name!r}") from exc


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """The distinct short names of the Linear layers in `model` (candidates for LoRA targets)."""
    return sorted({n.split(".")[-1] for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)})


def default_targets(model: torch.nn.Module) -> list[str]:
    """LoRA target modules for this architecture (DistilBERT: q_lin, v_lin; BERT: query, value)."""
    kind = model.config.model_type
    if kind not in LORA_TARGETS:
        raise SetupError(f"No default LoRA targets for model type {kind!r}: pass --target-modules, "
                         f"some of {linear_module_names(model)}.")
    return list(LORA_TARGETS[kind])


def lora_config(model: torch.nn.Module, cfg: RunConfig) -> LoraConfig:
    """The LoraConfig of a run: rank, alpha, dropout, targets, and the head in `modules_to_save`."""
    return LoraConfig(
        task_type=TaskType.SEQ_CLS,
        r=cfg.lora_r,
        lora_alpha=cfg.lora_alpha,
        lora_dropout=cfg.lora_dropout,
        target_modules=list(cfg.target_modules or default_targets(model)),
        modules_to_save=list(HEAD_MODULES.get(model.config.model_type, ["classifier"])),  # a fresh list: peft mutates it
    )


def add_lora(model: torch.nn.Module, cfg: RunConfig) -> PeftModel:
    """Freeze `model` and wrap it with LoRA adapters (changes `model` in place, returns the wrapper)."""
    try:
        with warnings.catch_warnings():  # peft asks transformers 5 for a renamed attribute: harmless
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = get_peft_model(model, lora_config(model, cfg))
    except ValueError as exc:
        raise SetupError(f"LoRA could not be added ({exc}). Pass --target-modules with names from "
                         f"{linear_module_names(model)}.") from exc
    return peft_model


def base_model_reference(name: str) -> str:
    """How a saved adapter names its base model: as given (Hub name, `smoke-distilbert`) or a full local path."""
    local = Path(name).expanduser()
    return str(local.resolve()) if name != SMOKE_MODEL and local.exists() else name


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
