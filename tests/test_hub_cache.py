"""Offline with a cache: when the Hub (or the HF_ENDPOINT mirror) does not answer, what is cached is used.

Every test points HF_HOME at a fake cache in tmp_path and the Hub at a closed local port: no network.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

from utils import hub as config
from utils.config import SetupError
from utils.hub import check_hub, in_hf_cache
from utils.data import SMOKE_CSV
from utils.model import build_smoke_model

ROOT = Path(__file__).resolve().parents[1]
CLOSED = "http://127.0.0.1:9"  # the discard port on loopback: nothing listens, the connection is refused at once
COMMIT = "0123456789abcdef0123456789abcdef01234567"


def fake_cached_model(home: Path, repo_id: str, source: Path, weights: bool = True) -> Path:
    """Lay `source` (a model folder) out as huggingface_hub caches `repo_id`: refs/main and a snapshot."""
    repo = home / "hub" / f"models--{repo_id.replace('/', '--')}"
    (repo / "refs").mkdir(parents=True, exist_ok=True)
    (repo / "refs" / "main").write_text(COMMIT)
    snapshot = repo / "snapshots" / COMMIT
    shutil.copytree(source, snapshot, ignore=None if weights else shutil.ignore_patterns("*.safetensors", "*.bin"))
    return snapshot


def fake_cached_imdb(home: Path, work: Path) -> Path:
    """Prepare the shipped smoke reviews as `datasets` caches stanfordnlp/imdb after a load_dataset."""
    from datasets import load_dataset

    frame = pd.read_csv(SMOKE_CSV)
    files = {}
    for split in ("train", "test"):
        files[split] = str(work / f"{split}.parquet")
        frame[frame["split"] == split][["text", "label"]].to_parquet(files[split], index=False)
    load_dataset("parquet", data_files=files, cache_dir=str(work / "build"))
    built = next((work / "build" / "parquet").glob("*/0.0.0/*[0-9a-f]"))
    target = home / "datasets" / "stanfordnlp___imdb" / "plain_text" / "0.0.0" / "fake"
    target.mkdir(parents=True)
    for split in ("train", "test"):
        shutil.copy(built / f"parquet-{split}.arrow", target / f"imdb-{split}.arrow")
    info = json.loads((built / "dataset_info.json").read_text())
    info.update(config_name="plain_text", dataset_name="imdb", builder_name="imdb")
    for split in info["splits"].values():
        split["dataset_name"] = "imdb"
    (target / "dataset_info.json").write_text(json.dumps(info))
    return target


@pytest.fixture
def offline_room(tmp_path, monkeypatch):
    """An empty HF_HOME, the Hub at a closed port, HF_HUB_OFFLINE unset; restores the offline switches after."""
    from huggingface_hub import constants

    home = tmp_path / "hf"
    home.mkdir()
    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE",
                 "HF_DATASETS_CACHE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_ENDPOINT", CLOSED)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", constants.HF_HUB_OFFLINE)
    if "datasets.config" in sys.modules:
        ds = sys.modules["datasets.config"]
        monkeypatch.setattr(ds, "HF_HUB_OFFLINE", ds.HF_HUB_OFFLINE)
        monkeypatch.setattr(ds, "HF_DATASETS_OFFLINE", ds.HF_DATASETS_OFFLINE)
    monkeypatch.setattr(config, "_CACHED_USED", set())
    return home


def test_hub_host_follows_hf_endpoint(monkeypatch):
    """A mirror in HF_ENDPOINT is the host checked; without it, huggingface.co:443."""
    monkeypatch.delenv("HF_ENDPOINT", raising=False)
    assert config.hub_host() == ("huggingface.co", 443)
    monkeypatch.setenv("HF_ENDPOINT", "https://hf-mirror.example.org")
    assert config.hub_host() == ("hf-mirror.example.org", 443)
    monkeypatch.setenv("HF_ENDPOINT", "http://10.1.2.3:8080/")
    assert config.hub_host() == ("10.1.2.3", 8080)


def test_hub_reachable_checks_the_endpoint(monkeypatch):
    """A local listening socket as HF_ENDPOINT answers; a closed port does not."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen()
        monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{server.getsockname()[1]}")
        assert config.hub_reachable(timeout=1) is True
    monkeypatch.setenv("HF_ENDPOINT", CLOSED)
    assert config.hub_reachable(timeout=1) is False


def test_what_is_cached_is_found(offline_room, tmp_path):
    """A model counts as cached with its config and weights; a dataset once `datasets` prepared it."""
    assert not in_hf_cache("distilbert-base-uncased") and not in_hf_cache("stanfordnlp/imdb", "dataset")
    fake_cached_model(offline_room, "org/config-only", build_smoke_model(), weights=False)
    fake_cached_model(offline_room, "distilbert-base-uncased", build_smoke_model())
    fake_cached_imdb(offline_room, tmp_path)
    assert not in_hf_cache("org/config-only")
    assert in_hf_cache("distilbert-base-uncased") and in_hf_cache("stanfordnlp/imdb", "dataset")
    assert not in_hf_cache("stanfordnlp/imdb") and not in_hf_cache("other/imdb", "dataset")
    assert not in_hf_cache("not a repository name!")


def test_cached_model_is_used_and_the_rest_fails_fast(offline_room, monkeypatch, capsys):
    """Unreachable Hub: a cached model switches the process offline (one line); an uncached one fails at once."""
    from huggingface_hub import constants

    fake_cached_model(offline_room, "distilbert-base-uncased", build_smoke_model())
    check_hub("the model 'distilbert-base-uncased'", "distilbert-base-uncased")
    check_hub("the model 'distilbert-base-uncased'", "distilbert-base-uncased")  # the tokenizer, then the model: said once
    assert capsys.readouterr().out == "Hub unreachable: using the cached copy of the model 'distilbert-base-uncased'\n"
    assert os.environ["HF_HUB_OFFLINE"] == "1" and constants.HF_HUB_OFFLINE is True
    monkeypatch.setattr(config, "hub_reachable", lambda timeout=3.0: pytest.fail("network checked twice"))
    with pytest.raises(SetupError, match="the dataset stanfordnlp/imdb"):
        check_hub("the dataset stanfordnlp/imdb", "stanfordnlp/imdb", "dataset")


def test_nothing_cached_fails_fast(offline_room):
    """Nothing in the cache: the error names what is missing and the offline ways out, and the mirror's host."""
    start = time.perf_counter()
    with pytest.raises(SetupError) as err:
        check_hub("the model 'distilbert-base-uncased'", "distilbert-base-uncased")
    assert time.perf_counter() - start < 5
    for hint in ("127.0.0.1:9", "LORA_BUNDLE", "--model", "--data-dir", "--profile smoke"):
        assert hint in str(err.value)
    assert "HF_HUB_OFFLINE" not in os.environ


def test_script_runs_from_the_cache_without_hf_hub_offline(offline_room, tmp_path):
    """The script with Hub defaults (model and IMDB), the Hub unreachable, both cached: it trains from the cache."""
    fake_cached_model(offline_room, "distilbert-base-uncased", build_smoke_model())
    fake_cached_imdb(offline_room, tmp_path)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LORA_")}
    env.update(HF_HOME=str(offline_room), HF_ENDPOINT=CLOSED, HTTPS_PROXY=CLOSED, HTTP_PROXY=CLOSED,
               LORA_VAL_SIZE="20")
    cmd = [sys.executable, "fine_tune_sentiment.py", "--profile", "cpu", "--train-size", "120", "--eval-size", "40",
           "--max-length", "64", "--epochs", "1", "--output-dir", str(tmp_path / "out")]
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Hub unreachable: using the cached copy of the dataset stanfordnlp/imdb" in done.stdout
    assert "Hub unreachable: using the cached copy of the model 'distilbert-base-uncased'" in done.stdout
    assert "Final evaluation results" in done.stdout and (tmp_path / "out" / "metrics.json").is_file()
