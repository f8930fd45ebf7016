"""The participant's readiness check (python -m utils.check) and utils.config.versions()."""

from __future__ import annotations

import platform
import re
from importlib.metadata import version

import pytest

from utils import check, training
from utils.bundle import make_bundle
from utils.config import SMOKE_DATA, SMOKE_DECODER, SMOKE_MODEL, versions

CLOSED = "http://127.0.0.1:9"  # nothing listens there


@pytest.fixture
def no_hub(tmp_path, monkeypatch):
    """An empty Hugging Face cache, the Hub at a closed port, no HF_HUB_OFFLINE, no bundle."""
    for name in ("HF_HUB_OFFLINE", "LORA_BUNDLE", "LORA_MODEL", "LORA_DATA_DIR", "LORA_DECODER"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", CLOSED)


def test_versions_is_one_line_of_the_installed_versions():
    line = versions()
    assert "\n" not in line and line.startswith(f"python {platform.python_version()}, ")
    for name in ("torch", "transformers", "peft", "datasets"):
        assert f"{name} {version(name)}" in line
    assert re.fullmatch(r"python \S+, torch \S+, transformers \S+, peft \S+, datasets \S+", line)


def test_smoke_profile_is_ready_and_trains(monkeypatch):
    """On the smoke profile everything is offline; the smoke run trains and the check says OK."""
    monkeypatch.setenv("LORA_PROFILE", "smoke")
    monkeypatch.delenv("LORA_BUNDLE", raising=False)
    lines = []
    assert check.run_check(log=lines.append) is True
    text = "\n".join(lines)
    for label in ("device", "precision", "versions", "model", "data", "decoder"):
        assert any(line.startswith(label) for line in lines), label
    assert re.search(r"^smoke run +OK, trained and evaluated in \d+ s", text, flags=re.M)
    assert lines[-1] == "OK: ready for the lessons." and versions() in text


def test_unreachable_hub_without_cache_says_what_to_fix(no_hub, monkeypatch):
    """cpu profile, no Hub, nothing cached: model, data and decoder are NOT FOUND, with the bundle as a fix."""
    monkeypatch.setenv("LORA_PROFILE", "cpu")
    monkeypatch.setattr(training, "train_device", lambda use_cpu=False: "mps")  # an Apple GPU, faked
    lines = []
    assert check.run_check(train=False, log=lines.append) is False
    text = "\n".join(lines)
    assert re.search(r"^device +mps \(Apple GPU\)", text, flags=re.M)
    assert re.search(r"^model +distilbert-base-uncased: NOT FOUND: the Hub \(127\.0\.0\.1:9\) does not answer", text,
                     flags=re.M)
    assert re.search(r"^data +stanfordnlp/imdb: NOT FOUND", text, flags=re.M) and "LORA_BUNDLE=DIR" in text
    assert lines[-1] == "NOT READY: fix the model, data, decoder line(s) above."
    assert check.main(["--no-train"]) == 1


def test_cached_copies_count_as_found(no_hub, monkeypatch):
    """What the Hugging Face cache holds is found even when the Hub does not answer."""
    monkeypatch.setenv("LORA_PROFILE", "cpu")
    monkeypatch.setattr(check, "in_hf_cache", lambda repo_id, repo_type="model": True)
    lines = []
    assert check.run_check(train=False, log=lines.append) is True
    assert "model      distilbert-base-uncased: the local Hugging Face cache (the Hub (127.0.0.1:9) does not answer)" \
        in lines


def test_room_bundle_is_found(no_hub, monkeypatch, tmp_path):
    """With LORA_BUNDLE, the model, data and decoder come from the bundle: ready without the Hub."""
    make_bundle(tmp_path / "room", SMOKE_MODEL, SMOKE_DECODER, SMOKE_DATA, log=lambda *args: None)
    monkeypatch.setenv("LORA_PROFILE", "cpu")
    monkeypatch.setenv("LORA_BUNDLE", str(tmp_path / "room"))
    lines = []
    assert check.run_check(train=False, log=lines.append) is True
    assert sum("found in the room bundle" in line for line in lines) == 3
    assert any(line.startswith("profile") and "room bundle" in line for line in lines)


def test_precision_in_words():
    assert check.describe_precision({"bf16": True, "fp16": False}) == "bf16 mixed precision"
    assert check.describe_precision({"bf16": False, "fp16": True}) == "fp16 mixed precision"
    assert check.describe_precision({"bf16": False, "fp16": False}) == "float32"
