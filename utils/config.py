"""Run configuration: three profiles of one recipe, resolved once and printed as a table.

A profile fixes the sizes of a run (`gpu`: the real lesson, `cpu`: a laptop, `smoke`: CI).
Every field can be overridden by an argument or an environment variable, so the same
code path runs everywhere.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .hub import check_hub, hub_error, hub_reachable  # re-exported for the modules that import them from here
from .system import SetupError, installed, usable_cores  # SetupError: the lessons import it from here

SMOKE_MODEL = "smoke-distilbert"  # a tiny DistilBERT built offline by utils.model
SMOKE_DECODER = "smoke-llama"  # a tiny Llama-family decoder built offline by utils.model (lesson 06)
SMOKE_DATA = "smoke"  # the small review set in utils/assets
HUB_DATASET = "stanfordnlp/imdb"
MANIFEST = "bundle.json"  # a room bundle's table of contents (written by utils.bundle, read here)
HUB_SOURCE = "hub: "  # bundle.json's "source" of a part copied from the Hub: this, then its name
__all__ = ["SMOKE_MODEL", "SMOKE_DECODER", "SMOKE_DATA", "HUB_DATASET", "MANIFEST", "HUB_SOURCE", "SetupError",
           "RunConfig", "PROFILES", "CONFIG_FIELDS", "cast_for", "add_config_arguments", "OneLineParser",
           "default_profile", "resolve_config", "read_manifest", "hub_source", "bundled_model", "bundle_values",
           "run_cli", "shown_paths", "set_threads", "versions", "check_hub", "hub_error", "hub_reachable"]


def _setting(default=None, help: str = "", factory=None):  # noqa: A002 - argparse's word
    """A RunConfig field with its command-line help (`add_config_arguments` builds the options from these)."""
    if factory is not None:
        return field(default_factory=factory, metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class RunConfig:
    """Everything one training run needs to know; see PROFILES for the values of each profile.

    Each field is declared once, here: its type, its default, and its help text. The command-line
    options of the script and the tools (`add_config_arguments`) and the LORA_<FIELD> environment
    variables (`resolve_config`) are made from these fields; `utils.runs.validate_config` checks them.
    """

    profile: str = _setting(help="gpu, cpu or smoke (default: LORA_PROFILE, else gpu if CUDA else cpu)")
    model: str = _setting("distilbert-base-uncased",
                          "Hub name or local checkpoint folder (default: distilbert-base-uncased)")
    data_dir: str | None = _setting(None, "local IMDB: train/test parquet or csv (text,label), or the aclImdb "
                                          "folder (default: the Hub's IMDB, or the smoke set for smoke)")
    train_size: int | None = _setting(None, "seeded, stratified subset of the training reviews (default: all)")
    eval_size: int | None = _setting(None, "seeded, stratified subset of the test reviews (evaluated once, at the end)")
    val_size: int = _setting(2500, "validation reviews carved from the training split (pick the best epoch)")
    max_length: int = _setting(512, "tokens kept per review")
    epochs: float = _setting(2, "passes over the training reviews (0.5 trains half an epoch)")
    batch_size: int = _setting(16, "reviews per training step")
    lr: float = _setting(5e-4, "learning rate (LoRA wants ~10x a full fine-tune's)")
    lora_r: int = _setting(8, "rank of the LoRA update")
    lora_alpha: int = _setting(16, "scale of the LoRA update (alpha / r)")
    lora_dropout: float = _setting(0.1, "dropout on the LoRA update's input")
    target_modules: list[str] | None = _setting(None, "comma-separated module names to adapt "
                                                      "(default: from the architecture, utils.model)")
    seed: int = _setting(42, "random seed of the subsets, the head and the training order")
    decoder: str = _setting("HuggingFaceTB/SmolLM2-135M-Instruct",
                            "lesson 06's small LLM (Hub name or local folder)")
    use_cpu: bool = _setting(False, "train on the CPU even when a GPU (CUDA or Apple MPS) is there")
    output_dir: str = _setting("", "where checkpoints, adapter/ and metrics.json go "
                                   "(default: outputs/lora-imdb-<profile>)")
    extra: dict = _setting(help="free-form notes shown in the table", factory=dict)

    def table(self) -> str:
        """The configuration as a two-column text table (printed by the script and notebooks)."""
        rows = [(f.name, getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "extra"]
        rows += list(self.extra.items())
        rows = [(k, "auto" if v is None else v) for k, v in rows]
        width = max(len(k) for k, _ in rows)
        return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


PROFILES: dict[str, dict] = {
    # The real lesson: full IMDB on a GPU.
    "gpu": dict(model="distilbert-base-uncased", val_size=2500, max_length=512, epochs=2, batch_size=64, lr=1e-3),
    # A laptop or workshop CPU: a seeded, stratified few thousand reviews, shorter reviews.
    "cpu": dict(model="distilbert-base-uncased", train_size=2000, eval_size=1000, val_size=500,
                max_length=256, epochs=1, batch_size=16, lr=2e-3),
    # CI and nbmake: a tiny offline model on the shipped review set, seconds per run; the same LoRA settings.
    "smoke": dict(model=SMOKE_MODEL, decoder=SMOKE_DECODER, data_dir=SMOKE_DATA, val_size=32, max_length=64,
                  epochs=3, batch_size=16, lr=5e-3),
}


def _truthy(text: str) -> bool:
    """An environment variable's yes/no: 1, true, yes, on (any case) are yes."""
    return text.strip().lower() in ("1", "true", "yes", "on")


def _names(text: str) -> list[str]:
    """A comma-separated list of names ("q_lin, v_lin" -> ["q_lin", "v_lin"])."""
    return [m.strip() for m in text.split(",") if m.strip()]


# How the text of an option or a LORA_<FIELD> variable becomes a field's value, by the field's type.
_CASTS = {"int": int, "int | None": int, "float": float, "bool": _truthy, "list[str] | None": _names}
_KINDS = {int: "a whole number", float: "a number"}
CONFIG_FIELDS = [f for f in dataclasses.fields(RunConfig) if f.name != "extra"]


def cast_for(name: str):
    """The function that turns the text of setting `name` into its value (str for text settings)."""
    return _CASTS.get(next(f.type for f in CONFIG_FIELDS if f.name == name), str)


def add_config_arguments(parser: argparse.ArgumentParser, names=None, **helps: str) -> argparse.ArgumentParser:
    """Add an option for each RunConfig field in `names` (default: all): `--max-length` for max_length, and so on.

    Type and help come from the field; `helps` replace a field's help for this command. Every
    option defaults to None (left out: the profile's value, or LORA_<FIELD>), so the parsed
    options can go straight into `resolve_config`.
    """
    for f in CONFIG_FIELDS:
        if names is not None and f.name not in names:
            continue
        flag, text = f"--{f.name.replace('_', '-')}", helps.get(f.name, f.metadata.get("help"))
        if f.name == "profile":
            parser.add_argument(flag, choices=list(PROFILES), help=text)
        elif f.type == "bool":
            parser.add_argument(flag, action="store_true", default=None, help=text)
        else:
            parser.add_argument(flag, type=cast_for(f.name), help=text)
    return parser


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, like every other bad input of the script and the tools.

    Give it the command as `prog` (`python -m utils.experiments`); the default is `python <script>`.
    """

    def __init__(self, *args, prog: str | None = None, **kwargs):
        super().__init__(*args, prog=prog or f"python {Path(sys.argv[0]).name}", **kwargs)

    def error(self, message: str):
        """Exit with `Error: <what is wrong>` (argparse would print the whole usage first)."""
        self.exit(2, f"Error: {message} ({self.prog} --help lists the options)\n")


def default_profile() -> str:
    """`gpu` when CUDA is available, else `cpu`."""
    return "gpu" if torch.cuda.is_available() else "cpu"


def resolve_config(profile: str | None = None, **overrides) -> RunConfig:
    """Build the run's configuration: argument > LORA_PROFILE / LORA_<FIELD> environment > room bundle > profile.

    `overrides` whose value is None are ignored, so argparse results can be passed straight in.
    `bundle=DIR` (else LORA_BUNDLE) takes the model, decoder and IMDB from a room bundle (utils.bundle).
    """
    chosen = profile or os.environ.get("LORA_PROFILE") or default_profile()
    if chosen not in PROFILES:
        raise SetupError(f"Unknown profile {chosen!r}: choose one of {', '.join(PROFILES)}.")
    values = dict(PROFILES[chosen])
    bundle = overrides.pop("bundle", None) or os.environ.get("LORA_BUNDLE")
    if bundle:  # a room bundle (python -m utils.bundle) stands in for the Hub's model, decoder and IMDB
        values.update(bundle_values(bundle, values))
    for f in CONFIG_FIELDS:
        env = os.environ.get(f"LORA_{f.name.upper()}")
        if env and f.name != "profile":
            cast = cast_for(f.name)
            try:
                values[f.name] = cast(env)
            except ValueError:
                kind = _KINDS.get(cast, "a valid value")
                raise SetupError(f"LORA_{f.name.upper()}={env!r} is not {kind}: fix or unset that variable.") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.setdefault("output_dir", f"outputs/lora-imdb-{chosen}")
    return RunConfig(profile=chosen, **values)


# --- room bundles (made by utils.bundle) --------------------------------------------------------

def read_manifest(bundle: str | Path) -> tuple[Path, dict]:
    """The bundle's folder (absolute) and its bundle.json; SetupError when `bundle` is no bundle."""
    path = Path(bundle).expanduser().resolve()
    if not (path / MANIFEST).is_file():
        raise SetupError(f"{path} is not a room bundle (no {MANIFEST}): make one with python -m utils.bundle {bundle}, "
                         "or check LORA_BUNDLE / --bundle.")
    try:
        return path, json.loads((path / MANIFEST).read_text())
    except ValueError as exc:
        raise SetupError(f"{path / MANIFEST} is damaged ({exc}): make the bundle again.") from exc


def _parts(manifest: dict):
    """(folder name, Hub name or None) of the bundle's model and decoder."""
    for part in ("model", "decoder"):
        entry = manifest.get(part) or {}
        source = str(entry.get("source", ""))
        if entry.get("path"):
            yield entry["path"], source.removeprefix(HUB_SOURCE) if source.startswith(HUB_SOURCE) else None


def hub_source(folder: str | Path) -> str | None:
    """The Hub name that a bundle's model or decoder `folder` was copied from; None for any other folder."""
    folder = Path(folder).expanduser().resolve()
    try:
        manifest = json.loads((folder.parent / MANIFEST).read_text())
    except (OSError, ValueError):
        return None
    return next((hub for path, hub in _parts(manifest) if path == folder.name), None)


def bundled_model(name: str) -> Path | None:
    """The folder of LORA_BUNDLE's bundle that holds the base model an adapter names (a Hub name or folder name)."""
    bundle = os.environ.get("LORA_BUNDLE")
    if not bundle or not (Path(bundle).expanduser() / MANIFEST).is_file():
        return None
    path, manifest = read_manifest(bundle)
    return next((path / folder for folder, hub in _parts(manifest) if name in (folder, hub)), None)


def bundle_values(bundle: str | Path, values: dict, log=print) -> dict:
    """The settings a bundle replaces in a profile's `values`: the Hub's model, decoder and IMDB, with its folders.

    The smoke profile's offline model and data are kept; resolve_config applies LORA_* variables and
    arguments after this, so they still win. Says in one line which bundle is used, and for what.
    """
    path, manifest = read_manifest(bundle)
    chosen = {}
    if manifest.get("model") and values.get("model") != SMOKE_MODEL:
        chosen["model"] = str(path / manifest["model"]["path"])
    if manifest.get("decoder") and values.get("decoder") != SMOKE_DECODER:
        chosen["decoder"] = str(path / manifest["decoder"]["path"])
    if manifest.get("imdb") and values.get("data_dir") is None:
        chosen["data_dir"] = str(path / manifest["imdb"]["path"])
    if not chosen:
        log(f"Room bundle {path}: not used, this profile's model and data are offline already")
        return {}
    log(f"Room bundle {path}: using its {', '.join(chosen)}")
    return {**chosen, "extra": {**values.get("extra", {}), "bundle": str(path)}}


def run_cli(main) -> None:
    """Run a command's `main()` and exit with its status; a SetupError exits with its one line, `Error: ...`."""
    try:
        sys.exit(main())
    except SetupError as err:
        sys.exit(f"Error: {err}")


def shown_paths(value):
    """`value` (JSON-like) without this machine's folders: the working folder's paths relative, its parent ../, home ~/."""
    if isinstance(value, dict):
        return {k: shown_paths(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [shown_paths(v) for v in value]
    if not isinstance(value, str):
        return value
    cwd = Path.cwd()
    for folder, shown in ((cwd, ""), (cwd.parent, "../"), (Path.home(), "~/")):
        if folder != Path(folder.anchor):  # never rewrite a bare / or C:\\
            value = value.replace(f"{folder}{os.sep}", shown)
    return value


def set_threads() -> int:
    """Give torch one thread per core this process may use, shared among torchrun's local processes."""
    threads = max(1, usable_cores() // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads)
    return threads


def versions() -> str:
    """One line with the versions this runs with: python, torch, transformers, peft, datasets."""
    import platform

    libraries = ", ".join(f"{name} {installed(name)}" for name in ("torch", "transformers", "peft", "datasets"))
    return f"python {platform.python_version()}, {libraries}"
