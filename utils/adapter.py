"""The adapter's on-disk format, in one place: what training saves, and what loading it checks.

An adapter folder holds peft's two files (`adapter_config.json`, `adapter_model.safetensors`: the LoRA
matrices and the classification head), the tokenizer, and `run_info.json` (written last: the base
model's identity, the labels and the LoRA settings). `save_adapter` writes it with no path of this
machine inside; `load_adapter` checks it (complete, one save, a head, the right base model) and
loads it; `merge_adapter` folds the LoRA update into the base weights for export.
"""

from __future__ import annotations

import json
import os
import shutil
import warnings
from pathlib import Path

import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer

from .config import RunConfig, SetupError, bundled_model, hub_source
from .data import LABELS
from .model import base_model_reference, config_essentials, load_backbone, model_source
from .system import quiet_transformers, read_json, write_json

RUN_INFO = "run_info.json"  # in adapter/: the base model's identity, the labels, the LoRA settings
HEAD_NAMES = ("classifier", "score")  # the classification head's module names (peft saves it with the adapter)
WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def save_adapter(model, tokenizer, cfg: RunConfig, folder: str | Path) -> Path:
    """Save the LoRA weights, head and tokenizer so they load on any machine, readable by all (0644).

    No file holds a path of this machine: `base_model_name_or_path` (and the model card) name a Hub
    model as is (a room bundle's copy of one too), a local one by its folder name; `run_info.json`
    adds what identifies the base model (its config's sizes), the labels and the LoRA settings. It is
    written last: its presence says that both of peft's files were saved.
    """
    folder = Path(folder)
    shutil.rmtree(folder, ignore_errors=True)  # nothing of an earlier save mixes in
    hub = hub_source(cfg.model)  # a room bundle's copy of a Hub model is named by its Hub name
    reference, source = (hub, "hub") if hub else (base_model_reference(cfg.model), model_source(cfg.model))
    lora = model.peft_config["default"]
    targets = lora.target_modules if isinstance(lora.target_modules, str) else sorted(lora.target_modules)
    lora.base_model_name_or_path = reference  # what predictors load
    base = model.get_base_model()
    base.name_or_path = base.config.name_or_path = reference  # the model card (README.md) names it too
    model.save_pretrained(folder, save_embedding_layers=False)  # only LoRA and the head
    tokenizer.save_pretrained(folder)
    write_json(folder / RUN_INFO, {
        "base_model": {"name": reference, "source": source,
                       "config": config_essentials(base.config)},
        "id2label": LABELS, "label2id": {v: k for k, v in LABELS.items()},
        "lora": {"r": lora.r, "lora_alpha": lora.lora_alpha, "target_modules": targets},
        "max_length": cfg.max_length,
    })
    for path in folder.iterdir():
        if path.is_file():
            os.chmod(path, 0o644)  # safetensors writes 0600: others on a shared machine could not read it
    return folder


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


def _check_one_save(path: Path, config: dict, shapes: dict) -> None:
    """Refuse adapter files that come from different saves (a save interrupted between peft's two files)."""
    ranks = sorted({shape[0] for key, shape in shapes.items() if ".lora_A." in key})
    lora, targets = read_json(path / RUN_INFO).get("lora"), config.get("target_modules")
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
    settings = read_json(path.parent / "run_config.json")
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
    identity = read_json(path / RUN_INFO).get("base_model", {})
    if identity.get("source") != "local":
        return stored, "adapter_config.json"
    recorded = Path(str(read_json(path.parent / "run_config.json").get("model", ""))).expanduser()
    if recorded.name == stored and recorded.is_dir():
        return str(recorded), "run_config.json"
    sizes = ", ".join(f"{k} {v}" for k, v in identity.get("config", {}).items())
    raise SetupError(f"The adapter in {path} was trained on a local model folder named {stored!r} ({sizes}): "
                     f"say where that model is on this machine, SentimentPredictor.from_pretrained(adapter, "
                     f"base_model=PATH), LORA_MODEL=PATH, or LORA_BUNDLE=the room bundle it was trained from.")


def _check_identity(path: Path, backbone, base: str, how: str) -> None:
    """Refuse a base model whose architecture or sizes differ from those the adapter was trained on."""
    trained = read_json(path / RUN_INFO).get("base_model", {})
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
