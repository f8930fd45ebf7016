"""utils.model: the offline smoke backbone, LoRA targets per architecture, exact trainable counts, bad names.

(tests/test_lesson02.py checks that load_backbone, lora_config and add_lora equal lesson 02's cells.)
"""

import json

import pytest
import torch
from peft import LoraConfig, TaskType, get_peft_model, get_peft_model_state_dict
from transformers import AutoTokenizer, BertConfig, BertForSequenceClassification, GPT2Config, GPT2ForSequenceClassification

from utils import config
from utils.config import PROFILES, SMOKE_MODEL, SetupError, resolve_config
from utils.data import load_smoke_reviews
from utils.model import (HEAD_MODULES, add_lora, base_model_reference, build_smoke_model, count_parameters, default_targets,
                         load_backbone, load_tokenizer, lora_config, resolve_model_path)


def tiny_bert() -> BertForSequenceClassification:
    """A small random BERT-family classifier (the same module names as the MiniLM encoder)."""
    return BertForSequenceClassification(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                    num_attention_heads=2, intermediate_size=64, num_labels=2))


def test_smoke_model_is_rebuilt_identically(tmp_path):
    a, b = build_smoke_model(tmp_path / "a"), build_smoke_model(tmp_path / "b")
    assert (a / "tokenizer.json").read_text() == (b / "tokenizer.json").read_text()
    assert (a / "model.safetensors").read_bytes() == (b / "model.safetensors").read_bytes()


def test_smoke_tokenizer_knows_every_review_word():
    tokenizer = load_tokenizer(SMOKE_MODEL, max_length=64)
    ids = tokenizer(load_smoke_reviews()["test"]["text"][:20])["input_ids"]
    assert tokenizer.unk_token_id not in {i for row in ids for i in row}
    assert tokenizer.model_max_length == 64


def test_backbone_has_named_labels():
    model = load_backbone(SMOKE_MODEL)
    assert model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    assert next(model.parameters()).dtype == torch.float32


def test_default_targets_follow_the_architecture():
    assert default_targets(load_backbone(SMOKE_MODEL)) == ["q_lin", "v_lin"]
    assert default_targets(tiny_bert()) == ["query", "value"]
    gpt2 = GPT2ForSequenceClassification(GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=50))
    with pytest.raises(SetupError, match="--target-modules"):
        default_targets(gpt2)


def test_lora_trains_exactly_the_adapters_and_the_head():
    model = tiny_bert()
    head = sum(p.numel() for n, p in model.named_parameters() if n.split(".")[0] in ("classifier",)
               or n.startswith("bert.pooler"))
    cfg = resolve_config("cpu", lora_r=4, target_modules=None)
    peft_model = add_lora(model, cfg)
    # each adapted Linear(in, out) gains A (r x in) and B (out x r); 2 layers x (query, value), 32 -> 32
    expected = 2 * 2 * 4 * (32 + 32) + head
    trainable, total = count_parameters(peft_model)
    assert trainable == expected
    assert total > trainable
    assert set(peft_model.peft_config["default"].modules_to_save) >= set(HEAD_MODULES["bert"])


def test_every_profile_has_the_lessons_lora_settings(monkeypatch):
    for name in ("LORA_LORA_R", "LORA_LORA_ALPHA", "LORA_LORA_DROPOUT", "LORA_TARGET_MODULES", "LORA_MODEL", "LORA_BUNDLE"):
        monkeypatch.delenv(name, raising=False)
    backbone = load_backbone(SMOKE_MODEL)  # a DistilBERT, as the cpu and gpu profiles' model
    for profile in PROFILES:  # lesson 02: LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1, ...)
        config = lora_config(backbone, resolve_config(profile))
        assert (config.task_type, config.r, config.lora_alpha, config.lora_dropout, set(config.target_modules)) == (
            TaskType.SEQ_CLS, 8, 16, 0.1, {"q_lin", "v_lin"}), profile


def test_peft_trains_and_saves_a_seq_cls_head_it_was_not_told_about():
    # Lesson 02 teaches this peft behaviour: for SEQ_CLS it appends `classifier` and `score` to modules_to_save
    # and matches by the end of the name, so DistilBERT's whole head is trained and saved; a BERT's pooler is not.
    config = LoraConfig(task_type=TaskType.SEQ_CLS, r=8, lora_alpha=16, lora_dropout=0.1, target_modules=["q_lin", "v_lin"])
    model = get_peft_model(load_backbone(SMOKE_MODEL), config)
    saved = {k.removeprefix("base_model.model.").rsplit(".", 1)[0] for k in get_peft_model_state_dict(model) if "lora_" not in k}
    assert saved == {"pre_classifier", "classifier"}
    bert = get_peft_model(tiny_bert(), LoraConfig(task_type=TaskType.SEQ_CLS, r=8, target_modules=["query", "value"]))
    trained = [n for n, p in bert.named_parameters() if p.requires_grad]
    assert any(".classifier." in n for n in trained) and not any(".pooler." in n for n in trained)


def test_unknown_target_module_is_explained():
    with pytest.raises(SetupError, match="query"):
        add_lora(tiny_bert(), resolve_config("cpu", target_modules=["q_proj"]))


def test_adapter_remembers_its_base_model_portably(smoke_run, tmp_path):
    saved = json.loads((smoke_run / "adapter" / "adapter_config.json").read_text())
    assert saved["base_model_name_or_path"] == SMOKE_MODEL  # rebuilt offline wherever it is loaded
    assert base_model_reference("distilbert-base-uncased") == "distilbert-base-uncased"
    assert base_model_reference(str(tmp_path)) == tmp_path.name  # a local folder: its name, never a machine path


def test_model_paths_are_checked(tmp_path, monkeypatch):
    with pytest.raises(SetupError, match="does not exist"):
        resolve_model_path("./no-such-model")
    with pytest.raises(SetupError, match="no config.json"):
        resolve_model_path(str(tmp_path))
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "empty-hf-cache"))  # a cached copy would be used instead
    monkeypatch.setattr(config, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(SetupError, match="--profile smoke"):
        load_backbone("distilbert-base-uncased")


def test_local_checkpoint_folder_loads(tmp_path):
    tiny_bert().save_pretrained(tmp_path)
    AutoTokenizer.from_pretrained(build_smoke_model()).save_pretrained(tmp_path)
    assert resolve_model_path(str(tmp_path)) == str(tmp_path.resolve())
    assert load_backbone(str(tmp_path)).config.model_type == "bert"
