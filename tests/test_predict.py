"""utils.predict: predictions, cleaning, truncation, explanations, merging, and every kind of bad input."""

from __future__ import annotations

import json
import math
import os
import shutil
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch
from datasets import Dataset
from safetensors.torch import load_file, save_file
from transformers import DistilBertConfig, DistilBertModel
from transformers.modeling_outputs import SequenceClassifierOutput

from utils.config import SMOKE_MODEL, SetupError
from utils.model import load_tokenizer
from utils.predict import (SentimentPredictor, load_adapter, measure_latency, merge_adapter,
                           validate_reviews)

SEED_SENTENCES = ["This movie was absolutely fantastic!", "I was really disappointed by this film."]
MEGABYTE = "A truly great movie with wonderful acting and a plot that never drags. " * 14_500


@pytest.fixture(scope="module")
def adapter(smoke_run) -> Path:
    """The adapter folder of the session's smoke run."""
    return smoke_run / "adapter"


@pytest.fixture(scope="module")
def predictor(adapter) -> SentimentPredictor:
    """A predictor on the session's smoke adapter (max_length 64)."""
    return SentimentPredictor.from_pretrained(adapter)


@pytest.fixture
def adapter_copy(adapter, tmp_path) -> Path:
    """A copy of the smoke adapter that a test may break."""
    return Path(shutil.copytree(adapter, tmp_path / "adapter"))


class KeywordModel(torch.nn.Module):
    """A fake classifier whose POSITIVE logit is the sum of fixed per-token weights (0 for other tokens)."""

    def __init__(self, weights: dict[int, float], vocab_size: int):
        super().__init__()
        table = torch.zeros(vocab_size)
        for token_id, weight in weights.items():
            table[token_id] = weight
        self.register_buffer("table", table)

    def forward(self, input_ids, attention_mask, **_):
        """Logits (0, sum of the weights of the tokens present)."""
        positive = (self.table[input_ids] * attention_mask).sum(-1)
        return SequenceClassifierOutput(logits=torch.stack([torch.zeros_like(positive), positive], -1))


@pytest.fixture(scope="module")
def keyword_predictor() -> SentimentPredictor:
    """A predictor whose decision is known: 'great' +3, 'wonderful' +2, 'awful' -3, 'terrible' -2."""
    tokenizer = load_tokenizer(SMOKE_MODEL, 64)
    ids = {w: tokenizer.convert_tokens_to_ids(w) for w in ("great", "wonderful", "awful", "terrible")}
    assert tokenizer.unk_token_id not in ids.values()
    weights = {ids["great"]: 3.0, ids["wonderful"]: 2.0, ids["awful"]: -3.0, ids["terrible"]: -2.0}
    return SentimentPredictor(KeywordModel(weights, len(tokenizer)), tokenizer)


# --- predictions -------------------------------------------------------------------------------

def test_a_string_or_a_list_gives_one_label_and_score_per_review(predictor):
    one = predictor(SEED_SENTENCES[0])
    both = predictor(SEED_SENTENCES)
    assert len(one) == 1 and len(both) == 2 and one[0] == both[0]
    probs = predictor.probabilities(SEED_SENTENCES)
    assert torch.allclose(probs.sum(-1), torch.ones(2), atol=1e-5)
    for result, p in zip(both, probs):
        assert set(result) == {"label", "score"}
        assert result["label"] == ("POSITIVE" if p[1] > p[0] else "NEGATIVE")
        assert result["score"] == pytest.approx(float(p.max()), abs=1e-4) and result["score"] >= 0.5


def test_batches_of_any_size_give_the_same_results_in_input_order(adapter):
    texts = ["ok", *SEED_SENTENCES, "a long and winding review " * 5, "bad", "great great great", "meh film"]
    small = SentimentPredictor.from_pretrained(adapter, batch_size=2).probabilities(texts)
    large = SentimentPredictor.from_pretrained(adapter, batch_size=32).probabilities(texts)
    alone = torch.cat([SentimentPredictor.from_pretrained(adapter).probabilities(t) for t in texts])
    assert torch.allclose(small, large, atol=1e-5) and torch.allclose(large, alone, atol=1e-5)


def test_br_tags_and_whitespace_are_cleaned_as_in_training(predictor):
    noisy = predictor.probabilities("  Great film.<br /><br />Loved   the\n\tcast!<BR>")
    assert torch.allclose(noisy, predictor.probabilities("Great film. Loved the cast!"), atol=1e-6)


def test_pandas_series_datasets_columns_and_tuples_are_accepted(predictor):
    column = Dataset.from_dict({"text": SEED_SENTENCES})["text"]
    expected = predictor(SEED_SENTENCES)
    assert predictor(pd.Series(SEED_SENTENCES)) == predictor(tuple(SEED_SENTENCES)) == predictor(column) == expected


def test_reviews_over_max_length_are_cut_and_flagged_only_when_cut(predictor):
    assert predictor.max_length == 64
    exact, over = "good " * 62, "good " * 63  # [CLS] + 62 tokens + [SEP] = 64: nothing is cut
    results = predictor([exact, over, "short review"])
    assert "truncated" not in results[0] and "truncated" not in results[2]
    assert results[1]["truncated"] is True
    long = "the plot was thin but the actors were fine " * 20
    # only the first 64 tokens count: anything after them changes nothing
    assert torch.allclose(predictor.probabilities(long), predictor.probabilities(long + " awful terrible"))


def test_a_megabyte_review_is_cut_fast(predictor):
    assert len(MEGABYTE) > 1_000_000
    start = time.perf_counter()
    (result,) = predictor(MEGABYTE)
    assert time.perf_counter() - start < 3, "a 1 MB review must not be tokenized whole"
    assert result["truncated"] is True
    assert torch.allclose(predictor.probabilities(MEGABYTE), predictor.probabilities(MEGABYTE[:2000]), atol=1e-6)


def test_non_english_text_and_emoji_are_accepted(predictor):
    texts = ["Ce film était magnifique, je l'ai adoré !", "这部电影太棒了", "Фильм ужасный", "😍😍😍", "great 👍"]
    results = predictor(texts)
    probs = predictor.probabilities(texts)  # the same model outputs, as numbers: the labels and scores follow them
    assert [r["label"] for r in results] == ["POSITIVE" if p[1] > p[0] else "NEGATIVE" for p in probs.tolist()]
    assert [r["score"] for r in results] == [round(max(p), 4) for p in probs.tolist()]
    words = [w for w, _ in predictor.explain("great 👍 film")]
    assert words == ["great", "👍", "film"]


def test_the_smoke_adapter_labels_the_smoke_test_reviews(predictor):
    """The trained smoke adapter gets the shipped test reviews right (a broken recipe lands near 0.5)."""
    from utils.data import load_smoke_reviews

    test = load_smoke_reviews()["test"]
    labels = [r["label"] for r in predictor(list(test["text"]))]
    accuracy = sum(label == ("POSITIVE" if y else "NEGATIVE") for label, y in zip(labels, test["label"])) / len(labels)
    assert accuracy >= 0.9, accuracy
    assert predictor(test["text"][0])[0]["label"] == ("POSITIVE" if test["label"][0] else "NEGATIVE")


# --- bad input ---------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, error, match", [
    (None, TypeError, "None"),
    (42, TypeError, "int"),
    (3.5, TypeError, "float"),
    (b"great film", TypeError, "bytes"),
    ({"text": "great"}, TypeError, "dict"),
    ({"great film", "awful film"}, TypeError, "set"),
    (["a fine film", 7], TypeError, "Review 1 is of type int"),
    (["a fine film", None], TypeError, "Review 1 is of type NoneType"),
    ([], ValueError, "empty"),
    ("", ValueError, "empty"),
    ("   \n\t  ", ValueError, "empty"),
    ("<br /><br />", ValueError, "empty"),
    ("\u200b\u200d\ufeff", ValueError, "empty"),  # zero-width characters only
    ("\x00\x07\x1b \u2028", ValueError, "empty"),  # control characters and separators only
    (["fine", "  "], ValueError, "Review 1 is empty"),
])
def test_bad_input_gets_a_clear_one_line_error(predictor, bad, error, match):
    for call in (predictor, predictor.probabilities, predictor.explain, validate_reviews):
        if call == predictor.explain and isinstance(bad, list):
            continue
        with pytest.raises(error, match=match) as info:
            call(bad)
        assert "\n" not in str(info.value)


def test_explain_takes_one_review(predictor):
    with pytest.raises(TypeError, match="one review"):
        predictor.explain(SEED_SENTENCES)


# --- explanations ------------------------------------------------------------------------------

def test_explain_signs_follow_the_words_that_push_the_decision(keyword_predictor):
    weights = dict(keyword_predictor.explain("a great film with an awful ending"))
    assert weights["great"] > 0.3 and weights["awful"] < -0.3
    for neutral in ("a", "film", "with", "an", "ending"):
        assert weights[neutral] == pytest.approx(0, abs=1e-4)
    # P(POSITIVE) is sigmoid(sum of weights): removing 'great' (3) from 3 - 3 = 0 leaves sigmoid(-3)
    assert weights["great"] == pytest.approx(0.5 - 1 / (1 + math.exp(3)), abs=1e-3)
    (word, weight), = keyword_predictor.explain("terrible")
    assert word == "terrible" and weight == pytest.approx(1 / (1 + math.exp(2)) - 0.5, abs=1e-3)


def test_explain_weights_are_the_probability_change_without_each_word(predictor):
    text = "The acting was wonderful but the story felt slow and the ending was awful"
    words = text.split()
    explained = predictor.explain(text)
    assert [w for w, _ in explained] == words
    full = float(predictor.probabilities(text)[0, 1])
    without = predictor.probabilities([" ".join(words[:i] + words[i + 1:]) for i in range(len(words))])[:, 1]
    for (_, weight), p in zip(explained, without.tolist()):
        assert weight == pytest.approx(full - p, abs=1e-3)
    assert any(abs(w) > 1e-4 for _, w in explained), "a trained model reacts to some word"


def test_explain_caps_the_words_it_occludes_and_says_so(predictor):
    text = " ".join(f"word{i}" for i in range(30))
    with pytest.warns(UserWarning, match="first 10 words"):
        assert len(predictor.explain(text, max_words=10)) == 10
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(predictor.explain("short and sweet")) == 3  # no warning when every word is explained


def test_explain_on_a_megabyte_review_is_bounded(predictor):
    start = time.perf_counter()
    with pytest.warns(UserWarning, match="first 64 tokens"):
        explained = predictor.explain(MEGABYTE)
    assert time.perf_counter() - start < 20
    assert 10 < len(explained) <= 64 and explained[0][0] == "A"


# --- loading adapters, and broken ones ---------------------------------------------------------

def test_loading_an_adapter_prints_no_missing_head_report(adapter, capfd):
    SentimentPredictor.from_pretrained(adapter)
    out, err = capfd.readouterr()
    assert "LOAD REPORT" not in out + err and "MISSING" not in out + err


def test_a_missing_adapter_folder_says_how_to_get_one(tmp_path):
    with pytest.raises(SetupError, match="No adapter folder .* train one first"):
        SentimentPredictor.from_pretrained(tmp_path / "nowhere")


def test_a_folder_without_model_or_adapter_is_refused(tmp_path):
    with pytest.raises(SetupError, match="neither an adapter"):
        load_adapter(tmp_path)


def test_an_adapter_config_without_weights_is_refused(adapter_copy):
    (adapter_copy / "adapter_model.safetensors").unlink()
    with pytest.raises(SetupError, match="no adapter weights"):
        load_adapter(adapter_copy)


def test_adapter_weights_without_config_are_refused(adapter_copy):
    (adapter_copy / "adapter_config.json").unlink()
    with pytest.raises(SetupError, match="no adapter_config.json"):
        load_adapter(adapter_copy)


def test_damaged_adapter_weights_are_refused(adapter_copy):
    (adapter_copy / "adapter_model.safetensors").write_bytes(b"\x00not a safetensors file")
    with pytest.raises(SetupError, match="cannot be read"):
        load_adapter(adapter_copy)


def test_an_adapter_without_its_classification_head_is_refused(adapter_copy):
    weights_file = adapter_copy / "adapter_model.safetensors"
    weights = load_file(weights_file)
    lora_only = {k: v for k, v in weights.items() if "lora_" in k}
    assert len(lora_only) < len(weights)  # the saved adapter did carry the head
    save_file(lora_only, weights_file)
    config = json.loads((adapter_copy / "adapter_config.json").read_text())
    config["modules_to_save"] = None
    (adapter_copy / "adapter_config.json").write_text(json.dumps(config))
    with pytest.raises(SetupError, match="no classification head"):
        load_adapter(adapter_copy)


def _rebase(adapter_dir: Path, base: str) -> None:
    """Point an adapter at another base model."""
    config = json.loads((adapter_dir / "adapter_config.json").read_text())
    config["base_model_name_or_path"] = base
    (adapter_dir / "adapter_config.json").write_text(json.dumps(config))


def test_an_adapter_for_a_smaller_model_of_the_same_kind_is_refused(adapter_copy, tmp_path):
    other = tmp_path / "other-distilbert"
    config = DistilBertConfig(vocab_size=1000, dim=64, n_layers=2, n_heads=4, hidden_dim=128)
    DistilBertModel(config).save_pretrained(other)
    _rebase(adapter_copy, str(other))
    with pytest.raises(SetupError, match="does not fit the base model"):
        load_adapter(adapter_copy)


def test_an_adapter_for_another_architecture_is_refused(adapter_copy):
    model = os.environ.get("LORA_TEST_MODEL")
    if not model or not Path(model).is_dir():
        pytest.skip("LORA_TEST_MODEL (a local BERT-family checkpoint) is not set")
    _rebase(adapter_copy, model)
    with pytest.raises(SetupError, match="does not fit the base model"):
        load_adapter(adapter_copy)


def test_an_adapter_whose_base_model_is_gone_names_it(adapter_copy, tmp_path):
    _rebase(adapter_copy, str(tmp_path / "deleted-model"))
    with pytest.raises(SetupError, match="needs its base model .*deleted-model"):
        load_adapter(adapter_copy)


# --- merging and latency -----------------------------------------------------------------------

def test_a_merged_model_loads_without_peft_and_predicts_the_same(adapter, predictor, tmp_path):
    merged = merge_adapter(adapter, tmp_path / "merged")
    assert (merged / "config.json").is_file() and not (merged / "adapter_config.json").exists()
    again = SentimentPredictor.from_pretrained(merged)
    assert type(again.model).__name__ == "DistilBertForSequenceClassification"
    assert again.max_length == predictor.max_length
    texts = [*SEED_SENTENCES, MEGABYTE]
    assert torch.allclose(again.probabilities(texts), predictor.probabilities(texts), atol=1e-5)
    with pytest.raises(SetupError, match="merged model already"):
        merge_adapter(merged, tmp_path / "twice")


def test_merging_into_the_adapter_folder_is_refused(adapter_copy):
    with pytest.raises(ValueError, match="adapter folder"):
        merge_adapter(adapter_copy, adapter_copy)


def test_measure_latency_reports_the_median_of_the_timed_runs():
    class Sleepy:
        """A stand-in predictor: 1 ms per call, one slow call of 200 ms among the timed ones."""

        device = torch.device("cpu")

        def __init__(self):
            self.calls = 0

        def __call__(self, text):
            self.calls += 1
            time.sleep(0.2 if self.calls == 4 else 0.001)

    sleepy = Sleepy()
    median = measure_latency(sleepy, "text", repeats=5, warmup=2)
    assert sleepy.calls == 7 and 0.9 <= median < 100
