"""A room bundle: the model, lesson 06's decoder and IMDB in one folder, made once and used with no network.

    python -m utils.bundle DIR                                    # where the Hub is reachable
    python -m utils.bundle DIR --model PATH --decoder PATH --data-dir IMDB   # from local copies
    python -m utils.bundle DIR --wheelhouse                       # also the pip wheels of requirements.txt

It writes, into DIR (copy it to a USB stick or a share):

    model/                 the encoder and its tokenizer (--model, default: the profile's, distilbert-base-uncased)
    decoder/               lesson 06's small LLM (--decoder, default: the profile's); skipped, saying so, if unavailable
    imdb/train.parquet     IMDB's 25,000 training reviews (columns text, label), cleaned as utils.data does
    imdb/test.parquet      and its 25,000 test reviews
    wheels/                with --wheelhouse: `pip download -r requirements.txt` (wheels for this machine's
                           platform and Python; make one per kind of laptop in the room)
    bundle.json            what is in it and where each part came from

The bundle maker only writes bundles: `utils.config` reads bundle.json where it resolves the settings.
Then `LORA_BUNDLE=DIR` (the script and every lesson) or `python fine_tune_sentiment.py --bundle DIR`
use the bundle's model, decoder and IMDB instead of the Hub's: no network is needed. An argument or
a LORA_MODEL / LORA_DECODER / LORA_DATA_DIR variable still wins, and the `smoke` profile keeps its
own offline model and data. Install from the wheelhouse with
`pip install --no-index --find-links DIR/wheels -r requirements.txt`.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

from .config import (HUB_DATASET, HUB_SOURCE, MANIFEST, SMOKE_DATA, SMOKE_DECODER, SMOKE_MODEL, SetupError,
                     add_config_arguments, resolve_config, run_cli, versions)
from .hub import hub_cache_dir
from .system import folder_mb

REQUIREMENTS = Path(__file__).resolve().parents[1] / "requirements.txt"
MODEL_FILES = ["*.json", "*.txt", "*.model", "*.safetensors"]  # config, tokenizer files, weights


def fetch_model(name: str, target: Path) -> str:
    """Copy the checkpoint `name` (smoke model, local folder, or Hub repository) into `target`; where it came from."""
    from .model import resolve_model_path

    source = resolve_model_path(name)  # builds a smoke model, checks a folder, or checks the Hub (or its cache)
    if Path(source).is_dir():
        shutil.copytree(source, target)
        return str(Path(name).expanduser()) if name not in (SMOKE_MODEL, SMOKE_DECODER) else name
    from huggingface_hub import snapshot_download

    # The repository's top-level files only (no onnx/, openvino/ exports); .bin weights only without safetensors.
    cache = hub_cache_dir()  # read now from the environment (huggingface_hub reads it once, at import)
    snapshot = Path(snapshot_download(name, allow_patterns=MODEL_FILES, ignore_patterns=["*/*"], cache_dir=cache))
    if not any(snapshot.glob("*.safetensors")):
        snapshot = Path(snapshot_download(name, allow_patterns=MODEL_FILES + ["*.bin"], ignore_patterns=["*/*"],
                                          cache_dir=cache))
    shutil.copytree(snapshot, target)  # follows the cache's symbolic links: real files in the bundle
    return f"{HUB_SOURCE}{name}"


def write_imdb(data_dir: str | None, target: Path) -> dict:
    """IMDB's train and test splits as parquet (text, label) in `target`, from the Hub or a local copy."""
    from .data import load_hub_imdb, load_local_imdb, load_smoke_reviews

    if data_dir == SMOKE_DATA:
        data, source = load_smoke_reviews(), "shipped smoke set"
    elif data_dir:
        data, source = load_local_imdb(data_dir), f"local: {data_dir}"
    else:
        data, source = load_hub_imdb(), f"{HUB_SOURCE}{HUB_DATASET}"
    target.mkdir(parents=True)
    for split in ("train", "test"):
        data[split].select_columns(["text", "label"]).to_parquet(target / f"{split}.parquet")
    return {"path": target.name, "source": source, "train": len(data["train"]), "test": len(data["test"])}


def download_wheels(target: Path, requirements: Path = REQUIREMENTS) -> None:
    """`pip download -r requirements.txt -d target`: the wheels of every runtime requirement, for this platform."""
    done = subprocess.run([sys.executable, "-m", "pip", "download", "-q", "-r", str(requirements), "-d", str(target)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise SetupError(f"pip download failed ({last}): run it where PyPI is reachable, or leave out --wheelhouse.")


def prepare_folder(out: Path) -> None:
    """Create `out`, or clear the parts of an earlier (or interrupted) bundle there; refuse other non-empty folders."""
    parts = {"model", "decoder", "imdb", "wheels", MANIFEST}
    if out.exists() and not (out / MANIFEST).is_file() and any(p.name not in parts for p in out.iterdir()):
        raise SetupError(f"{out} is not empty and holds no {MANIFEST}: choose a new or empty folder for the bundle.")
    for part in parts:
        if (out / part).is_dir():
            shutil.rmtree(out / part)
        else:
            (out / part).unlink(missing_ok=True)
    out.mkdir(parents=True, exist_ok=True)


def make_bundle(out: str | Path, model: str, decoder: str | None, data_dir: str | None,
                wheelhouse: bool = False, log=print) -> dict:
    """Write a room bundle into `out` (see the module's docstring) and return its manifest."""
    out = Path(out).expanduser().resolve()
    for source in (model, decoder, data_dir):
        if source and Path(source).expanduser().exists() and out in Path(source).expanduser().resolve().parents:
            raise SetupError(f"{source} is inside {out}: a bundle cannot be made from itself (unset LORA_BUNDLE?).")
    prepare_folder(out)
    start = time.perf_counter()
    manifest = {"made_by": "python -m utils.bundle", "created": time.strftime("%Y-%m-%d %H:%M:%S"),
                "versions": versions(), "model": None, "decoder": None, "imdb": None, "wheels": None}
    manifest["model"] = {"path": "model", "source": fetch_model(model, out / "model")}
    log(f"model:   {model} -> {out / 'model'} ({folder_mb(out / 'model'):.1f} MB)")
    if decoder:
        try:
            manifest["decoder"] = {"path": "decoder", "source": fetch_model(decoder, out / "decoder")}
            log(f"decoder: {decoder} -> {out / 'decoder'} ({folder_mb(out / 'decoder'):.1f} MB)")
        except Exception as exc:  # noqa: BLE001 - optional: lesson 06 then needs the Hub or --decoder
            shutil.rmtree(out / "decoder", ignore_errors=True)
            log(f"decoder: {decoder} could not be got, the bundle has none ({str(exc).splitlines()[0][:200]})")
    manifest["imdb"] = write_imdb(data_dir, out / "imdb")
    log(f"imdb:    {manifest['imdb']['source']} -> {out / 'imdb'} "
        f"({manifest['imdb']['train']:,} train, {manifest['imdb']['test']:,} test reviews)")
    if wheelhouse:
        download_wheels(out / "wheels")
        manifest["wheels"] = {"path": "wheels", "files": len(list((out / "wheels").iterdir()))}
        log(f"wheels:  {manifest['wheels']['files']} files -> {out / 'wheels'} ({folder_mb(out / 'wheels'):.0f} MB)")
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    log(f"Bundle ready in {out} ({folder_mb(out):.0f} MB, {time.perf_counter() - start:.0f} s). "
        f"Use it with LORA_BUNDLE={out} or --bundle {out}.")
    return manifest


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the bundle maker."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("dir", help="the folder to write (new, empty, or an earlier bundle to replace)")
    add_config_arguments(p, ("profile", "model", "decoder", "data_dir"),
                         profile="whose model, decoder and data to take (default: LORA_PROFILE, else gpu/cpu)",
                         data_dir="local IMDB to copy (parquet/csv or aclImdb; default: the Hub's)")
    p.add_argument("--no-decoder", action="store_true", help="leave lesson 06's decoder out")
    p.add_argument("--wheelhouse", action="store_true", help="also `pip download -r requirements.txt` into DIR/wheels")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Make the bundle from the options (the profile's sources where an option is left out)."""
    args = parse_args(argv)
    cfg = resolve_config(args.profile, model=args.model, decoder=args.decoder, data_dir=args.data_dir)
    make_bundle(args.dir, cfg.model, None if args.no_decoder else cfg.decoder, cfg.data_dir, args.wheelhouse)
    return 0


if __name__ == "__main__":
    run_cli(main)
