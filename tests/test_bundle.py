"""The room bundle (utils.bundle): made once from local sources, then the script and a lesson run from it
with HF_HUB_OFFLINE unset and no network (an empty Hugging Face cache, the Hub at a closed port)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from utils import bundle, config
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


def run_script(bundle_dir: Path, out: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    """fine_tune_sentiment.py on the cpu profile from `bundle_dir`, max length 64 and one epoch unless `args` say otherwise."""
    cmd = [sys.executable, "fine_tune_sentiment.py", "--profile", "cpu", "--bundle", str(bundle_dir),
           "--max-length", "64", "--epochs", "1", "--output-dir", str(out), *args]
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


# The real-data floor. Measured at REAL_SIZES with MiniLM on 2 CPU cores (2026-12-03, AMD EPYC without AVX512,
# float32): `python -m utils.experiments --profile cpu --model <MiniLM> --data-dir <IMDB> --runs head_only,lora
# --ranks none --train-size 1000 --val-size 200 --eval-size 500 --max-length 128` gave the recipe 0.756 test
# accuracy (validation 0.805) and the backbone frozen with only the head trained 0.620; wrong labels or an
# untrained head stay near 0.5. The floor sits between the recipe and the head-only baseline.
REAL_SIZES = ("--train-size", "1000", "--val-size", "200", "--eval-size", "500", "--max-length", "128")
REAL_FLOOR = 0.70


@pytest.mark.skipif(not (os.environ.get("IMDB_DATA_DIR") and os.environ.get("LORA_TEST_MODEL")),
                    reason="needs IMDB_DATA_DIR (IMDB train/test parquet) and LORA_TEST_MODEL (a local encoder)")
def test_real_data_from_a_bundle_learns_imdb_without_network(tmp_path):
    """A bundle of the real IMDB and a real pretrained encoder; the script trains from it with no network and learns.

    CI sets IMDB_DATA_DIR and LORA_TEST_MODEL to ../shared/datasets/imdb and ../shared/models/all-MiniLM-L6-v2-bf16.
    """
    out = tmp_path / "room"
    manifest = bundle.make_bundle(out, os.environ["LORA_TEST_MODEL"], None, os.environ["IMDB_DATA_DIR"],
                                  log=lambda *args: None)
    assert (manifest["imdb"]["train"], manifest["imdb"]["test"]) == (25_000, 25_000) and manifest["decoder"] is None
    done = run_script(out, tmp_path / "run", no_network_env(tmp_path), *REAL_SIZES)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"Room bundle {out}: using its model, data_dir" in done.stdout
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    print({k: metrics[k] for k in ("test_accuracy", "test_f1", "validation", "train_runtime_s")})
    assert (metrics["train_size"], metrics["val_size"], metrics["eval_size"]) == (1000, 200, 500)
    assert metrics["test_accuracy"] >= REAL_FLOOR, metrics["test_accuracy"]


def test_a_ready_adapter_loads_in_the_room_with_lora_bundle_alone(smoke_bundle, tmp_path, monkeypatch):
    """The workshop's flow: an adapter trained from the bundle and copied beside it loads with LORA_BUNDLE set."""
    from utils.predict import SentimentPredictor
    from utils.training import run_training

    for name in ("LORA_MODEL", "LORA_BUNDLE", "LORA_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    cfg = resolve_config("cpu", bundle=str(smoke_bundle), train_size=64, eval_size=32, val_size=16, max_length=64,
                         epochs=1, output_dir=str(tmp_path / "run"))
    run_training(cfg, log=lambda *args: None)
    handed_out = tmp_path / "usb" / "adapter"  # no run_config.json beside it: the instructor's paths stay behind
    shutil.copytree(tmp_path / "run" / "adapter", handed_out)
    with pytest.raises(SetupError, match="trained on a local model folder named 'model'"):
        SentimentPredictor.from_pretrained(handed_out)
    monkeypatch.setenv("LORA_BUNDLE", str(smoke_bundle))
    [prediction] = SentimentPredictor.from_pretrained(handed_out)("A fine film.")
    assert prediction["label"] in ("POSITIVE", "NEGATIVE")


def test_a_bundle_s_copy_of_a_hub_model_is_named_by_its_hub_name(tmp_path, monkeypatch):
    """An adapter trained on a bundle's copy of distilbert-base-uncased names the Hub model; LORA_BUNDLE finds the copy."""
    room = tmp_path / "room"
    (room / "model").mkdir(parents=True)
    (room / "bundle.json").write_text(json.dumps({"model": {"path": "model", "source": "hub: distilbert-base-uncased"},
                                                  "decoder": None}))
    assert config.hub_source(room / "model") == "distilbert-base-uncased"
    assert config.hub_source(tmp_path) is None
    monkeypatch.delenv("LORA_BUNDLE", raising=False)
    assert config.bundled_model("distilbert-base-uncased") is None
    monkeypatch.setenv("LORA_BUNDLE", str(room))
    assert config.bundled_model("distilbert-base-uncased") == (room / "model").resolve()
    assert config.bundled_model("model") == (room / "model").resolve()
    assert config.bundled_model("gpt2") is None
