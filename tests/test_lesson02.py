"""Lesson 02's cells against utils.model, and its "What you should see" table against the counts they give.

The lesson types the library calls (`from_pretrained`, `LoraConfig`, `get_peft_model`); the script and the
later lessons call `load_backbone`, `lora_config` and `add_lora`. These tests run the lesson's own cells
(read from the notebook, so an edit there is checked) and require the same model, trained and saved tensors.
"""

import copy
import json
from pathlib import Path

import pytest
import torch
from peft import get_peft_model_state_dict
from transformers import (AutoTokenizer, BertConfig, BertForSequenceClassification, DistilBertConfig,
                          DistilBertForSequenceClassification)

from utils.config import SMOKE_MODEL, resolve_config
from utils.data import LABELS
from utils.model import add_lora, build_smoke_model, load_backbone, lora_config
from utils.results import RESULTS_DIR, load_results

LESSON = Path(__file__).resolve().parent.parent / "notebooks" / "02_lora_theory_and_setup.ipynb"
LOAD, CONFIG, WRAP = "AutoModelForSequenceClassification.from_pretrained(", 'target_modules=["q_lin", "v_lin"]', "get_peft_model(backbone, config)"
DISTILBERT, STAND_IN = "DistilBERT-base (cpu, gpu)", "MiniLM stand-in"  # the columns of results/lesson02.json
# all-MiniLM-L6-v2's shape (its config.json): the stand-in column's counts depend on nothing else
MINILM = dict(vocab_size=30522, hidden_size=384, num_hidden_layers=6, num_attention_heads=12, intermediate_size=1536)


def lesson_cell(marker: str) -> str:
    """The source of the lesson's one code cell that contains `marker`."""
    cells = ["".join(c["source"]) for c in json.loads(LESSON.read_text())["cells"] if c["cell_type"] == "code"]
    found = [c for c in cells if marker in c]
    assert len(found) == 1, f"lesson 02 should have one code cell with {marker!r}, has {len(found)}"
    return found[0]


def run_lesson(namespace: dict, *markers: str) -> dict:
    """Run the lesson's cells named by `markers`, in order, in `namespace` (which they extend); returns it."""
    namespace.setdefault("torch", torch)
    for marker in markers:
        exec(lesson_cell(marker), namespace)  # noqa: S102 - the lesson's own code, as a learner runs it
    return namespace


def trained(model) -> dict:
    """Name -> shape of every parameter that training updates."""
    return {n: tuple(p.shape) for n, p in model.named_parameters() if p.requires_grad}


@pytest.fixture(scope="module")
def bert_folder(tmp_path_factory) -> Path:
    """A tiny BERT-family checkpoint (the stand-in's module names) saved as a local model folder."""
    folder = tmp_path_factory.mktemp("tiny-bert")
    BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                             intermediate_size=64)).save_pretrained(folder)
    AutoTokenizer.from_pretrained(build_smoke_model()).save_pretrained(folder)
    return folder


def test_lesson_loads_the_backbone_as_load_backbone_does():
    lesson = run_lesson({"cfg": resolve_config("smoke")}, LOAD)
    ours, helper = lesson["backbone"], load_backbone(SMOKE_MODEL)
    assert lesson["id2label"] == LABELS and lesson["label2id"] == {v: k for k, v in LABELS.items()}
    for key in ("num_labels", "id2label", "label2id", "model_type"):
        assert getattr(ours.config, key) == getattr(helper.config, key), key
    assert {n: p.dtype for n, p in ours.named_parameters()} == {n: p.dtype for n, p in helper.named_parameters()}
    theirs = helper.state_dict()
    pretrained = [n for n in theirs if not n.startswith(("pre_classifier", "classifier"))]
    assert pretrained and all(torch.equal(ours.state_dict()[n], theirs[n]) for n in pretrained)


@pytest.mark.parametrize("backbone", ["smoke DistilBERT", "local BERT folder"])
def test_lesson_lora_equals_lora_config_and_add_lora(backbone, bert_folder):
    cfg = resolve_config("smoke", model=SMOKE_MODEL if backbone == "smoke DistilBERT" else str(bert_folder))
    lesson = run_lesson({"cfg": cfg}, LOAD, CONFIG, WRAP)
    helper_config = lora_config(load_backbone(cfg.model), cfg)
    for field in ("task_type", "r", "lora_alpha", "lora_dropout"):
        assert getattr(lesson["config"], field) == getattr(helper_config, field), field
    assert set(lesson["config"].target_modules) == set(helper_config.target_modules)
    helper = add_lora(load_backbone(cfg.model), cfg)
    assert trained(lesson["model"]) == trained(helper)
    assert get_peft_model_state_dict(lesson["model"]).keys() == get_peft_model_state_dict(helper).keys()
    if backbone == "local BERT folder":  # the lesson's BERT line: the pooler is trained and saved
        assert any(".pooler." in n for n in trained(lesson["model"]))


def lesson_counts(model) -> dict:
    """The figures lesson 02 prints for `model` (a fresh backbone), formatted as it prints them."""
    loaded = model.num_parameters()
    peft_model = run_lesson({"backbone": model}, CONFIG, WRAP)["model"]
    trainable, total = peft_model.get_nb_trainable_parameters()
    lora = sum(p.numel() for n, p in peft_model.named_parameters() if p.requires_grad and "lora_" in n)
    return {"parameters loaded (before LoRA)": f"{loaded:,}", "trainable params": f"{trainable:,}",
            "all params (print_trainable_parameters)": f"{total:,}", "trainable%": f"{100 * trainable / total:.4f}",
            "LoRA A and B": f"{lora:,}", "head (modules_to_save)": f"{trainable - lora:,}"}


def test_what_you_should_see_holds_the_counts_of_the_lessons_cells():
    rows = load_results("02")["rows"]
    with torch.device("meta"):  # shapes only: the counts do not depend on the weights
        models = {DISTILBERT: DistilBertForSequenceClassification(DistilBertConfig()),
                  STAND_IN: BertForSequenceClassification(BertConfig(**MINILM))}
    for column, model in models.items():
        assert {row["what"]: row[column] for row in rows} == lesson_counts(copy.deepcopy(model)), column
    assert next(row[DISTILBERT] for row in rows if row["what"] == "trainable params") == "739,586"


def test_stand_in_counts_agree_with_the_measured_runs():
    measured = RESULTS_DIR / "experiments-cpu.json"
    if not measured.is_file():
        pytest.skip("results/experiments-cpu.json is not there")
    runs = json.loads(measured.read_text())["runs"]
    column = {row["what"]: row[STAND_IN] for row in load_results("02")["rows"]}
    assert column["trainable params"] == f"{runs['lora']['trainable_params']:,}"
    assert column["parameters loaded (before LoRA)"] == f"{runs['lora']['model_params']:,}"
    assert column["head (modules_to_save)"] == f"{runs['head_only']['trainable_params']:,}"
