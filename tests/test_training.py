"""utils.training and the headless script, end to end on the smoke profile."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from utils.config import SetupError, resolve_config
from utils.data import load_smoke_reviews
from utils.model import load_tokenizer
from utils.training import (TEST_KEYS, cpu_has_native_bf16, find_or_train_adapter, precision_flags, resume_point, run_training,
                            tokenize, train_device, training_arguments)

ROOT = Path(__file__).resolve().parents[1]
REQUIRED = {"test_accuracy", "test_loss", "test_f1", "validation", "val_size", "precision", "profile", "model",
            "data_source", "train_size", "eval_size", "max_length", "trainable_params", "total_params", "train_runtime_s", "train_samples_per_second", "lr",
            "batch_size"}


def test_tokenize_truncates_and_does_not_pad():
    tokenizer = load_tokenizer("smoke-distilbert")
    tokens = tokenize(load_smoke_reviews(), tokenizer, max_length=30)
    lengths = [len(ids) for ids in tokens["train"]["input_ids"]]
    assert max(lengths) == 30 and min(lengths) < 30  # long ones truncated, short ones left unpadded
    assert tokens["train"].column_names == ["label", "input_ids", "attention_mask"]


def test_cpu_training_arguments():
    args = training_arguments(resolve_config("cpu", use_cpu=True, output_dir="out"))
    assert args.use_cpu and args.bf16 == cpu_has_native_bf16() and not args.fp16
    assert args.eval_strategy == "epoch" and args.load_best_model_at_end
    assert args.train_sampling_strategy == "group_by_length"
    assert args.output_dir.endswith("checkpoints")


def test_smoke_run_writes_adapter_and_metrics(smoke_run):
    metrics = json.loads((smoke_run / "metrics.json").read_text())
    assert REQUIRED <= metrics.keys()
    assert set(TEST_KEYS) <= metrics.keys()
    assert (metrics["train_size"], metrics["val_size"], metrics["eval_size"]) == (128, 32, 80)
    assert metrics["validation"]["eval_accuracy"] == max(  # the best epoch, chosen on validation data
        h["eval_accuracy"] for h in metrics["log_history"] if "eval_accuracy" in h)
    assert 0 < metrics["trainable_params"] < metrics["total_params"]
    for name in ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json"):
        assert (smoke_run / "adapter" / name).is_file()
    losses = [h["loss"] for h in metrics["log_history"] if "loss" in h]
    assert losses[-1] < losses[0]  # it learned something
    assert metrics["test_accuracy"] > 0.6  # chance is 0.5 on the balanced smoke test set


def test_find_or_train_adapter_reuses_a_finished_run(smoke_run):
    logged = []
    cfg = resolve_config("smoke", output_dir=str(smoke_run))
    assert find_or_train_adapter(cfg, log=logged.append) == smoke_run / "adapter"
    assert "trained earlier" in logged[0]


def test_interrupted_run_resumes_only_with_the_same_settings(tmp_path):
    cfg = resolve_config("smoke", epochs=1, output_dir=str(tmp_path))
    run_training(cfg, log=lambda _: None)
    stage = tmp_path / "staging"  # as if a rerun (which trains in staging/) had stopped after its checkpoint
    shutil.copytree(tmp_path / "checkpoints", stage / "checkpoints")
    shutil.copy(tmp_path / "run_config.json", stage)
    assert resume_point(cfg) is not None
    with pytest.raises(SetupError, match="other settings"):
        resume_point(resolve_config("smoke", epochs=2, output_dir=str(tmp_path)))
    logged = []
    run_training(cfg, log=logged.append)
    assert any("Resuming from" in line for line in logged)
    assert (tmp_path / "metrics.json").is_file() and not stage.exists()


def test_a_new_run_starts_from_scratch_without_touching_the_finished_one(smoke_run, tmp_path):
    out = tmp_path / "run"
    shutil.copytree(smoke_run, out)
    assert resume_point(resolve_config("smoke", lr=1e-3, output_dir=str(out))) is None
    assert (out / "metrics.json").exists() and (out / "checkpoints").exists()  # replaced only once the new one finishes
    assert json.loads((out / "staging" / "run_config.json").read_text())["lr"] == 1e-3


def run_script(*args: str) -> subprocess.CompletedProcess:
    """Run fine_tune_sentiment.py as a user would."""
    return subprocess.run([sys.executable, "fine_tune_sentiment.py", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_script_prints_results_and_predictions(tmp_path):
    done = run_script("--profile", "smoke", "--epochs", "2", "--output-dir", str(tmp_path))
    assert done.returncode == 0, done.stderr[-2000:]
    assert "Final evaluation results: {'test_loss': " in done.stdout
    assert "'This movie was absolutely fantastic!': [{'label': '" in done.stdout
    assert json.loads((tmp_path / "metrics.json").read_text())["epochs"] == 2


def test_script_bad_input_is_one_line_not_a_traceback(tmp_path):
    done = run_script("--profile", "smoke", "--data-dir", str(tmp_path / "missing"), "--output-dir", str(tmp_path))
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("Error: Data directory")
    assert not (tmp_path / "metrics.json").exists()


def test_device_choice_cuda_mps_cpu(monkeypatch):
    """CUDA first, then Apple's MPS, then the CPU; use_cpu forces the CPU (faked platforms)."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: False)
    monkeypatch.setattr("torch.backends.mps.is_available", lambda: True)
    assert train_device() == "mps" and train_device(use_cpu=True) == "cpu"
    assert precision_flags("mps") == {"bf16": False, "fp16": False}
    args = training_arguments(resolve_config("cpu", output_dir="out"))
    assert not args.use_cpu  # the Trainer then picks MPS itself
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    assert train_device() == "cuda"
    for major, flags in ((8, {"bf16": True, "fp16": False}), (7, {"bf16": False, "fp16": True})):
        monkeypatch.setattr("torch.cuda.get_device_capability", lambda *a, m=major: (m, 0))
        assert precision_flags("cuda") == flags


def test_cpu_precision_follows_native_bf16(monkeypatch):
    """bf16 autocast only on CPUs with bf16 in hardware (AVX512-BF16 or AMX); emulated bf16 is slower than fp32."""
    for avx512, amx, bf16 in ((True, False, True), (False, True, True), (False, False, False)):
        monkeypatch.setattr("torch.cpu._is_avx512_bf16_supported", lambda v=avx512: v)
        monkeypatch.setattr("torch.cpu._is_amx_tile_supported", lambda v=amx: v)
        assert precision_flags("cpu") == {"bf16": bf16, "fp16": False}


def test_ready_adapter_from_environment(smoke_run, monkeypatch, tmp_path):
    monkeypatch.setenv("LORA_ADAPTER", str(smoke_run / "adapter"))
    logged = []
    assert find_or_train_adapter(resolve_config("smoke", output_dir=str(tmp_path)), log=logged.append) == smoke_run / "adapter"
    assert "LORA_ADAPTER" in logged[0] and not (tmp_path / "metrics.json").exists()
    monkeypatch.setenv("LORA_ADAPTER", str(tmp_path))
    with pytest.raises(SetupError, match="LORA_ADAPTER"):
        find_or_train_adapter(resolve_config("smoke", output_dir=str(tmp_path)))


def test_test_split_is_scored_from_its_own_loader_with_persistent_workers(tmp_path, monkeypatch):
    """With persistent dataloader workers (on by default on CUDA), the test metrics are the test split's.

    trainer.evaluate(test) would return the loader cached for the validation split
    (huggingface/transformers#30527); train_then_test scores the test split with trainer.predict.
    """
    import dataclasses

    from utils import training

    plain = training.training_arguments
    monkeypatch.setattr(training, "training_arguments", lambda cfg: dataclasses.replace(
        plain(cfg), dataloader_num_workers=1, dataloader_persistent_workers=True))
    cfg = resolve_config("smoke", epochs=1, output_dir=str(tmp_path))
    metrics = run_training(cfg, log=lambda _: None)
    assert metrics["eval_size"] == 80 and metrics["val_size"] == 32
    assert metrics["test_loss"] != metrics["validation"]["eval_loss"]

    from utils.data import load_imdb
    from utils.model import add_lora, load_backbone

    data = tokenize(load_imdb(cfg)[0], load_tokenizer(cfg.model), 64)
    trainer = training.build_trainer(add_lora(load_backbone(cfg.model), cfg), load_tokenizer(cfg.model), data,
                                     dataclasses.replace(cfg, output_dir=str(tmp_path / "again")))
    assert trainer.args.dataloader_persistent_workers
    trainer.evaluate()  # caches the validation loader, as the epoch's evaluation does
    out = trainer.predict(data["test"], metric_key_prefix="test")
    assert len(out.predictions) == len(data["test"]) == 80  # the test loader holds the test rows
    assert sorted(out.label_ids.tolist()) == sorted(data["test"]["label"])  # its labels (in the loader's order)


def test_gpu_training_settings_are_restored(monkeypatch):
    """cuDNN attention off and TF32 matmuls only inside the block (faked CUDA); nothing changes without CUDA."""
    import torch

    from utils.training import gpu_training_settings

    matmul = torch.backends.cuda.matmul
    before = (torch.backends.cuda.cudnn_sdp_enabled(), matmul.fp32_precision)
    with gpu_training_settings():
        assert (torch.backends.cuda.cudnn_sdp_enabled(), matmul.fp32_precision) == before  # no CUDA here
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    with gpu_training_settings():
        assert not torch.backends.cuda.cudnn_sdp_enabled() and matmul.fp32_precision == "tf32"
    assert (torch.backends.cuda.cudnn_sdp_enabled(), matmul.fp32_precision) == before


def test_auto_find_batch_size_only_for_one_cuda_process(monkeypatch):
    """accelerate's retry (0.9x the batch, from step 0) is on for one CUDA process, never under torchrun."""
    monkeypatch.setattr("torch.cuda.is_available", lambda: True)
    monkeypatch.setattr("torch.cuda.get_device_capability", lambda *a: (8, 0))
    monkeypatch.setattr("torch.cuda.device_count", lambda: 1)
    from utils import training

    monkeypatch.setattr(training, "TrainingArguments", lambda **kw: kw)  # the arguments, without a CUDA device
    cfg = resolve_config("gpu", output_dir="out")
    assert training.training_arguments(cfg)["auto_find_batch_size"]
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert not training.training_arguments(cfg)["auto_find_batch_size"]


def test_small_run_for_lessons_without_lesson_03s_adapter():
    """A fresh GPU machine trains the cpu profile's sizes for lessons 04-06, in its own folder; small runs stay."""
    from utils.training import small_run_config

    small = small_run_config(resolve_config("gpu", output_dir="outputs/gpu-run"))
    assert (small.train_size, small.eval_size, small.val_size, small.max_length, small.epochs) == (2000, 1000, 500, 256, 1)
    assert small.output_dir == "outputs/gpu-run-small" and small.model == "distilbert-base-uncased"
    for profile in ("cpu", "smoke"):
        cfg = resolve_config(profile)
        assert small_run_config(cfg) is cfg


def test_find_or_train_adapter_trains_a_small_one_and_says_how_long(tmp_path):
    logged = []
    adapter = find_or_train_adapter(resolve_config("smoke", epochs=1, output_dir=str(tmp_path)), log=logged.append)
    assert adapter == tmp_path / "adapter" and (adapter / "adapter_config.json").is_file()
    assert "training a small one now" in logged[0] and logged[-1].startswith("Trained the small adapter in ")
