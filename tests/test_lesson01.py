"""Lesson 01: its literal `load_dataset` path agrees with utils.data.load_imdb, and its table's figures hold.

The lesson loads IMDB with `load_dataset("parquet", ...)` (offline), cleans it with `Dataset.map` and
carves the validation split with scikit-learn; the script and later lessons call `load_imdb(cfg)`.
These tests run the lesson's own cells for both offline sources ("smoke" and a folder of parquet
files) and check that the two give the same reviews, and that the figures of results/lesson01.json
follow from their stated sources.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from transformers import AutoTokenizer, DataCollatorWithPadding
from transformers.trainer_pt_utils import get_length_grouped_indices

from utils.config import PROFILES, resolve_config
from utils.data import SMOKE_CSV, SMOKE_PARQUET, load_imdb
from utils.model import load_tokenizer, resolve_model_path
from utils.results import load_results
from utils.training import tokenize

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "notebooks" / "01_data.ipynb"
LENGTHS = ROOT / "utils" / "assets" / "imdb_token_lengths.json"


def lesson_code(first: str, last: str) -> str:
    """The lesson's code cells from the one containing `first` to the one containing `last`, joined."""
    cells = ["".join(c["source"]) for c in json.loads(LESSON.read_text())["cells"] if c["cell_type"] == "code"]
    start = next(i for i, c in enumerate(cells) if first in c)
    stop = next(i for i, c in enumerate(cells) if last in c and i >= start)
    return "\n".join(cells[start:stop + 1])


def figure(value) -> tuple[float, float]:
    """A table cell as (number, half its last shown digit): "about 41%" -> (0.41, 0.005), "0.82x" -> (0.82, 0.005)."""
    digits = re.search(r"\d+(?:\.(\d+))?", str(value).replace(",", ""))
    number, half = float(digits.group()), 0.5 * 10 ** -len(digits.group(1) or "")
    return (number / 100, half / 100) if "%" in str(value) else (number, half)


def assert_shown(results: dict, column: str, measured: dict) -> None:
    """Each measured figure, rounded as the table shows it, is the table's figure in `column`."""
    for what, value in measured.items():
        shown = row(results, what)[column]
        number, half = figure(shown)
        assert abs(number - value) <= half + 1e-9, (what, shown, value)


def row(results: dict, what: str) -> dict:
    """The row of results/lesson01.json named `what`."""
    return next(r for r in results["rows"] if r["what"] == what)


def test_smoke_parquet_files_hold_the_shipped_reviews():
    """utils/assets/smoke/*.parquet are smoke_reviews.csv split in two, raw and in order (write_smoke_parquet)."""
    csv = pd.read_csv(SMOKE_CSV)
    for split in ("train", "test"):
        parquet = pd.read_parquet(SMOKE_PARQUET / f"{split}.parquet")
        expected = csv[csv["split"] == split][["text", "label"]].reset_index(drop=True)
        assert list(parquet.columns) == ["text", "label"]
        assert parquet["text"].tolist() == expected["text"].tolist()
        assert parquet["label"].tolist() == expected["label"].tolist()


@pytest.mark.parametrize("source", ["smoke", "folder"])
def test_lesson_cells_give_the_reviews_load_imdb_gives(source, tmp_path, monkeypatch):
    """The lesson's load, clean and split cells, run for "smoke" and for a parquet folder, match load_imdb."""
    data_dir = "smoke"
    if source == "folder":  # a LORA_DATA_DIR or a bundle's imdb/ folder: train.parquet and test.parquet
        for split in ("train", "test"):
            (tmp_path / f"{split}.parquet").write_bytes((SMOKE_PARQUET / f"{split}.parquet").read_bytes())
        data_dir = str(tmp_path)
    cfg = resolve_config("smoke", data_dir=data_dir, train_size=60, eval_size=30)
    monkeypatch.chdir(ROOT)  # the lesson runs in the project's folder (its setup cell goes there)
    cells = {"cfg": cfg}
    exec(lesson_code('load_dataset("parquet"', "validation = train_all.select"), cells)

    data, _ = load_imdb(cfg)
    assert data["validation"].to_dict() == cells["validation"].to_dict()  # same reviews, labels and order
    rest = cells["train_all"].select(cells["rest_rows"])
    assert set(data["train"]["text"]) <= set(rest["text"]) and len(data["train"]) == 60
    assert set(data["test"]["text"]) <= set(cells["cleaned"]["test"]["text"]) and len(data["test"]) == 30
    assert not any("<br" in t.lower() for t in cells["cleaned"]["train"]["text"])


def test_lesson_tokenizing_map_is_utils_tokenize():
    """AutoTokenizer on resolve_model_path + the lesson's map give utils.training.tokenize's ids."""
    cfg = resolve_config("smoke")
    data, _ = load_imdb(cfg)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cfg.model))
    mapped = data.map(lambda b: tokenizer(b["text"], truncation=True, max_length=cfg.max_length),
                      batched=True, remove_columns=["text"])
    helper = tokenize(data, load_tokenizer(cfg.model, cfg.max_length), cfg.max_length)
    for split in data:
        assert mapped[split].to_dict() == helper[split].to_dict()


def test_results_sizes_follow_the_profiles():
    """The table's review counts are the cpu profile's sizes, and the gpu profile's split of IMDB's 25,000 + 25,000."""
    sizes = row(load_results("01"), "reviews: train / validation / test")
    cpu, gpu = PROFILES["cpu"], PROFILES["gpu"]
    assert sizes["cpu"] == f"{cpu['train_size']:,} / {cpu['val_size']:,} / {cpu['eval_size']:,}"
    assert sizes["gpu"] == f"{25_000 - gpu['val_size']:,} / {gpu['val_size']:,} / 25,000"


def test_results_gpu_lengths_follow_the_token_length_asset():
    """The gpu column's length figures are those of utils/assets/imdb_token_lengths.json, rounded as shown."""
    results = load_results("01")
    assert "imdb_token_lengths.json" in results["columns"]["gpu"]["source"]
    asset = json.loads(LENGTHS.read_text())
    lengths = np.repeat(asset["lengths"], asset["counts"])
    assert len(lengths) == 25_000
    measured = {"median training review, tokens": np.median(lengths),
                "reviews truncated at 256 tokens": np.mean(lengths > 256),
                "tokens dropped at 256": 1 - np.minimum(lengths, 256).sum() / lengths.sum(),
                "reviews truncated at 512 tokens": np.mean(lengths > 512)}
    assert_shown(results, "gpu", measured)


@pytest.mark.skipif(not (os.environ.get("IMDB_DATA_DIR") and os.environ.get("LORA_TEST_MODEL")),
                    reason="needs IMDB_DATA_DIR (IMDB train/test parquet) and LORA_TEST_MODEL (a local encoder)")
def test_results_cpu_figures_hold_on_the_real_data():
    """The cpu column, re-measured on the cpu profile's reviews with the stand-in's tokenizer (no training, ~20 s)."""
    results = load_results("01")
    raw = pd.read_parquet(Path(os.environ["IMDB_DATA_DIR"]) / "train.parquet")["text"]
    assert_shown(results, "cpu", {"training reviews with a <br /> tag (whole train split)":
                                  raw.str.lower().str.contains("<br").mean()})

    cfg = resolve_config("cpu", model=os.environ["LORA_TEST_MODEL"], data_dir=os.environ["IMDB_DATA_DIR"])
    data, _ = load_imdb(cfg)
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(cfg.model))
    lengths = np.array([len(ids) for ids in tokenizer(list(data["train"]["text"]), verbose=False)["input_ids"]])
    measured = {"median training review, tokens": np.median(lengths),
                "reviews truncated at 256 tokens": np.mean(lengths > 256),
                "tokens dropped at 256": 1 - np.minimum(lengths, 256).sum() / lengths.sum(),
                "reviews truncated at 512 tokens": np.mean(lengths > 512)}

    features = tokenize(data, tokenizer, cfg.max_length)["train"].remove_columns("label").to_list()
    generator = torch.Generator().manual_seed(cfg.seed)
    random_order = torch.randperm(len(features), generator=generator).tolist()
    grouped = get_length_grouped_indices([len(f["input_ids"]) for f in features], cfg.batch_size, generator=generator)
    computed = {}
    for name, padding, order in [("pad to max length", "max_length", random_order),
                                 ("dynamic padding", True, random_order), ("dynamic + length-grouped", True, grouped)]:
        collator = DataCollatorWithPadding(tokenizer, padding=padding, max_length=cfg.max_length)
        masks = [collator([features[i] for i in order[s:s + cfg.batch_size]])["attention_mask"]
                 for s in range(0, len(order), cfg.batch_size)]
        computed[name] = sum(m.numel() for m in masks)
        measured[f"padding share: {name}"] = 1 - sum(int(m.sum()) for m in masks) / computed[name]
    measured["tokens computed, grouped vs pad to max"] = computed["dynamic + length-grouped"] / computed["pad to max length"]

    assert_shown(results, "cpu", measured)
