"""utils.experiments on the smoke profile: every run, the rank sweep, the results file, and its guards."""

import json

import pytest
import torch
from transformers import BertConfig, BertForSequenceClassification

from utils import experiments
from utils.config import SetupError, resolve_config
from utils.model import load_backbone

TINY = ["--profile", "smoke", "--epochs", "1", "--train-size", "32", "--val-size", "8", "--eval-size", "16",
        "--max-length", "32", "--in-process"]
KEYS = {"run", "label", "test_accuracy", "test_f1", "validation_accuracy", "trainable_params", "train_time_s",
        "peak_memory_mb", "memory_before_mb", "disk_bytes", "saved", "settings", "config", "command", "wall_s"}


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    """The default runs and a two-rank sweep on tiny smoke settings, through the command line."""
    tmp = tmp_path_factory.mktemp("experiments")
    out = tmp / "results.json"
    assert experiments.main([*TINY, "--ranks", "1,4", "--out", str(out), "--work-dir", str(tmp / "work")]) == 0
    return json.loads(out.read_text()), tmp


def test_default_runs_and_what_each_records(results, capsys):
    data, _ = results
    assert list(data["runs"]) == list(experiments.DEFAULT_RUNS)  # full fine-tuning not among them
    for name, row in data["runs"].items():
        assert KEYS <= row.keys(), name
        # scored on the 16 test and 8 validation reviews: whole numbers of reviews right
        assert row["test_accuracy"] * 16 == pytest.approx(round(row["test_accuracy"] * 16), abs=1e-3), name
        assert row["validation_accuracy"] * 8 == pytest.approx(round(row["validation_accuracy"] * 8), abs=1e-3), name
        assert row["disk_bytes"] > 0 and row["peak_memory_mb"] > 0
        assert row["config"]["train_size"] == 32 and row["config"]["val_size"] == 8 and row["config"]["epochs"] == 1
    runs = data["runs"]
    assert runs["majority"]["trainable_params"] == 0
    assert runs["majority"]["test_accuracy"] == 0.5  # the stratified test set is balanced
    assert runs["tfidf"]["trainable_params"] == runs["tfidf"]["settings"]["features"] + 1  # coefficients + intercept
    assert runs["tfidf"]["settings"]["C"] in experiments.TFIDF_C
    # head only < LoRA (head + adapters on q_lin, v_lin: the smoke profile has the lessons' targets) < every linear layer
    assert 0 < runs["head_only"]["trainable_params"] < runs["lora"]["trainable_params"]
    assert runs["lora"]["trainable_params"] < runs["lora_all_linear"]["trainable_params"]
    assert runs["lora"]["settings"]["target_modules"] == ["q_lin", "v_lin"]
    assert runs["head_only"]["model_params"] == runs["lora"]["model_params"]
    assert runs["lora"]["trainable_share"] == pytest.approx(
        runs["lora"]["trainable_params"] / runs["lora"]["model_params"], abs=1e-6)


def test_the_lora_row_is_the_saved_adapter_s_accuracy(results):
    """The LoRA row's test accuracy is what its saved adapter scores on the same 16 test reviews."""
    from utils.data import load_imdb
    from utils.predict import SentimentPredictor

    data, tmp = results
    test = load_imdb(resolve_config("smoke", train_size=32, val_size=8, eval_size=16, max_length=32))[0]["test"]
    predicted = [r["label"] for r in SentimentPredictor.from_pretrained(tmp / "work" / "lora" / "adapter")(
        list(test["text"]))]
    accuracy = sum(p == ("POSITIVE" if y else "NEGATIVE") for p, y in zip(predicted, test["label"])) / len(predicted)
    assert accuracy == pytest.approx(data["runs"]["lora"]["test_accuracy"], abs=1 / 16 + 1e-9)  # one may flip


def test_results_record_command_machine_and_sweep(results):
    data, tmp = results
    (entry,) = data["commands"]
    assert entry["command"].startswith("python -m utils.experiments --profile smoke")
    assert "--ranks 1,4" in entry["command"]
    assert entry["machine"]["torch_threads"] == torch.get_num_threads() and entry["machine"]["cpu"]
    assert data["model"] == "smoke-distilbert" and data["data_dir"] == "smoke"
    points = data["sweep"]["points"]
    assert [p["lora_r"] for p in points] == [1, 4] and [p["lora_alpha"] for p in points] == [2, 8]  # alpha/r = 2
    assert points[0]["trainable_params"] < points[1]["trainable_params"]
    assert points[0]["disk_bytes"] < points[1]["disk_bytes"]
    assert data["sweep"]["config"]["max_length"] == 32
    assert (tmp / "work" / "sweep-r4" / "lora" / "adapter" / "adapter_config.json").is_file()


def test_full_fine_tuning_only_when_named(tmp_path, capsys):
    out = tmp_path / "results.json"
    experiments.main([*TINY, "--runs", "majority", "--ranks", "none", "--out", str(out), "--work-dir", str(tmp_path)])
    assert "Full fine-tuning not run" in capsys.readouterr().out
    assert list(json.loads(out.read_text())["runs"]) == ["majority"]
    experiments.main([*TINY, "--runs", "full", "--ranks", "none", "--out", str(out), "--merge",
                      "--work-dir", str(tmp_path)])
    data = json.loads(out.read_text())
    assert list(data["runs"]) == ["majority", "full"] and len(data["commands"]) == 2  # merged, both commands kept
    full = data["runs"]["full"]
    assert full["trainable_params"] == full["model_params"] and full["trainable_share"] == 1
    assert full["settings"]["lr"] == experiments.FULL_FT_LR and full["config"]["lr"] == experiments.FULL_FT_LR
    assert (tmp_path / "full" / "model" / "model.safetensors").is_file()


def test_merge_refuses_other_model_and_bad_names(tmp_path):
    out = tmp_path / "results.json"
    out.write_text(json.dumps({"model": "another-model", "data_dir": "smoke", "runs": {}, "sweep": None,
                               "commands": []}))
    with pytest.raises(SetupError, match="another-model"):
        experiments.main([*TINY, "--runs", "majority", "--ranks", "none", "--out", str(out), "--merge"])
    with pytest.raises(SetupError, match="Unknown run"):
        experiments.main([*TINY, "--runs", "majority,everything", "--out", str(out)])
    with pytest.raises(SetupError, match="positive"):
        experiments.main([*TINY, "--ranks", "0,2", "--out", str(out)])
    with pytest.raises(SetupError, match="No results file"):
        experiments.load_results(tmp_path / "missing.json")


def test_isolated_run_reports_its_own_memory(tmp_path):
    """In a fresh process the memory before the run is that of a new interpreter, not this one's."""
    cfg = resolve_config("smoke", train_size=32, val_size=8, eval_size=16)
    row = experiments.run_isolated("majority", cfg, tmp_path, threads=1)
    assert row["test_accuracy"] == 0.5 and row["peak_memory_mb"] >= row["memory_before_mb"] > 0
    assert (tmp_path / "majority" / "majority.joblib").is_file()


def test_all_linear_targets_leave_the_head_out():
    distilbert = load_backbone("smoke-distilbert")
    assert experiments.all_linear_targets(distilbert) == ["k_lin", "lin1", "lin2", "out_lin", "q_lin", "v_lin"]
    bert = BertForSequenceClassification(BertConfig(vocab_size=50, hidden_size=8, num_hidden_layers=1,
                                                    num_attention_heads=2, intermediate_size=16))
    # BERT's pooler (part of the head) has a `dense` layer too: the encoder's are named by their last two parts
    assert experiments.all_linear_targets(bert) == ["intermediate.dense", "key", "output.dense", "query", "value"]
    head = experiments.freeze_except_head(bert)
    trained = {n.rsplit(".", 2)[0] for n, p in bert.named_parameters() if p.requires_grad}
    assert head == ["pooler", "classifier"] and trained == {"bert.pooler", "classifier"}


def test_experiment_table_columns():
    rows = [{"label": "a", "source": "live", "test_accuracy": 0.5, "validation_accuracy": 0.5, "trainable_params": 0,
             "train_time_s": 0.1, "peak_memory_mb": 10.0, "disk_bytes": 2_000_000}]
    table = experiments.experiment_table(rows)
    assert table.loc["a", "size on disk (MB)"] == 2.0 and table.loc["a", "source"] == "live"
