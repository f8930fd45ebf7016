"""Runs that never lose work: settings checked before anything is written, one run per output folder,
training in `OUTPUT_DIR/staging/` and the finished run swapped in whole, portable adapters.

The output folder of a finished run holds `adapter/`, `run_config.json`, `checkpoints/` and
`metrics.json` (written last: its presence means the run finished). A new run into that folder
trains in `staging/` and replaces them only once it has finished, so a rerun that fails or is
killed leaves the finished run as it was; rerun it with the same settings to resume.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import socket
import time
from contextlib import contextmanager
from pathlib import Path

import psutil

from .bundle import hub_source
from .config import RunConfig, SetupError
from .data import LABELS
from .model import base_model_reference, config_essentials, model_source

MIN_MAX_LENGTH = 8  # [CLS], [SEP] and a few words
LOCK_NAME = "run.lock"
STAGING = "staging"
RUN_INFO = "run_info.json"  # in adapter/: the base model's identity, the labels, the LoRA settings
RESULTS = ("adapter", "run_config.json", "checkpoints")  # swapped in before metrics.json


def _rule(name: str, value, ok: bool, rule: str) -> None:
    """Raise a one-line SetupError naming the option and its environment variable unless `ok`."""
    if not ok:
        raise SetupError(f"--{name.replace('_', '-')} {value} is out of range: use {rule} "
                         f"(LORA_{name.upper()} in notebooks).")


def _number(value, whole: bool = False) -> bool:
    """True for an int (and, unless `whole`, a finite float), never a bool."""
    kinds = int if whole else (int, float)
    return isinstance(value, kinds) and not isinstance(value, bool) and math.isfinite(value)


def validate_config(cfg: RunConfig) -> None:
    """Refuse settings no run can use, before anything is read or written: one line naming the option."""
    for name in ("train_size", "eval_size"):
        value = getattr(cfg, name)
        _rule(name, value, value is None or (_number(value, True) and value >= 2),
              "at least 2 (one review of each label), or leave it out for the whole split")
    _rule("val_size", cfg.val_size, _number(cfg.val_size, True) and cfg.val_size >= 2, "at least 2")
    _rule("max_length", cfg.max_length, _number(cfg.max_length, True) and cfg.max_length >= MIN_MAX_LENGTH,
          f"at least {MIN_MAX_LENGTH} tokens ([CLS], [SEP] and a few words)")
    _rule("epochs", cfg.epochs, _number(cfg.epochs) and cfg.epochs > 0, "more than 0 (0.5 trains half an epoch)")
    _rule("batch_size", cfg.batch_size, _number(cfg.batch_size, True) and cfg.batch_size >= 1, "at least 1")
    _rule("lr", cfg.lr, _number(cfg.lr) and cfg.lr > 0, "a learning rate above 0, such as 2e-3")
    _rule("lora_r", cfg.lora_r, _number(cfg.lora_r, True) and cfg.lora_r >= 1, "a rank of at least 1, such as 8")
    _rule("lora_alpha", cfg.lora_alpha, _number(cfg.lora_alpha) and cfg.lora_alpha > 0, "above 0, such as 2 x r")
    _rule("lora_dropout", cfg.lora_dropout, _number(cfg.lora_dropout) and 0 <= cfg.lora_dropout < 1,
          "a probability from 0 up to (not including) 1")
    _rule("seed", cfg.seed, _number(cfg.seed, True) and 0 <= cfg.seed < 2**32, "a whole number from 0 to 2**32 - 1")
    out = Path(str(cfg.output_dir)).expanduser()
    if not str(cfg.output_dir).strip():
        raise SetupError("--output-dir is empty: pass the folder for the adapter and metrics.json.")
    if out.exists() and not out.is_dir():
        raise SetupError(f"--output-dir {out} is a file, not a folder: pass a folder (it is created if missing).")


def position_limit(model_config) -> int | None:
    """The most tokens the model's position embeddings can take (None if the config does not say)."""
    limit = getattr(model_config, "max_position_embeddings", None) or getattr(model_config, "n_positions", None)
    if limit and "roberta" in getattr(model_config, "model_type", ""):
        limit -= (model_config.pad_token_id or 0) + 1  # RoBERTa's positions start after the padding index
    return limit


def check_max_length(cfg: RunConfig, model_config) -> None:
    """Refuse a --max-length beyond what the model's position embeddings can take (one line)."""
    limit = position_limit(model_config)
    if limit and cfg.max_length > limit:
        _rule("max_length", cfg.max_length, False,
              f"at most {limit} tokens: {cfg.model} has {limit} position embeddings")


# --- one run per output folder ------------------------------------------------------------------

def _run_key() -> str:
    """What identifies this run: torchrun's processes of one run share it (run id and rendezvous address)."""
    if "RANK" in os.environ:
        env = os.environ
        return f"torchrun {env.get('TORCHELASTIC_RUN_ID')} at {env.get('MASTER_ADDR')}:{env.get('MASTER_PORT')}"
    return f"pid {os.getpid()} on {socket.gethostname()}"


def _holder_alive(held: dict) -> bool:
    """Whether the process that wrote a lock still runs (on another host we cannot tell: assume it does)."""
    if not held:
        return False  # unreadable: lock files appear whole (os.link), so no run wrote this one
    if held.get("host") != socket.gethostname():
        return True
    try:
        return abs(psutil.Process(held["pid"]).create_time() - held["created"]) < 0.01  # not a reused pid
    except (psutil.Error, KeyError, TypeError):
        return False


def _read_lock(path: Path) -> dict | None:
    """The lock's contents, or None when it is gone."""
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except ValueError:
        return {}  # unreadable: no live holder can be named


def _busy(out: Path, held: dict) -> SetupError:
    """The one-line error for a folder that another run holds."""
    return SetupError(f"Another run is using {out} (pid {held.get('pid')} on {held.get('host')}, started "
                      f"{held.get('started')}: {held.get('command')}): wait for it to finish or pass another "
                      f"--output-dir. If no run is going, delete {out / LOCK_NAME}.")


def _take(path: Path, me: dict) -> None:
    """Create the lock file with `me` inside, taking over one left by a crashed run; SetupError if held."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}")
    tmp.write_text(json.dumps(me))
    try:
        while True:
            try:
                os.link(tmp, path)  # atomic: fails if the lock exists; the file appears with its contents
                return
            except FileExistsError:
                held = _read_lock(path)
                if held and _holder_alive(held):
                    raise _busy(path.parent, held) from None
                path.unlink(missing_ok=True)  # left by a run that crashed: take it over
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def output_lock(out: str | Path):
    """Hold `out`'s lock for the block (which gets True in the process that holds it): one run per folder.

    A second run into the same folder stops at once, with one line naming the running one.

    The lock file names the process (pid, host, start, command); it is removed on exit, and a lock
    left by a crashed run (its process gone) is taken over. torchrun's processes share their run's
    lock: the first process (RANK 0) takes it, the others only check that no other run holds it.
    """
    out = Path(out).expanduser()
    path, key = out / LOCK_NAME, _run_key()
    created_dir, owner = not out.exists(), os.environ.get("RANK", "0") == "0"
    me = {"run": key, "pid": os.getpid(), "host": socket.gethostname(), "created": psutil.Process().create_time(),
          "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(psutil.Process().cmdline())[-200:]}
    try:
        out.mkdir(parents=True, exist_ok=True)
        if owner:
            _take(path, me)
        else:
            held = _read_lock(path)
            if held and held.get("run") != key and _holder_alive(held):
                raise _busy(out, held)
    except OSError as exc:
        raise SetupError(f"Cannot write in --output-dir {out} ({exc.strerror or exc}): "
                         "pass a folder you can write to.") from None
    try:
        yield owner
    finally:
        if owner and (_read_lock(path) or {}).get("pid") == os.getpid():
            path.unlink(missing_ok=True)
        if created_dir and out.is_dir() and not any(out.iterdir()):
            out.rmdir()  # a run that stopped before writing anything leaves nothing behind


# --- staging and the swap ----------------------------------------------------------------------

def staging_dir(out: str | Path) -> Path:
    """Where a run trains (checkpoints, run_config.json) until it has finished: OUTPUT_DIR/staging."""
    return Path(out) / STAGING


def publish(out: str | Path) -> bool:
    """Swap a finished run from `staging/` into `out`, replacing the previous one; False if none is finished.

    `metrics.json` leaves first and comes back last, so the folder never claims to be finished
    while it mixes two runs. Calling it again completes a swap that was interrupted.
    """
    out = Path(out)
    stage, old = staging_dir(out), out / ".replaced"
    if not (stage / "metrics.json").is_file():
        return False
    old.mkdir(exist_ok=True)
    _move(out / "metrics.json", old / "metrics.json")  # first: the folder stops saying "finished"
    for name in RESULTS:
        if (stage / name).exists():  # not there: moved in by an interrupted call
            _move(out / name, old / name)
            os.replace(stage / name, out / name)
    os.replace(stage / "metrics.json", out / "metrics.json")
    shutil.rmtree(old, ignore_errors=True)
    shutil.rmtree(stage, ignore_errors=True)
    return True


def _remove(path: Path) -> None:
    """Delete a file or folder if it is there."""
    if path.is_dir():
        shutil.rmtree(path)
    else:
        path.unlink(missing_ok=True)


def _move(src: Path, dst: Path) -> None:
    """Move `src` (file or folder) to `dst`, replacing what is there; nothing if `src` is missing."""
    if src.exists():
        _remove(dst)
        os.replace(src, dst)


# --- portable adapters -------------------------------------------------------------------------

def _write_json(path: Path, data: dict) -> None:
    """Write `data` as JSON atomically."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def save_adapter(model, tokenizer, cfg: RunConfig, folder: str | Path) -> Path:
    """Save the LoRA weights, head and tokenizer so they load on any machine, readable by all (0644).

    No file holds a path of this machine: `base_model_name_or_path` (and the model card) name a Hub
    model as is (a room bundle's copy of one too), a local one by its folder name; `run_info.json`
    adds what identifies the base model (its config's sizes), the labels and the LoRA settings. It is
    written last: its presence says that both of peft's files were saved.
    """
    folder = Path(folder)
    _remove(folder)  # nothing of an earlier save mixes in
    hub = hub_source(cfg.model)  # a room bundle's copy of a Hub model is named by its Hub name
    reference, source = (hub, "hub") if hub else (base_model_reference(cfg.model), model_source(cfg.model))
    lora = model.peft_config["default"]
    targets = lora.target_modules if isinstance(lora.target_modules, str) else sorted(lora.target_modules)
    lora.base_model_name_or_path = reference  # what predictors load
    base = model.get_base_model()
    base.name_or_path = base.config.name_or_path = reference  # the model card (README.md) names it too
    model.save_pretrained(folder, save_embedding_layers=False)  # only LoRA and the head
    tokenizer.save_pretrained(folder)
    _write_json(folder / RUN_INFO, {
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
