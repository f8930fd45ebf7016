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
                          DistilBertForSequenceClassification, DistilBertModel, DistilBertTokenizer, LlamaConfig, LlamaForCausalLM,
                          PreTrainedTokenizerFast)

from .config import SMOKE_DECODER, SMOKE_MODEL, RunConfig, SetupError
from .hub import check_hub, hub_error
from .data import LABELS, clean_text, load_smoke_reviews

# Where LoRA goes in each architecture (the attention's query and value projections), and the
# layers of the classification head that are trained in full and saved with the adapter.
# Llama-family decoders (Llama, Mistral, Qwen2, SmolLM2) name their attention projections q/k/v/o_proj
# and their classification head `score`.
_DECODER_ATTENTION = ["q_proj", "k_proj", "v_proj", "o_proj"]
LORA_TARGETS = {"distilbert": ["q_lin", "v_lin"], "bert": ["query", "value"], "roberta": ["query", "value"],
                "llama": _DECODER_ATTENTION, "mistral": _DECODER_ATTENTION, "qwen2": _DECODER_ATTENTION}
HEAD_MODULES = {"distilbert": ["pre_classifier", "classifier"], "bert": ["pooler", "classifier"],
                "roberta": ["classifier"], "llama": ["score"], "mistral": ["score"], "qwen2": ["score"]}
CACHE_DIR = Path(os.environ.get("LORA_CACHE", Path.home() / ".cache" / "lora-sentiment"))
SMOKE_CACHE = CACHE_DIR / "smoke-distilbert-v2"
SMOKE_DECODER_CACHE = CACHE_DIR / "smoke-llama-v1"
# SmolLM2's chat template (ChatML), also given to the smoke decoder's tokenizer.
CHAT_TEMPLATE = (
    "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
    "{{ '<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n' }}"
    "{% endif %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}")


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
    return save_atomically(path, _pretrain_smoke(DistilBertForSequenceClassification(config), tokenizer, reviews["train"]),
                           tokenizer)


def _pretrain_smoke(model, tokenizer, train, epochs: int = 10) -> DistilBertModel:
    """Give the random smoke backbone features to adapt: a few seconds of full training on the smoke train split.

    A random backbone has nothing for LoRA on `q_lin`/`v_lin` to adapt (its runs stay near chance), so
    the smoke model is "pretrained" on the 160 shipped training reviews; only the backbone is kept, and
    every run adds a fresh head, as with DistilBERT. Seeded: the same model on every machine.
    """
    enc = tokenizer(list(train["text"]), truncation=True, max_length=64, padding=True, return_tensors="pt")
    labels = torch.tensor(train["label"])
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    generator = torch.Generator().manual_seed(0)
    model.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(labels), generator=generator).split(16):
            model(input_ids=enc["input_ids"][idx], attention_mask=enc["attention_mask"][idx], labels=labels[idx]).loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    return model.distilbert.eval()


def save_atomically(path: Path, *parts) -> Path:
    """Save each of `parts` (model, tokenizer) with save_pretrained into `path`, all at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=path.parent))  # beside `path`: the rename below stays on one file system
    tmp.chmod(0o755)  # mkdtemp makes it private
    for part in parts:
        part.save_pretrained(tmp)
    try:
        os.replace(tmp, path)  # atomic: a second process building at once keeps the first copy
    except OSError:
        shutil.rmtree(tmp, ignore_errors=True)
    return path


def build_smoke_decoder(path: Path = SMOKE_DECODER_CACHE) -> Path:
    """Build (once) a tiny random Llama decoder and tokenizer: the smoke profile's small LLM (lesson 06).

    Like a real Llama or Mistral tokenizer it has no pad token (load_tokenizer sets one); it has
    SmolLM2's chat template and special tokens. The vocabulary is the smoke reviews' words, the
    chat template's and the label words, sorted, so the model is the same on every machine.
    """
    if (path / "config.json").is_file():
        return path
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers

    reviews = load_smoke_reviews()
    texts = list(reviews["train"]["text"]) + list(reviews["test"]["text"])
    texts += [CHAT_TEMPLATE, "positive negative sentiment review answer word movie one"]
    words = sorted({w for t in texts for w in re.findall(r"\w+|[^\w\s]", clean_text(t).lower())})
    chars = sorted(set("abcdefghijklmnopqrstuvwxyz0123456789.,!?'\"-:;()"))
    special = ["<unk>", "<|im_start|>", "<|im_end|>"]
    vocab = {tok: i for i, tok in enumerate(dict.fromkeys(special + chars + ["##" + c for c in chars] + words))}
    backend = Tokenizer(models.WordPiece(vocab=vocab, unk_token="<unk>"))
    backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    backend.decoder = decoders.WordPiece()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="<unk>", bos_token="<|im_start|>",
                                        eos_token="<|im_end|>")  # no pad token, as in Llama and Mistral
    tokenizer.chat_template = CHAT_TEMPLATE
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512,
                         bos_token_id=vocab["<|im_start|>"], eos_token_id=vocab["<|im_end|>"],
                         pad_token_id=None, tie_word_embeddings=True)
    torch.manual_seed(0)
    return save_atomically(path, LlamaForCausalLM(config), tokenizer)


def resolve_model_path(name: str) -> str:
    """Where to load `name` from: a smoke model's folder, a local folder, or the Hub name itself."""
    if name == SMOKE_MODEL:
        return str(build_smoke_model())
    if name == SMOKE_DECODER:
        return str(build_smoke_decoder())
    local = Path(name).expanduser()
    if local.exists():
        if not (local / "config.json").is_file():
            raise SetupError(f"{local} is not a model checkpoint (no config.json): pass a folder saved by save_pretrained.")
        return str(local.resolve())
    if name.startswith((".", "/", "~")):
        raise SetupError(f"Model folder {local} does not exist: check --model / LORA_MODEL.")
    check_hub(f"the model {name!r}", name)
    return name


def load_tokenizer(name: str, max_length: int | None = None):
    """The tokenizer of `name` (Hub name, local folder or a smoke model), capped at `max_length`.

    Decoders (Llama, Mistral) often have no pad token: their end-of-sequence token pads then.
    """
    path = resolve_model_path(name)
    missing = SetupError(f"No usable tokenizer in the model folder {path}: copy the tokenizer files "
                         "(tokenizer.json or vocab.txt, tokenizer_config.json) there, or pass another --model / LORA_MODEL.")
    try:
        tokenizer = AutoTokenizer.from_pretrained(path)
    except (OSError, ValueError) as exc:
        if Path(path).is_dir():  # a local folder: the Hub is not to blame
            raise missing from None
        raise hub_error(f"the tokenizer of {name!r}") from exc
    if len(tokenizer) <= len(set(tokenizer.all_special_tokens)):  # transformers 5 builds an empty one from config.json
        raise missing
    if tokenizer.pad_token is None and tokenizer.eos_token is not None:
        tokenizer.pad_token = tokenizer.eos_token
    if max_length:
        tokenizer.model_max_length = max_length
    return tokenizer


def load_backbone(name: str):
    """A pretrained encoder or decoder with a fresh 2-label classification head (NEGATIVE/POSITIVE), in float32.

    A decoder classifies from its last non-pad token, so it must know the pad token's id: when its
    config has none, the tokenizer's (see load_tokenizer) is set in `model.config.pad_token_id`.
    """
    path = resolve_model_path(name)
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            path, num_labels=2, id2label=LABELS, label2id={v: k for k, v in LABELS.items()}, dtype=torch.float32)
    except Exception as exc:  # noqa: BLE001 - a local folder's problem is not the Hub's
        if Path(path).is_dir():
            reason = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else ""
            raise SetupError(f"The model in {path} cannot be loaded ({type(exc).__name__}: {reason}): its "
                             "weights (model.safetensors or pytorch_model.bin) are missing or damaged; "
                             "copy the whole checkpoint folder again.") from exc
        if isinstance(exc, OSError):
            raise hub_error(f"the model {name!r}") from exc
        raise
    if model.config.pad_token_id is None:
        model.config.pad_token_id = load_tokenizer(name).pad_token_id
    return model


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
        modules_to_save=head_modules(model),  # a fresh list: peft mutates it
    )


def head_modules(model: torch.nn.Module) -> list[str]:
    """The classification head's modules of `model`'s architecture (HEAD_MODULES; `classifier` if unknown), a fresh list."""
    return list(HEAD_MODULES.get(model.config.model_type, ["classifier"]))


def add_lora(model: torch.nn.Module, cfg: RunConfig) -> PeftModel:
    """Freeze `model` and wrap it with LoRA adapters (changes `model` in place, returns the wrapper)."""
    if not isinstance(cfg.lora_r, int) or cfg.lora_r < 1:
        raise SetupError(f"--lora-r {cfg.lora_r} is out of range: the rank of the LoRA update is at least 1, such as 8.")
    try:
        with warnings.catch_warnings():  # peft asks transformers 5 for a renamed attribute: harmless
            warnings.simplefilter("ignore", FutureWarning)
            peft_model = get_peft_model(model, lora_config(model, cfg))
    except ValueError as exc:
        raise SetupError(f"LoRA could not be added ({exc}). Pass --target-modules with names from "
                         f"{linear_module_names(model)}.") from exc
    return peft_model


def model_source(name: str) -> str:
    """Where `name` comes from: `smoke` (built offline), `local` (a folder on this machine) or `hub`."""
    if name in (SMOKE_MODEL, SMOKE_DECODER):
        return "smoke"
    return "local" if Path(name).expanduser().exists() else "hub"


def base_model_reference(name: str) -> str:
    """How a saved adapter names its base model: a Hub or smoke name as given, a local folder by its name only.

    Never a path of this machine: elsewhere the folder lives somewhere else (the predictor's
    `base_model=` says where); `config_essentials` tells whether a folder holds that model.
    """
    return Path(name).expanduser().resolve().name if model_source(name) == "local" else name


ESSENTIAL_KEYS = ("model_type", "vocab_size", "dim", "hidden_size", "n_layers", "num_hidden_layers", "n_heads",
                  "num_attention_heads", "hidden_dim", "intermediate_size", "max_position_embeddings")


def config_essentials(config) -> dict:
    """What identifies a backbone in its config (architecture and sizes), without any path."""
    values = config.to_dict()
    return {k: values[k] for k in ESSENTIAL_KEYS if k in values}


def count_parameters(model: torch.nn.Module) -> tuple[int, int]:
    """(trainable, total) parameter counts: peft's own counter for a PeftModel (what print_trainable_parameters shows)."""
    if isinstance(model, PeftModel):
        return model.get_nb_trainable_parameters()
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable, sum(p.numel() for p in model.parameters())
