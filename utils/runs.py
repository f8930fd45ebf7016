"""Runs that never lose work: settings checked before anything is written, one run per output folder,
training in `OUTPUT_DIR/staging/` and the finished run swapped in whole.

The output folder of a finished run holds `adapter/`, `run_config.json`, `checkpoints/` and
`metrics.json` (written last: its presence means the run finished). A new run into that folder
trains in `staging/` and replaces them only once it has finished, so a rerun that fails or is
killed leaves the finished run as it was; rerun it with the same settings to resume.
"""

from __future__ import annotations

import math
import os
import shutil
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from .config import RunConfig, SetupError
from .system import read_json, write_json

MIN_MAX_LENGTH = 8  # [CLS], [SEP] and a few words
LOCK_NAME = "run.lock"  # the lock itself (filelock's): the operating system frees it when its process ends
HOLDER_NAME = "run.lock.json"  # beside it: who holds the lock (pid, host, start, command), for the message
STAGING = "staging"
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


def _busy(out: Path, held: dict) -> SetupError:
    """The one-line error for a folder that another run holds."""
    return SetupError(f"Another run is using {out} (pid {held.get('pid')} on {held.get('host')}, started "
                      f"{held.get('started')}: {held.get('command')}): wait for it to finish or pass another "
                      f"--output-dir. If no run is going, delete {out / LOCK_NAME}.")


def _held_elsewhere(path: Path) -> bool:
    """Whether some process holds the lock at `path` now (tried, and let go at once if free)."""
    probe = FileLock(path, timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return True
    probe.release()
    return False


@contextmanager
def output_lock(out: str | Path):
    """Hold `out`'s lock for the block (which gets True in the process that holds it): one run per folder.

    A second run into the same folder stops at once, with one line naming the running one. The lock
    is `filelock`'s (`FileLock(path, timeout=0)` raises at once when it is held, and the operating
    system frees it when its process ends, so a crashed run leaves nothing to take over); a note
    beside it (`run.lock.json`: pid, host, start, command) names the holder in the message.
    Under torchrun only the first process (RANK 0) locks; the others check that no other run holds it.
    """
    out = Path(out).expanduser()
    path, note, key = out / LOCK_NAME, out / HOLDER_NAME, _run_key()
    created_dir, owner = not out.exists(), os.environ.get("RANK", "0") == "0"
    lock = FileLock(path, timeout=0)
    try:
        out.mkdir(parents=True, exist_ok=True)
        if owner:
            try:
                lock.acquire()
            except Timeout:
                raise _busy(out, read_json(note)) from None
            write_json(note, {"run": key, "pid": os.getpid(), "host": socket.gethostname(),
                              "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": " ".join(getattr(sys, "orig_argv", sys.argv))[-200:]})
        else:
            held = read_json(note)
            if held and held.get("run") != key and _held_elsewhere(path):
                raise _busy(out, held)
    except OSError as exc:
        raise SetupError(f"Cannot write in --output-dir {out} ({exc.strerror or exc}): "
                         "pass a folder you can write to.") from None
    try:
        yield owner
    finally:
        if owner:
            note.unlink(missing_ok=True)
            try:
                path.unlink()  # while still held: a run that starts now makes a new lock file
            except OSError:
                pass  # Windows cannot delete an open file; released below, the file stays (harmless)
            lock.release()
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
