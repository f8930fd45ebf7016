"""Lesson 04's claims and the functions it writes in the open, checked on the smoke profile.

The lesson loads lesson 03's adapter with `from_pretrained` + `PeftModel.from_pretrained`, scores it with
`trainer.predict`, and writes a few functions in its cells (the ECE; solutions: the bytes of a training step).
These tests run the same calls and the cells' own functions, so a lesson edit that breaks them fails here.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "notebooks" / "04_evaluation.ipynb"
SOLUTIONS = ROOT / "notebooks" / "solutions" / "04_solutions.ipynb"


def notebook_function(path: Path, name: str, namespace: dict | None = None):
    """The function `name` defined in a code cell of the notebook at `path`, compiled on its own."""
    for cell in json.loads(path.read_text())["cells"]:
        if cell["cell_type"] != "code" or f"def {name}(" not in "".join(cell["source"]):
            continue
        tree = ast.parse("".join(cell["source"]))
        node = next(n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name)
        scope = {"np": np, "torch": torch, **(namespace or {})}
        exec(compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec"), scope)
        return scope[name]
    raise AssertionError(f"{path.name} defines no function {name}()")


def load_like_the_lesson(adapter_dir: Path, model_name: str):
    """The lesson's loading cell: the backbone with the labels, in float32, then the saved adapter and tokenizer."""
    from peft import PeftModel
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from utils.model import resolve_model_path

    base = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path(model_name), num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1}, dtype=torch.float32)
    return PeftModel.from_pretrained(base, adapter_dir), AutoTokenizer.from_pretrained(adapter_dir)


def prediction_trainer(model, tokenizer, output_dir: Path):
    """The lesson's Trainer for scoring: plain TrainingArguments, dynamic padding, lesson 03's compute_metrics."""
    from transformers import DataCollatorWithPadding, Trainer, TrainingArguments

    from utils.metrics import compute_metrics

    args = TrainingArguments(output_dir=str(output_dir), per_device_eval_batch_size=32, use_cpu=True,
                             dataloader_pin_memory=False, report_to="none")
    return Trainer(model=model, args=args, data_collator=DataCollatorWithPadding(tokenizer),
                   processing_class=tokenizer, compute_metrics=compute_metrics)


@pytest.fixture(scope="module")
def scored(smoke_run, tmp_path_factory):
    """The smoke run's adapter loaded as the lesson loads it, its test split scored with `trainer.predict`."""
    from utils.config import resolve_config
    from utils.data import load_imdb
    from utils.training import tokenize

    cfg = resolve_config("smoke", output_dir=str(smoke_run))
    model, tokenizer = load_like_the_lesson(smoke_run / "adapter", cfg.model)
    data, _ = load_imdb(cfg)
    tokenized = tokenize(data, tokenizer, cfg.max_length)
    trainer = prediction_trainer(model, tokenizer, tmp_path_factory.mktemp("predict"))
    out = trainer.predict(tokenized["test"], metric_key_prefix="test")
    return {"cfg": cfg, "model": model, "tokenizer": tokenizer, "data": data, "tokenized": tokenized,
            "trainer": trainer, "out": out}


def test_loaded_adapter_reproduces_the_recorded_test_accuracy(scored, smoke_run):
    """Reloaded from disk, the adapter scores the test split as training recorded it (up to one review at 0.5)."""
    recorded = json.loads((smoke_run / "metrics.json").read_text())["test_accuracy"]
    n = len(scored["out"].label_ids)
    assert abs(scored["out"].metrics["test_accuracy"] - recorded) <= 1 / n + 1e-9
    assert scored["out"].metrics["test_accuracy"] > 0.9  # the smoke recipe learns: a broken load lands near 0.5


def test_prediction_rows_follow_the_dataset_and_the_recipe_trainer_would_not(scored):
    """Plain TrainingArguments read the test split in order; lesson 03's Trainer groups it by length."""
    from torch.utils.data import SequentialSampler

    from utils.training import build_trainer

    test = scored["tokenized"]["test"]
    assert np.array_equal(scored["out"].label_ids, np.array(scored["data"]["test"]["label"]))
    assert isinstance(scored["trainer"].get_test_dataloader(test).batch_sampler.sampler, SequentialSampler)
    recipe = build_trainer(scored["model"], scored["tokenizer"], scored["tokenized"], scored["cfg"])
    order = list(recipe.get_test_dataloader(test).batch_sampler.sampler)
    assert sorted(order) == list(range(len(test))) and order != list(range(len(test)))


def test_lesson_ece_is_the_one_in_utils():
    """The ECE written in the lesson gives what utils.plots.expected_calibration_error gives, bin edges included."""
    from utils.plots import expected_calibration_error

    ece = notebook_function(LESSON, "ece")
    rng = np.random.default_rng(0)
    for _ in range(20):
        labels = rng.integers(0, 2, 200)
        on_edge = np.round(rng.random(200), 1)  # exactly on a bin edge (0.1, 0.2, ...): which bin is a convention
        scores = np.where(rng.random(200) < 0.5, on_edge, rng.random(200))
        assert ece(labels, scores) == pytest.approx(expected_calibration_error(labels, scores))
    assert ece([0, 1, 0, 1], [0.5] * 4) == pytest.approx(0)


def test_lesson_temperature_keeps_labels(scored):
    """p_positive(out, T) is a softmax of logits / T: any T > 0 keeps every label, T = 1 is the plain softmax."""
    p_positive = notebook_function(LESSON, "p_positive")
    out = scored["out"]
    plain = torch.softmax(torch.from_numpy(out.predictions), dim=-1)[:, 1].numpy()
    assert np.allclose(p_positive(out), plain)
    for T in (0.3, 1.7, 5.0):
        assert np.array_equal(p_positive(out, T) > 0.5, plain > 0.5)


def test_solution_step_bytes_counts_the_parts_lora_saves():
    """Solutions, exercise 7: LoRA's gradients and AdamW state are 4 and 8 bytes per trainable weight; full's, per weight."""
    from transformers import DataCollatorWithPadding

    from utils.config import resolve_config
    from utils.data import load_imdb
    from utils.model import add_lora, count_parameters, load_backbone, load_tokenizer
    from utils.training import tokenize

    step_bytes = notebook_function(SOLUTIONS, "step_bytes")
    cfg = resolve_config("smoke")
    tokenizer = load_tokenizer(cfg.model, cfg.max_length)
    train = tokenize(load_imdb(cfg)[0], tokenizer, cfg.max_length)["train"]
    batch = DataCollatorWithPadding(tokenizer)([train[i] for i in range(8)])
    rows = {}
    for name in ("lora", "full"):
        torch.manual_seed(0)
        backbone = load_backbone(cfg.model)
        model = (add_lora(backbone, cfg) if name == "lora" else backbone).train()
        rows[name] = (step_bytes(model, batch), *count_parameters(model))
    for name, (row, trainable, total) in rows.items():
        assert row["weights"] == 4 * total
        assert row["gradients"] == 4 * trainable and row["AdamW state"] == 8 * trainable
    (lora, lora_trainable, _), (full, _, _) = rows["lora"], rows["full"]
    assert lora_trainable < full["weights"] / 4 / 10
    assert 0 < lora["activations saved for backward"] < full["activations saved for backward"]
