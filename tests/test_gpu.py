"""The CUDA paths, where a CUDA GPU is: mixed-precision training, the test split, the predictor, merging, QLoRA,
and lesson 03 through nbmake. Elsewhere every test here skips, saying why.

The CPU tests cannot see GPU-only bugs (the dataloader workers, bf16/fp16, TF32, device placement);
run `pytest tests/test_gpu.py` on a GPU machine (Colab, a workstation) before a release.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from utils.config import SMOKE_DECODER, resolve_config
from utils.training import precision_flags, run_training

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.skipif(not torch.cuda.is_available(),
                                reason="needs a CUDA GPU (torch.cuda.is_available() is False here)")
REVIEWS = ["This movie was absolutely fantastic!", "I was really disappointed by this film.",
           "A slow, dull plot, but the acting is wonderful."]


def ampere_or_newer() -> bool:
    """True on GPUs with bf16 in hardware (compute capability 8.0 and up)."""
    return torch.cuda.is_available() and torch.cuda.get_device_capability()[0] >= 8


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_a_few_training_steps_in_mixed_precision(tmp_path, monkeypatch, precision):
    if precision == "bf16" and not ampere_or_newer():
        pytest.skip("bf16 needs compute capability 8.0 or newer (this GPU would only emulate it)")
    from utils import training

    monkeypatch.setattr(training, "precision_flags", lambda device=None: {"bf16": precision == "bf16",
                                                                           "fp16": precision == "fp16"})
    metrics = run_training(resolve_config("smoke", epochs=1, output_dir=str(tmp_path)), log=lambda _: None)
    assert metrics["precision"] == precision and metrics["device"] == torch.cuda.get_device_name()
    losses = [h["loss"] for h in metrics["log_history"] if "loss" in h]
    assert all(map(torch.isfinite, torch.tensor(losses))) and metrics["test_accuracy"] > 0.6


def test_the_gpu_profiles_precision_is_the_hardwares():
    assert precision_flags("cuda") == {"bf16": ampere_or_newer(), "fp16": not ampere_or_newer()}


def test_test_metrics_come_from_the_test_split(tmp_path):
    """On CUDA the dataloader workers persist; the test metrics must still be the test split's."""
    out = tmp_path / "run"
    metrics = run_training(resolve_config("smoke", epochs=1, output_dir=str(out)), log=lambda _: None)
    assert json.loads((out / "metrics.json").read_text())["eval_size"] == 80
    assert metrics["test_loss"] != metrics["validation"]["eval_loss"]
    assert not torch.backends.cuda.matmul.fp32_precision == "tf32"  # TF32 was for training only


def test_predictor_on_the_gpu_agrees_with_the_cpu(smoke_run):
    from utils.predict import SentimentPredictor

    predictor = SentimentPredictor.from_pretrained(smoke_run / "adapter")
    assert predictor.device.type == "cuda"
    on_gpu = predictor.probabilities(REVIEWS)
    predictor.model.cpu()
    predictor.device = torch.device("cpu")
    torch.testing.assert_close(on_gpu, predictor.probabilities(REVIEWS), atol=1e-4, rtol=1e-4)


def test_merged_model_agrees_with_the_adapter_on_the_gpu(smoke_run):
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from utils.data import LABELS
    from utils.model import resolve_model_path

    base = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path("smoke-distilbert"), num_labels=2, id2label=LABELS,
        label2id={v: k for k, v in LABELS.items()})
    model = PeftModel.from_pretrained(base, smoke_run / "adapter").cuda().eval()
    batch = AutoTokenizer.from_pretrained(smoke_run / "adapter")(REVIEWS, padding=True, return_tensors="pt").to("cuda")
    with torch.no_grad():
        tuned = model(**batch).logits
        merged = model.merge_and_unload()(**batch).logits
    torch.testing.assert_close(tuned, merged, atol=1e-4, rtol=1e-4)


def test_qlora_wraps_4bit_layers_and_trains(tmp_path):
    """QLoRA: the decoder's linear layers in 4 bits (NF4), LoRA on top, computing in the dtype precision_flags picks."""
    pytest.importorskip("bitsandbytes", reason="QLoRA needs bitsandbytes (pip install bitsandbytes)")
    from peft import LoraConfig, TaskType, get_peft_model, prepare_model_for_kbit_training
    from peft.tuners.lora.bnb import Linear4bit
    from transformers import AutoModelForSequenceClassification, AutoTokenizer, BitsAndBytesConfig

    from utils.model import resolve_model_path

    dtype = torch.bfloat16 if precision_flags("cuda")["bf16"] else torch.float16
    folder = resolve_model_path(SMOKE_DECODER)
    tokenizer = AutoTokenizer.from_pretrained(folder)
    tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForSequenceClassification.from_pretrained(folder, num_labels=2, device_map={"": 0},
        quantization_config=BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4",
                                               bnb_4bit_use_double_quant=True, bnb_4bit_compute_dtype=dtype))
    model.config.pad_token_id = tokenizer.pad_token_id
    model = get_peft_model(prepare_model_for_kbit_training(model), LoraConfig(
        task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, target_modules=["q_proj", "v_proj"]))
    layer = model.base_model.model.model.layers[0].self_attn.q_proj
    assert isinstance(layer, Linear4bit) and layer.base_layer.compute_dtype == dtype
    batch = tokenizer(REVIEWS, padding=True, return_tensors="pt").to("cuda")
    loss = model(**batch, labels=torch.tensor([1, 0, 1], device="cuda")).loss
    loss.backward()
    assert torch.isfinite(loss) and layer.lora_A["default"].weight.grad is not None


def test_lesson_03_runs_on_the_gpu(tmp_path):
    """Lesson 03 through nbmake on small sizes: the real encoder and IMDB when given, else the smoke profile."""
    env = dict(os.environ, LORA_OUTPUT_DIR=str(tmp_path / "lesson03"), LORA_EPOCHS="1")
    if os.environ.get("IMDB_DATA_DIR") and os.environ.get("LORA_TEST_MODEL"):
        env.update(LORA_PROFILE="gpu", LORA_DATA_DIR=os.environ["IMDB_DATA_DIR"], LORA_MODEL=os.environ["LORA_TEST_MODEL"],
                   LORA_TRAIN_SIZE="2000", LORA_VAL_SIZE="500", LORA_EVAL_SIZE="1000", LORA_MAX_LENGTH="256")
    else:
        env["LORA_PROFILE"] = "smoke"
    done = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbmake",
                           "notebooks/03_gpu_training.ipynb"], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:]
