"""Lesson 05's literal library calls against the project's predictor: the helper gives the cell's answers.

The lesson loads the adapter with `PeftModel.from_pretrained`, predicts with `pipeline(...,
truncation=True)`, switches the adapter off with `disable_adapter()` and merges it with
`merge_and_unload()`, then names `SentimentPredictor.from_pretrained(adapter_dir, base_model=...)` as
what the script and the widget use. These tests check, on the session's smoke adapter, that the two
give the same answers and that what the lesson says about each call holds.
"""

from __future__ import annotations

import pytest
import torch
from peft import PeftModel
from transformers import AutoModelForSequenceClassification, AutoTokenizer, pipeline

from utils.config import resolve_config
from utils.data import load_imdb
from utils.model import resolve_model_path
from utils.predict import SentimentPredictor
from utils.results import load_results

REVIEWS = ["This movie was absolutely fantastic!", "I was really disappointed by this film."]
LONG = "what a film! " * 400  # 1,602 tokens: over the 512 position embeddings


def load_like_the_lesson(adapter_dir, model_name: str):
    """The lesson's section 2: the base model with its labels in float32, then the adapter on top; and the tokenizer."""
    base = AutoModelForSequenceClassification.from_pretrained(
        resolve_model_path(model_name), num_labels=2, id2label={0: "NEGATIVE", 1: "POSITIVE"},
        label2id={"NEGATIVE": 0, "POSITIVE": 1}, dtype=torch.float32)
    return PeftModel.from_pretrained(base, adapter_dir).eval(), AutoTokenizer.from_pretrained(adapter_dir)


@pytest.fixture(scope="module")
def lesson(smoke_run):
    """(adapter folder, the lesson's PeftModel, tokenizer, pipeline, predictor, some test reviews and a long one)."""
    cfg = resolve_config("smoke", output_dir=str(smoke_run))
    adapter_dir = smoke_run / "adapter"
    peft_model, tokenizer = load_like_the_lesson(adapter_dir, cfg.model)
    classifier = pipeline("text-classification", model=peft_model, tokenizer=tokenizer, truncation=True)
    predictor = SentimentPredictor.from_pretrained(adapter_dir, base_model=resolve_model_path(cfg.model))
    test = load_imdb(cfg)[0]["test"]
    texts = REVIEWS + test["text"][:6] + [" ".join(test["text"][:20])]  # the smoke reviews are short: join some
    return adapter_dir, peft_model, tokenizer, classifier, predictor, texts


def same_answers(ours: list[dict], theirs: list[dict], tol: float = 1e-4) -> bool:
    """Equal labels and scores within tol (the predictor rounds its scores to 4 decimals)."""
    return all(a["label"] == b["label"] and abs(a["score"] - b["score"]) <= tol for a, b in zip(ours, theirs, strict=True))


def test_the_predictor_gives_the_pipelines_answers_including_a_review_it_cuts(lesson):
    _, _, tokenizer, classifier, predictor, texts = lesson
    assert len(tokenizer(texts[-1])["input_ids"]) > predictor.max_length, "the sample needs a review that is cut"
    assert same_answers(predictor(texts), classifier(texts))


def test_the_pipeline_without_truncation_crashes_on_a_long_review_and_with_it_does_not(lesson):
    _, peft_model, tokenizer, classifier, _, _ = lesson
    with pytest.raises(RuntimeError, match=r"size of tensor a \(1602\) must match the size of tensor b \(512\)"):
        pipeline("text-classification", model=peft_model, tokenizer=tokenizer)(LONG)
    assert classifier(LONG)[0]["label"] in ("POSITIVE", "NEGATIVE")


def test_disable_adapter_gives_the_base_models_near_50_50_answer_and_then_the_adapter_again(lesson):
    _, peft_model, _, classifier, _, _ = lesson
    tuned = classifier(REVIEWS)
    with peft_model.disable_adapter():
        before = classifier(REVIEWS)
    assert all(abs(b["score"] - 0.5) < 0.15 for b in before), before  # an untrained head: nearly equal logits
    assert all(abs(t["score"] - 0.5) > 0.2 for t in tuned), tuned  # the trained smoke adapter is confident
    assert same_answers(classifier(REVIEWS), tuned, tol=1e-6)


def test_merge_and_unload_gives_the_adapters_logits_and_a_folder_a_pipeline_loads(smoke_run, tmp_path):
    cfg = resolve_config("smoke", output_dir=str(smoke_run))
    peft_model, tokenizer = load_like_the_lesson(smoke_run / "adapter", cfg.model)  # a copy of its own: merging is in place
    batch = tokenizer(REVIEWS, padding=True, return_tensors="pt")
    with torch.no_grad():
        adapter_logits = peft_model(**batch).logits
        merged = peft_model.merge_and_unload()
        merged_logits = merged(**batch).logits
    assert not isinstance(merged, PeftModel) and not any("lora_" in n for n, _ in merged.named_parameters())
    assert torch.allclose(merged_logits, adapter_logits, atol=1e-4)
    merged.save_pretrained(tmp_path / "merged")
    tokenizer.save_pretrained(tmp_path / "merged")
    exported = pipeline("text-classification", model=str(tmp_path / "merged"), truncation=True)
    assert same_answers(exported(REVIEWS), SentimentPredictor.from_pretrained(smoke_run / "adapter")(REVIEWS))


def test_the_results_table_gives_a_measured_cpu_figure_in_every_row():
    results = load_results("05")
    assert results["lesson"] == "05" and set(results["columns"]) == {"cpu", "gpu"}
    assert "not measured with this code" in results["columns"]["gpu"]["source"]
    assert all(row.get("cpu") not in (None, "", "-") for row in results["rows"])
