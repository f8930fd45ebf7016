"""The room bundle (utils.bundle): made once from local sources, then the script and a lesson run from it
with HF_HUB_OFFLINE unset and no network (an empty Hugging Face cache, the Hub at a closed port)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from utils import bundle
from utils.config import SMOKE_DATA, SMOKE_DECODER, SMOKE_MODEL, SetupError, resolve_config

ROOT = Path(__file__).resolve().parents[1]
CLOSED = "http://127.0.0.1:9"  # nothing listens there: any attempt to reach the Hub fails at once


def no_network_env(tmp_path: Path, **extra: str) -> dict:
    """This environment without LORA_*/HF_HUB_OFFLINE, an empty HF cache, the Hub and proxies at a closed port."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith("LORA_") and k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "PYTEST_CURRENT_TEST")}
    env.update(HF_HOME=str(tmp_path / "empty-hf-home"), HF_ENDPOINT=CLOSED, HTTP_PROXY=CLOSED, HTTPS_PROXY=CLOSED,
               **extra)
    return env


def run_script(bundle_dir: Path, out: Path, env: dict, *sizes: str) -> subprocess.CompletedProcess:
    """fine_tune_sentiment.py on the cpu profile from `bundle_dir`, at the given tiny sizes."""
    cmd = [sys.executable, "fine_tune_sentiment.py", "--profile", "cpu", "--bundle", str(bundle_dir),
           "--max-length", "64", "--epochs", "1", "--output-dir", str(out), *sizes]
    return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def smoke_bundle(tmp_path_factory) -> Path:
    """A bundle of the shipped smoke model, decoder and reviews (seconds, offline)."""
    out = tmp_path_factory.mktemp("bundle") / "room"
    bundle.make_bundle(out, SMOKE_MODEL, SMOKE_DECODER, SMOKE_DATA, log=lambda *args: None)
    return out


def test_bundle_holds_model_decoder_imdb_and_manifest(smoke_bundle):
    """model/, decoder/, imdb/{train,test}.parquet and bundle.json, each loadable as it is."""
    from transformers import AutoConfig, AutoTokenizer

    manifest = json.loads((smoke_bundle / "bundle.json").read_text())
    assert manifest["model"] == {"path": "model", "source": SMOKE_MODEL}
    assert manifest["decoder"]["path"] == "decoder" and manifest["wheels"] is None
    assert (manifest["imdb"]["train"], manifest["imdb"]["test"]) == (160, 80) and "torch" in manifest["versions"]
    train = pd.read_parquet(smoke_bundle / "imdb" / "train.parquet")
    assert list(train.columns) == ["text", "label"] and len(train) == 160 and set(train["label"]) == {0, 1}
    assert AutoConfig.from_pretrained(smoke_bundle / "model").model_type == "distilbert"
    assert AutoConfig.from_pretrained(smoke_bundle / "decoder").model_type == "llama"
    assert AutoTokenizer.from_pretrained(smoke_bundle / "model")("a fine film")["input_ids"]


def test_bundle_replaces_the_hub_sources_only(smoke_bundle, monkeypatch, capsys):
    """LORA_BUNDLE / bundle= give the Hub's model, decoder and IMDB the bundle's folders; LORA_* and arguments
    still win, and the smoke profile keeps its own offline sources."""
    monkeypatch.setenv("LORA_BUNDLE", str(smoke_bundle))
    cfg = resolve_config("cpu")
    assert cfg.model == str(smoke_bundle / "model") and cfg.decoder == str(smoke_bundle / "decoder")
    assert cfg.data_dir == str(smoke_bundle / "imdb") and cfg.extra["bundle"] == str(smoke_bundle)
    assert f"Room bundle {smoke_bundle}: using its model, decoder, data_dir" in capsys.readouterr().out
    assert "bundle" in cfg.table()
    monkeypatch.setenv("LORA_MODEL", "/somewhere/else")
    assert resolve_config("cpu").model == "/somewhere/else"
    assert resolve_config("cpu", data_dir="mine").data_dir == "mine"
    smoke = resolve_config("smoke")
    assert (smoke.model, smoke.decoder, smoke.data_dir) == ("/somewhere/else", SMOKE_DECODER, SMOKE_DATA)
    assert "bundle" not in smoke.extra and "not used" in capsys.readouterr().out
    monkeypatch.delenv("LORA_BUNDLE")
    monkeypatch.delenv("LORA_MODEL")
    assert resolve_config("cpu", bundle=str(smoke_bundle)).model == str(smoke_bundle / "model")
    assert "bundle" not in resolve_config("cpu").extra


def test_bad_bundles_are_refused(tmp_path, smoke_bundle):
    """Not a bundle, a non-empty folder, or a bundle made from itself: one line each."""
    with pytest.raises(SetupError, match="not a room bundle"):
        resolve_config("cpu", bundle=str(tmp_path))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(SetupError, match="not empty"):
        bundle.make_bundle(tmp_path, SMOKE_MODEL, None, SMOKE_DATA, log=lambda *args: None)
    with pytest.raises(SetupError, match="from itself"):
        bundle.make_bundle(smoke_bundle, str(smoke_bundle / "model"), None, SMOKE_DATA, log=lambda *args: None)


def test_wheelhouse_is_pip_download_of_the_requirements(tmp_path, monkeypatch):
    """--wheelhouse runs `pip download -r requirements.txt -d DIR/wheels`; a failure is one line."""
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 1, "", "ERROR: No matching distribution found for torch")

    monkeypatch.setattr(bundle.subprocess, "run", fake_run)
    with pytest.raises(SetupError, match="No matching distribution"):
        bundle.download_wheels(tmp_path / "wheels")
    assert calls[0][1:5] == ["-m", "pip", "download", "-q"]
    assert calls[0][-4:] == ["-r", str(ROOT / "requirements.txt"), "-d", str(tmp_path / "wheels")]


def test_script_and_a_lesson_run_from_the_bundle_without_network(smoke_bundle, tmp_path):
    """The script (cpu profile, tiny sizes) and lesson 01 (nbmake) from LORA_BUNDLE, with no Hub and no cache."""
    env = no_network_env(tmp_path, LORA_VAL_SIZE="20")
    done = run_script(smoke_bundle, tmp_path / "run", env, "--train-size", "100", "--eval-size", "40")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Room bundle {smoke_bundle}: using its model, decoder, data_dir" in done.stdout
    assert "Hub unreachable" not in done.stdout and "Final evaluation results" in done.stdout
    assert "test_accuracy" in json.loads((tmp_path / "run" / "metrics.json").read_text())  # written last

    env.update(LORA_BUNDLE=str(smoke_bundle), LORA_PROFILE="cpu", LORA_TRAIN_SIZE="100", LORA_EVAL_SIZE="40",
               LORA_MAX_LENGTH="64")
    lesson = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "notebooks/01_data.ipynb"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert lesson.returncode == 0, lesson.stdout[-3000:]


@pytest.mark.skipif(not (os.environ.get("IMDB_DATA_DIR") and os.environ.get("LORA_TEST_MODEL")),
                    reason="needs IMDB_DATA_DIR (IMDB train/test parquet) and LORA_TEST_MODEL (a local encoder)")
def test_real_bundle_round_trip(tmp_path):
    """A bundle of the real IMDB and a real encoder, then the script from it with no network: it learns."""
    out = tmp_path / "room"
    manifest = bundle.make_bundle(out, os.environ["LORA_TEST_MODEL"], None, os.environ["IMDB_DATA_DIR"],
                                  log=lambda *args: None)
    assert (manifest["imdb"]["train"], manifest["imdb"]["test"]) == (25_000, 25_000) and manifest["decoder"] is None
    env = no_network_env(tmp_path, LORA_VAL_SIZE="100")
    done = run_script(out, tmp_path / "run", env, "--train-size", "600", "--eval-size", "200")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Room bundle {out}: using its model, data_dir" in done.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.6, metrics["test_accuracy"]  # a pretrained encoder learns; chance is 0.5
