"""Several processes: the headless script under `torchrun` (what `accelerate launch --multi_gpu` runs), on 2 CPUs.

On a CPU the Trainer joins the processes through the gloo backend, so this checks the same
distributed code path as a multi-GPU machine: each process trains on its share of the batches,
and only the first one writes the adapter and metrics.json and prints the results.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_torchrun_two_cpu_processes(tmp_path):
    """Two processes finish, split the steps between them, and one writes metrics.json and the adapter."""
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
           "fine_tune_sentiment.py", "--profile", "smoke", "--epochs", "1", "--train-size", "64",
           "--eval-size", "32", "--output-dir", str(out)]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false"}
    run = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    log = run.stdout + run.stderr
    assert run.returncode == 0, log[-3000:]

    assert log.count("Data: ") == 2, "both processes should load the data"
    assert run.stdout.count("Final evaluation results") == 1, "only the first process reports"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["train_size"] == 64 and metrics["eval_size"] == 32
    # 64 reviews in batches of 16 per process, 2 processes: 2 optimizer steps (one process would take 4).
    assert max(h["step"] for h in metrics["log_history"]) == 2
    assert (out / "adapter" / "adapter_config.json").is_file()
    assert (out / "adapter" / "adapter_model.safetensors").is_file()
    # The adapter the first process saved is the model that was tested: it scores the same 32 reviews alike.
    from utils.config import resolve_config
    from utils.data import load_imdb
    from utils.predict import SentimentPredictor

    test = load_imdb(resolve_config("smoke", train_size=64, eval_size=32))[0]["test"]
    predicted = [r["label"] for r in SentimentPredictor.from_pretrained(out / "adapter")(list(test["text"]))]
    accuracy = sum(p == ("POSITIVE" if y else "NEGATIVE") for p, y in zip(predicted, test["label"])) / len(predicted)
    assert accuracy == pytest.approx(metrics["test_accuracy"], abs=1 / 32 + 1e-9)  # one review near 0.5 may flip
