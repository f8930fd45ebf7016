"""The recipe on real data: LoRA on a real pretrained encoder must learn IMDB sentiment on a CPU.

Needs IMDB_DATA_DIR (train/test parquet, csv or aclImdb) and LORA_TEST_MODEL (a local BERT-family or
DistilBERT checkpoint). CI sets them to ../shared/datasets/imdb and ../shared/models/all-MiniLM-L6-v2-bf16.
"""

import os

import pytest

from utils.config import resolve_config
from utils.training import run_training

DATA, MODEL = os.environ.get("IMDB_DATA_DIR"), os.environ.get("LORA_TEST_MODEL")
# Measured with MiniLM on 2 CPU cores at these settings by an earlier version, before the validation split
# (500 more reviews, carved from the rest of the training split, now choose the epoch; the 2,000 trained
# are a different seeded sample): the recipe 0.799; the backbone frozen with only the head and pooler
# trained ("frozen adapters") 0.671; wrong labels or an untrained head stay near 0.5.
FLOOR = 0.75


@pytest.mark.skipif(not (DATA and MODEL), reason="set IMDB_DATA_DIR and LORA_TEST_MODEL to run the real-data test")
def test_lora_learns_imdb_on_cpu(tmp_path):
    cfg = resolve_config("cpu", model=MODEL, data_dir=DATA, train_size=2000, eval_size=1000, max_length=128,
                         epochs=1, output_dir=str(tmp_path))
    metrics = run_training(cfg)
    print({k: metrics[k] for k in ("test_accuracy", "test_f1", "validation", "train_runtime_s")})
    assert (metrics["train_size"], metrics["val_size"], metrics["eval_size"]) == (2000, 500, 1000)
    assert metrics["test_accuracy"] >= FLOOR
