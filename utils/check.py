"""Is this machine ready for the lessons? A participant's check, in well under a minute.

    python -m utils.check              # the profile the lessons will use (LORA_PROFILE, else gpu/cpu)
    LORA_BUNDLE=DIR python -m utils.check
    python -m utils.check --no-train   # skip the smoke training run

It prints the device and precision the Trainer will use, the library versions, where the model,
IMDB and lesson 06's decoder will come from (a room bundle, a local folder, the Hugging Face Hub,
or its local cache when the Hub does not answer), then trains the smoke profile (a tiny model on
the shipped reviews) in a temporary folder. It ends with OK, or with what to fix; the exit status
is 0 when ready, 1 otherwise.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

from .config import (HUB_DATASET, PROFILES, SMOKE_DATA, SMOKE_DECODER, SMOKE_MODEL, RunConfig, SetupError,
                     resolve_config, set_threads, versions)
from .hub import hf_home, hub_host, hub_offline, hub_reachable, in_hf_cache
from .system import describe_device

OFFLINE_FIXES = ("ask for the room bundle and set LORA_BUNDLE=DIR, connect to the network once "
                 "(the first run caches what it downloads), or pass a local folder")


def describe_precision(flags: dict) -> str:
    """The Trainer's precision flags in words."""
    if flags.get("bf16"):
        return "bf16 mixed precision"
    return "fp16 mixed precision" if flags.get("fp16") else "float32"


class Sources:
    """Where each part a lesson needs comes from; checks the Hub once, only if something needs it."""

    def __init__(self, bundle: str | None = None):
        self._reachable: bool | None = None
        self.bundle = Path(bundle) if bundle else None

    def local(self, folder: Path) -> str:
        """A found local folder in words: the room bundle's, or a folder of this machine."""
        inside = self.bundle is not None and self.bundle in folder.resolve().parents
        return "found in the room bundle" if inside else "found, a local folder"

    def hub_answers(self) -> bool:
        """Whether the Hub (HF_ENDPOINT, if set) answers; HF_HUB_OFFLINE=1 counts as no."""
        if self._reachable is None:
            self._reachable = not hub_offline() and hub_reachable()
        return self._reachable

    def from_hub(self, repo_id: str, repo_type: str) -> tuple[bool, str]:
        """A Hub repository: reachable, else cached, else not found."""
        if self.hub_answers():
            host, port = hub_host()
            return True, f"the Hugging Face Hub ({host}:{port} answers)"
        host, port = hub_host()
        reason = "HF_HUB_OFFLINE=1" if hub_offline() else f"the Hub ({host}:{port}) does not answer"
        if in_hf_cache(repo_id, repo_type):
            return True, f"the local Hugging Face cache ({reason})"
        return False, f"NOT FOUND: {reason} and no complete copy is in {hf_home()}. Fix: {OFFLINE_FIXES}"

    def model(self, name: str, variable: str) -> tuple[bool, str]:
        """A model: built offline (smoke), a local folder, or a Hub repository."""
        if name in (SMOKE_MODEL, SMOKE_DECODER):
            return True, "built offline (smoke profile)"
        folder = Path(name).expanduser()
        if folder.exists() or name.startswith((".", "/", "~")):
            if (folder / "config.json").is_file():
                return True, self.local(folder)
            return False, f"NOT FOUND: {folder} holds no config.json. Fix: {variable} must name a model folder"
        return self.from_hub(name, "model")

    def data(self, data_dir: str | None) -> tuple[bool, str]:
        """IMDB: the shipped smoke set, a local folder (parquet, csv or aclImdb), or the Hub's."""
        if data_dir == SMOKE_DATA:
            return True, "the shipped smoke reviews"
        if data_dir is None:
            return self.from_hub(HUB_DATASET, "dataset")
        folder = Path(data_dir).expanduser()
        found = [s for s in ("train", "test") if (folder / f"{s}.parquet").is_file() or (folder / f"{s}.csv").is_file()
                 or (folder / s / "pos").is_dir()]
        if found == ["train", "test"]:
            return True, self.local(folder)
        return False, (f"NOT FOUND: {folder} lacks the train/test files. Fix: LORA_DATA_DIR / --data-dir must hold "
                       "train and test as parquet or csv (text,label), or the aclImdb folders")


def smoke_run() -> tuple[bool, str]:
    """Train and evaluate the smoke profile in a temporary folder: (it worked, what happened)."""
    from .training import run_training

    with tempfile.TemporaryDirectory() as tmp:
        cfg = RunConfig(profile="smoke", **{**PROFILES["smoke"], "output_dir": tmp})  # no LORA_* variables
        start = time.perf_counter()
        try:
            metrics = run_training(cfg, log=lambda *args: None)
        except Exception as exc:  # noqa: BLE001 - report any failure as one line of what to fix
            first = (str(exc).splitlines() or [""])[0][:300]
            return False, f"FAILED: {type(exc).__name__}: {first}. Fix: reinstall with pip install -r requirements.txt"
        seconds = time.perf_counter() - start
    return True, (f"OK, trained and evaluated in {seconds:.0f} s (a tiny random model: this checks the code path, "
                  f"not accuracy; test accuracy {metrics['test_accuracy']:.2f})")


def run_check(train: bool = True, log=print) -> bool:
    """Print the readiness report line by line; True when nothing needs fixing."""
    from .training import precision_flags, train_device

    set_threads()
    rows: list[tuple[str, bool, str]] = []
    try:
        cfg = resolve_config()
    except SetupError as err:
        log(f"{'settings':<10} NOT READY: {err}")
        return False
    device = train_device(cfg.use_cpu)
    rows.append(("device", True, describe_device(device, detail=True)))
    rows.append(("precision", True, describe_precision(precision_flags(device))))
    rows.append(("versions", True, versions()))
    bundle = f", room bundle {cfg.extra['bundle']}" if "bundle" in cfg.extra else ""
    rows.append(("profile", True, cfg.profile + bundle))
    sources = Sources(cfg.extra.get("bundle"))
    rows.append(("model", *with_name(cfg.model, sources.model(cfg.model, "LORA_MODEL / --model"))))
    rows.append(("data", *with_name(cfg.data_dir or HUB_DATASET, sources.data(cfg.data_dir))))
    ok, text = sources.model(cfg.decoder, "LORA_DECODER")
    rows.append(("decoder", ok, f"{cfg.decoder}: {text}" + ("" if ok else " (needed by lesson 06 only)")))
    for label, ok, text in rows:
        log(f"{label:<10} {text}")
    if train:
        ok, text = smoke_run()
        rows.append(("smoke run", ok, text))
        log(f"{'smoke run':<10} {text}")
    problems = [label for label, ok, _ in rows if not ok]
    log("OK: ready for the lessons." if not problems else f"NOT READY: fix the {', '.join(problems)} line(s) above.")
    return not problems


def with_name(name: str, found: tuple[bool, str]) -> tuple[bool, str]:
    """(ok, "name: where it comes from")."""
    return found[0], f"{name}: {found[1]}"


def main(argv: list[str] | None = None) -> int:
    """Run the check; exit status 0 when ready."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--no-train", action="store_true", help="skip training the smoke profile")
    return 0 if run_check(train=not p.parse_args(argv).no_train) else 1


if __name__ == "__main__":
    sys.exit(main())
