"""Run configuration: three profiles of one recipe, resolved once and printed as a table.

A profile fixes the sizes of a run (`gpu`: the real lesson, `cpu`: a laptop, `smoke`: CI).
Every field can be overridden by an argument or an environment variable, so the same
code path runs everywhere.
"""

from __future__ import annotations

import dataclasses
import os
import re
import socket
import sys
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

import torch

SMOKE_MODEL = "smoke-distilbert"  # a tiny DistilBERT built offline by utils.model
SMOKE_DECODER = "smoke-llama"  # a tiny Llama-family decoder built offline by utils.model (lesson 06)
SMOKE_DATA = "smoke"  # the small review set in utils/assets
HUB_DATASET = "stanfordnlp/imdb"
HUB_HOST = ("huggingface.co", 443)


class SetupError(RuntimeError):
    """A problem the user can fix (missing files, no network, bad input); the message says how."""


@dataclass
class RunConfig:
    """Everything one training run needs to know; see PROFILES for the values of each profile."""

    profile: str
    model: str = "distilbert-base-uncased"
    data_dir: str | None = None  # None: the Hub's IMDB (or the smoke set for `smoke`)
    train_size: int | None = None  # None: the whole split
    eval_size: int | None = None  # test reviews (evaluated once, at the end)
    val_size: int = 2500  # validation reviews carved from the training split: they pick the best epoch
    max_length: int = 512
    epochs: float = 2
    batch_size: int = 16
    lr: float = 5e-4
    lora_r: int = 8
    lora_alpha: int = 16
    lora_dropout: float = 0.1
    target_modules: list[str] | None = None  # None: chosen from the architecture (utils.model)
    seed: int = 42
    decoder: str = "HuggingFaceTB/SmolLM2-135M-Instruct"  # lesson 06's small LLM (Hub name or local folder)
    use_cpu: bool = False  # True: train on the CPU even when a GPU (CUDA or Apple MPS) is there
    output_dir: str = ""  # empty: outputs/lora-imdb-<profile>
    extra: dict = field(default_factory=dict)  # free-form notes shown in the table

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

# Overrides read from the environment: LORA_MODEL=... LORA_EPOCHS=... (arguments win over these).
_CASTS = {"train_size": int, "eval_size": int, "val_size": int, "max_length": int, "epochs": float,
          "batch_size": int, "lr": float, "lora_r": int, "lora_alpha": int, "lora_dropout": float, "seed": int,
          "use_cpu": lambda s: s.strip().lower() in ("1", "true", "yes", "on"),
          "target_modules": lambda s: [m.strip() for m in s.split(",") if m.strip()]}


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
        from .bundle import bundle_values

        values.update(bundle_values(bundle, values))
    for name in [f.name for f in dataclasses.fields(RunConfig)]:
        env = os.environ.get(f"LORA_{name.upper()}")
        if env and name not in ("profile", "extra"):
            try:
                values[name] = _CASTS.get(name, str)(env)
            except ValueError:
                kind = {int: "a whole number", float: "a number"}.get(_CASTS.get(name), "a valid value")
                raise SetupError(f"LORA_{name.upper()}={env!r} is not {kind}: fix or unset that variable.") from None
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.setdefault("output_dir", f"outputs/lora-imdb-{chosen}")
    return RunConfig(profile=chosen, **values)


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
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads)
    return threads


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set: Hugging Face libraries then read only their local cache."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def hub_host() -> tuple[str, int]:
    """The Hub's host and port: from HF_ENDPOINT when set (a mirror), else huggingface.co:443."""
    endpoint = os.environ.get("HF_ENDPOINT", "").strip()
    if not endpoint:
        return HUB_HOST
    url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    return url.hostname or HUB_HOST[0], url.port or (80 if url.scheme == "http" else 443)


def hub_reachable(timeout: float = 3.0) -> bool:
    """True if the Hugging Face Hub (or the HF_ENDPOINT mirror) answers a connection within `timeout` seconds."""
    try:
        socket.create_connection(hub_host(), timeout=timeout).close()
        return True
    except OSError:
        return False


def hf_home() -> Path:
    """The Hugging Face cache root, read now from the environment: HF_HOME, else ~/.cache/huggingface."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(os.environ.get("HF_HOME") or default).expanduser()


def hub_cache_dir() -> Path:
    """Where huggingface_hub caches downloaded repositories (HF_HUB_CACHE, else HF_HOME/hub)."""
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return Path(cache).expanduser() if cache else hf_home() / "hub"


def datasets_cache_dir() -> Path:
    """Where `datasets` keeps the datasets it has prepared (HF_DATASETS_CACHE, else HF_HOME/datasets)."""
    cache = os.environ.get("HF_DATASETS_CACHE")
    return Path(cache).expanduser() if cache else hf_home() / "datasets"


def in_hf_cache(repo_id: str, repo_type: str = "model") -> bool:
    """True if an earlier run left `repo_id` in the local Hugging Face cache, complete enough to load offline.

    A model needs its config.json and weights in the huggingface_hub cache; a dataset needs the
    copy that `datasets` prepared (what `load_dataset` reads when HF_HUB_OFFLINE=1).
    """
    if repo_type == "dataset":
        from datasets.naming import camelcase_to_snakecase

        *namespace, name = repo_id.split("/")
        folder = datasets_cache_dir() / "___".join([*namespace, camelcase_to_snakecase(name)])
        return any(folder.glob("*/*/*/dataset_info.json"))
    from huggingface_hub import try_to_load_from_cache

    try:
        config_file = try_to_load_from_cache(repo_id, "config.json", cache_dir=hub_cache_dir(), repo_type=repo_type)
    except ValueError:  # not a valid repository name: nothing of it can be cached
        return False
    if not isinstance(config_file, str):  # None (never fetched) or a marker that it does not exist
        return False
    snapshot = Path(config_file).parent
    return any(snapshot.glob("*.safetensors")) or any(snapshot.glob("pytorch_model*.bin"))


_CACHED_USED: set[str] = set()  # what check_hub took from the cache after it switched this process offline


def use_hub_cache(what: str) -> None:
    """Switch this process to HF_HUB_OFFLINE=1 (also in the already imported libraries) and say so, once per `what`."""
    if what not in _CACHED_USED:
        print(f"Hub unreachable: using the cached copy of {what}", flush=True)
    _CACHED_USED.add(what)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True  # read once at import: transformers and huggingface_hub ask this one
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:  # datasets copies the flag at import too
        datasets_config.HF_HUB_OFFLINE = datasets_config.HF_DATASETS_OFFLINE = True


def hub_repo(what: str) -> tuple[str | None, str]:
    """The repository a check_hub message names: "the model 'x'" -> ("x", "model"); datasets likewise."""
    found = re.search(r"\b(dataset|model|tokenizer of) '?([^'\s]+)'?", what)
    if not found:
        return None, "model"
    return found.group(2), "dataset" if found.group(1) == "dataset" else "model"


def check_hub(what: str, repo_id: str | None = None, repo_type: str | None = None) -> None:
    """Fail fast, with what to do instead, when `what` must come from an unreachable Hub and is not cached.

    With HF_HUB_OFFLINE=1 set by the user nothing is checked: the libraries then use what an
    earlier run cached. When the Hub (HF_ENDPOINT, if set) does not answer but `repo_id` (default:
    the repository named in `what`) is in the local cache, the process switches to
    HF_HUB_OFFLINE=1 and uses it; what comes after is then looked for in the cache only.
    """
    went_offline = bool(_CACHED_USED)  # check_hub switched this process offline already: no second network check
    if not went_offline and (hub_offline() or hub_reachable()):
        return
    if repo_id is None:
        repo_id, guessed = hub_repo(what)
        repo_type = repo_type or guessed
    if repo_id and in_hf_cache(repo_id, repo_type or "model"):
        use_hub_cache(what)
        return
    raise hub_error(what)


def hub_error(what: str) -> SetupError:
    """The error for `what` that had to come from the Hub and could not."""
    host, port = hub_host()
    return SetupError(
        f"Cannot get {what} from the Hugging Face Hub ({host}:{port}): no connection, no such repository, "
        f"or no complete copy in the local cache {hf_home()}. "
        "Work offline instead: --bundle DIR / LORA_BUNDLE=DIR (a room bundle made by python -m utils.bundle), "
        "--data-dir DIR (IMDB as parquet/csv or the aclImdb folder), "
        "--model PATH (a local checkpoint), or --profile smoke (tiny offline model and data; "
        "LORA_PROFILE=smoke in notebooks)."
    )


def versions() -> str:
    """One line with the versions this runs with: python, torch, transformers, peft, datasets."""
    import platform
    from importlib.metadata import PackageNotFoundError, version

    def installed(name: str) -> str:
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    libraries = ", ".join(f"{name} {installed(name)}" for name in ("torch", "transformers", "peft", "datasets"))
    return f"python {platform.python_version()}, {libraries}"
