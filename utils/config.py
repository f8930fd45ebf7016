"""Run configuration: three profiles of one recipe, resolved once and printed as a table.

A profile fixes the sizes of a run (`gpu`: the real lesson, `cpu`: a laptop, `smoke`: CI).
Every field can be overridden by an argument or an environment variable, so the same
code path runs everywhere.
"""

from __future__ import annotations

import dataclasses
import os
import socket
from dataclasses import dataclass, field

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
    # CI and nbmake: a tiny offline model on the shipped review set, seconds per run.
    # Its random backbone has no features to adapt, so LoRA goes on every linear layer.
    "smoke": dict(model=SMOKE_MODEL, decoder=SMOKE_DECODER, data_dir=SMOKE_DATA, val_size=32, max_length=64,
                  epochs=8, batch_size=16, lr=5e-3, lora_r=4, lora_alpha=8, lora_dropout=0.0,
                  target_modules=["q_lin", "k_lin", "v_lin", "out_lin", "lin1", "lin2"]),
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
    """Build the run's configuration: argument > LORA_PROFILE / LORA_<FIELD> environment > profile.

    `overrides` whose value is None are ignored, so argparse results can be passed straight in.
    """
    chosen = profile or os.environ.get("LORA_PROFILE") or default_profile()
    if chosen not in PROFILES:
        raise SetupError(f"Unknown profile {chosen!r}: choose one of {', '.join(PROFILES)}.")
    values = dict(PROFILES[chosen])
    for name in [f.name for f in dataclasses.fields(RunConfig)]:
        env = os.environ.get(f"LORA_{name.upper()}")
        if env and name not in ("profile", "extra"):
            values[name] = _CASTS.get(name, str)(env)
    values.update({k: v for k, v in overrides.items() if v is not None})
    values.setdefault("output_dir", f"outputs/lora-imdb-{chosen}")
    return RunConfig(profile=chosen, **values)


def set_threads() -> int:
    """Give torch one thread per core this process may use, shared among torchrun's local processes."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    threads = max(1, cores // int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
    torch.set_num_threads(threads)
    return threads


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set: Hugging Face libraries then read only their local cache."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def hub_reachable(timeout: float = 3.0) -> bool:
    """True if the Hugging Face Hub answers a connection within `timeout` seconds."""
    try:
        socket.create_connection(HUB_HOST, timeout=timeout).close()
        return True
    except OSError:
        return False


def check_hub(what: str) -> None:
    """Fail fast, with what to do instead, when `what` must come from an unreachable Hub.

    With HF_HUB_OFFLINE=1 nothing is checked: the libraries then use what an earlier run cached.
    """
    if not hub_offline() and not hub_reachable():
        raise hub_error(what)


def hub_error(what: str) -> SetupError:
    """The error for `what` that had to come from the Hub and could not."""
    return SetupError(
        f"Cannot get {what} from the Hugging Face Hub (no connection, or not in the offline cache). "
        "Work offline instead: --data-dir DIR (IMDB as parquet/csv or the aclImdb folder), "
        "--model PATH (a local checkpoint), or --profile smoke (tiny offline model and data; "
        "LORA_PROFILE=smoke in notebooks); HF_HUB_OFFLINE=1 uses copies cached by an earlier run."
    )
