"""Lesson 03's cells against the utils functions that hold the same code, and its one-screen recipe, run offline.

The lesson writes `TrainingArguments(...)` and `compute_metrics` in the open; the script trains through
`utils.training.training_arguments` and `utils.metrics.compute_metrics`. These tests take the cells' code
from the notebook and check that the two agree, so that neither drifts. The recipe of the lesson's last
code cell (Hub model, Hub data, Hub metrics) runs here with only its three source lines swapped for the
smoke model, the smoke reviews as parquet files and the project's own metric module.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import numpy as np
import pytest

from utils.config import resolve_config
from utils.training import precision_flags, train_device, training_arguments

ROOT = Path(__file__).resolve().parents[1]
LESSON = ROOT / "notebooks" / "03_gpu_training.ipynb"
RECIPE_MAGIC = "%%writefile recipe.py"
# What the script's training_arguments adds to the lesson's settings (the lesson's section 9 explains them),
# and logging_steps, which it lowers for tiny training sets.
SCRIPT_ONLY = {"auto_find_batch_size", "dataloader_num_workers", "dataloader_persistent_workers",
               "ddp_find_unused_parameters", "logging_steps"}


def code_cells() -> list[str]:
    """The sources of the lesson's code cells."""
    return ["".join(c["source"]) for c in json.loads(LESSON.read_text())["cells"] if c["cell_type"] == "code"]


def cell_with(text: str) -> str:
    """The one code cell of the lesson that contains `text` (outside the recipe, unless `text` is its magic)."""
    found = [src for src in code_cells() if text in src and (text == RECIPE_MAGIC or not src.startswith(RECIPE_MAGIC))]
    assert len(found) == 1, f"expected one code cell with {text!r} in {LESSON.name}, found {len(found)}"
    return found[0]


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_lesson_training_arguments_equal_training_arguments(profile, tmp_path):
    """Every setting the lesson's cell writes is what training_arguments(cfg) gives the script."""
    cfg = resolve_config(profile, output_dir=str(tmp_path / "run"))
    namespace = {"cfg": cfg, "device": train_device(cfg.use_cpu), "precision_flags": precision_flags}
    exec(cell_with("args = TrainingArguments("), namespace)
    ours, script = namespace["args"].to_dict(), training_arguments(cfg).to_dict()
    different = {name for name in ours if ours[name] != script[name]}
    assert different <= SCRIPT_ONLY, {name: (ours[name], script[name]) for name in different - SCRIPT_ONLY}
    assert ours["output_dir"] == script["output_dir"] == str(tmp_path / "run" / "checkpoints")


def test_lesson_compute_metrics_equals_utils_metrics(monkeypatch):
    """The cell's compute_metrics (evaluate with the project's module) gives utils.metrics' numbers."""
    from utils.metrics import compute_metrics

    monkeypatch.chdir(ROOT)  # the cell loads the module by its path in the project, as the lesson runs there
    namespace: dict = {}
    exec(cell_with("def compute_metrics("), namespace)
    rng = np.random.default_rng(0)
    cases = [(rng.normal(size=(50, 2)), rng.integers(0, 2, 50)) for _ in range(3)]
    cases.append((np.tile([[1.0, 0.0]], (6, 1)), np.array([0, 1, 0, 1, 1, 0])))  # never POSITIVE: F1 0, not NaN
    for logits, labels in cases:
        ours, utils_metrics = namespace["compute_metrics"]((logits, labels)), compute_metrics((logits, labels))
        assert set(ours) == {"accuracy", "f1", "precision", "recall"}
        assert ours == pytest.approx(utils_metrics)
    assert namespace["compute_metrics"]((np.array([[0.0, 1.0], [1.0, 0.0]]), np.array([1, 1])))["accuracy"] == 0.5


def test_lesson_scores_the_test_split_with_predict_and_saves_the_adapter():
    """The main path: test split through trainer.predict, never trainer.evaluate; the adapter where 04-06 look."""
    cells = code_cells()
    assert not any("trainer.evaluate(" in src for src in cells)
    cell_with('trainer.predict(tokenized["test"], metric_key_prefix="test")')
    save = cell_with("model.save_pretrained(adapter_dir)")
    assert 'adapter_dir = Path(cfg.output_dir) / "adapter"' in save and "tokenizer.save_pretrained(adapter_dir)" in save
    assert not any("cfg.profile" in src for src in cells), "no lesson branches on the profile"


def recipe() -> str:
    """The one-screen recipe: the lesson's `%%writefile recipe.py` cell without its first line."""
    magic, _, body = cell_with(RECIPE_MAGIC).partition("\n")
    assert magic == RECIPE_MAGIC
    return body


def test_recipe_fits_one_screen_and_is_literal():
    body = recipe()
    assert len(body.splitlines()) <= 41
    for call in ['load_dataset("stanfordnlp/imdb")', "AutoTokenizer.from_pretrained(", ".map(",
                 "AutoModelForSequenceClassification.from_pretrained(", "num_labels=2", "id2label=", "label2id=",
                 "LoraConfig(", "r=8", "lora_alpha=16", "lora_dropout=0.1", 'target_modules=["q_lin", "v_lin"]',
                 "get_peft_model(", "evaluate.combine(", "def compute_metrics(", "TrainingArguments(",
                 "DataCollatorWithPadding(", "Trainer(", "trainer.train()", 'metric_key_prefix="test"',
                 "model.save_pretrained(", "tokenizer.save_pretrained("]:
        assert call in body, call
    assert "utils" not in body, "the recipe runs in an empty notebook: nothing of this project"
    ast.parse(body)


def test_recipe_runs_offline_on_the_smoke_model(tmp_path, monkeypatch, capsys):
    """The recipe, with its model, data and metric lines pointed at local files, trains, tests once and saves."""
    from utils.data import load_imdb
    from utils.model import resolve_model_path

    smoke = resolve_config("smoke")
    data, _ = load_imdb(smoke)  # the shipped reviews, as the parquet files lesson 01 loads offline
    files = {split: str(tmp_path / f"{split}.parquet") for split in ("train", "test")}
    for split, path in files.items():
        data[split].to_parquet(path)
    offline = {
        'model_name = "distilbert-base-uncased"': f"model_name = {resolve_model_path(smoke.model)!r}",
        'imdb = load_dataset("stanfordnlp/imdb")': f'imdb = load_dataset("parquet", data_files={files!r})',
        'metric = evaluate.combine(["accuracy", "f1", "precision", "recall"])':
            f'metric = evaluate.load({str(ROOT / "utils" / "classification_metrics.py")!r})',
    }
    body = recipe()
    for line, local in offline.items():
        assert body.count(line) == 1, f"the recipe no longer has the line {line!r}"
        body = body.replace(line, local)

    monkeypatch.chdir(tmp_path)  # the recipe writes imdb-lora/ where it runs
    exec(compile(body, "recipe.py", "exec"), {"__name__": "__main__"})

    printed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("{'test_loss'")]
    assert len(printed) == 1, "the recipe prints the test metrics once"
    test = ast.literal_eval(printed[0])
    assert test["test_accuracy"] > 0.75  # chance is 0.5 on the balanced smoke test set; it reaches about 0.99
    adapter = tmp_path / "imdb-lora" / "adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert (config["r"], config["lora_alpha"], sorted(config["target_modules"])) == (8, 16, ["q_lin", "v_lin"])
    assert (adapter / "adapter_model.safetensors").is_file() and (adapter / "tokenizer.json").is_file()


def test_speed_cell_reads_the_bench_report(tmp_path, monkeypatch):
    """The speed section's table comes from the JSON report `python -m utils.bench --output ...` writes."""
    import pandas as pd

    from utils import bench

    monkeypatch.chdir(tmp_path)
    bench.run(bench.parse_args(["--model-size", "tiny", "--steps", "1", "--warmup", "0", "--max-length", "32",
                                "--threads", "1", "--output", "results/bench-cpu.json"]))
    shown = []
    exec(cell_with("bench-*.json"), {"Path": Path, "json": json, "pd": pd, "display": shown.append})
    assert len(shown) == 1
    table = shown[0]
    assert {"naive", "project"} <= set(table.columns)
    assert table.loc["padding", "naive"] == "max_length" and table.loc["samples_per_s"].astype(float).gt(0).all()
