"""Lesson 06: its literal library calls agree with the utils helpers the script uses, and its table holds.

The lesson writes the chat template call, both `LoraConfig`s, both `TrainingArguments` and QLoRA's
`BitsAndBytesConfig` in the open; `utils.llm` and `utils.training` keep the same code for the script
(`run_training`, `python -m utils.llm measure`). These tests take each call from the lesson's own cells,
evaluate it, and compare it with the helper; they also check the lesson's claims about the Trainer's
autocast (section 8) and the figures of results/lesson06.json against their source.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest
import torch
from peft import LoraConfig, TaskType
from transformers import AutoTokenizer, BitsAndBytesConfig, TrainingArguments

from utils import llm
from utils.config import resolve_config
from utils.model import load_backbone, lora_config, resolve_model_path
from utils.results import load_results
from utils.training import precision_flags, train_device, training_arguments

ROOT = Path(__file__).resolve().parent.parent
LESSON = ROOT / "notebooks" / "06_lora_on_a_small_llm.ipynb"


def lesson_cells(kind: str = "code") -> list[str]:
    """The lesson's cells of one kind, as text."""
    return ["".join(c["source"]) for c in json.loads(LESSON.read_text())["cells"] if c["cell_type"] == kind]


def lesson_call(start: str, contains: str = "") -> str:
    """The first call in the lesson's code starting with `start` (and holding `contains`), to its last parenthesis."""
    code = "\n".join(lesson_cells())
    for match in re.finditer(re.escape(start), code):
        depth, i = 0, match.start() + start.index("(")  # from the call's opening parenthesis
        for i in range(i, len(code)):
            depth += {"(": 1, ")": -1}.get(code[i], 0)
            if depth == 0:
                break
        call = code[match.start():i + 1]
        if contains in call:
            return call
    raise AssertionError(f"no call {start!r} holding {contains!r} in the lesson")


@pytest.fixture()
def llm_cfg():
    """The lesson's decoder configuration on the smoke profile."""
    return llm.decoder_run_config(resolve_config("smoke"))


def test_lesson_chat_template_call_is_what_chat_prompt_builds(llm_cfg):
    tokenizer = AutoTokenizer.from_pretrained(resolve_model_path(llm_cfg.model))
    review = re.search(r'review = "(.*)"', "\n".join(lesson_cells())).group(1)
    messages = eval(re.search(r"messages = (\[.*\])", "\n".join(lesson_cells())).group(1),
                    {"QUESTION": llm.QUESTION, "review": review})
    prompt = eval(lesson_call("tokenizer.apply_chat_template("), {"tokenizer": tokenizer, "messages": messages})
    assert prompt == llm.chat_prompt(tokenizer, review, llm_cfg.max_length)
    assert prompt.endswith("<|im_start|>assistant\n") and review in prompt


def test_lesson_lora_configs_are_the_project_helpers(llm_cfg):
    names = {"LoraConfig": LoraConfig, "TaskType": TaskType}
    seq = eval(lesson_call("LoraConfig(task_type=TaskType.SEQ_CLS", "lora_dropout"), names)
    gen = eval(lesson_call("LoraConfig(task_type=TaskType.CAUSAL_LM"), names)
    model = load_backbone(llm_cfg.model)
    for ours, helper in ((seq, lora_config(model, llm_cfg)), (gen, llm.causal_lora_config(model, llm_cfg))):
        for field in ("task_type", "r", "lora_alpha", "lora_dropout", "target_modules", "modules_to_save"):
            assert getattr(ours, field) == getattr(helper, field), field


SEQ_KEYS = ("num_train_epochs", "learning_rate", "per_device_train_batch_size", "per_device_eval_batch_size",
            "weight_decay", "warmup_steps", "lr_scheduler_type", "eval_strategy", "save_strategy", "save_total_limit",
            "load_best_model_at_end", "metric_for_best_model", "train_sampling_strategy", "seed", "report_to",
            "use_cpu", "bf16", "fp16")
GEN_KEYS = ("num_train_epochs", "learning_rate", "per_device_train_batch_size", "weight_decay", "warmup_steps",
            "lr_scheduler_type", "eval_strategy", "save_strategy", "train_sampling_strategy", "seed", "report_to",
            "use_cpu", "bf16", "fp16")


@pytest.mark.parametrize("profile", ["smoke", "cpu"])
def test_lesson_training_arguments_are_the_helpers(profile, tmp_path):
    """The lesson's two TrainingArguments are the recipe of run_training and of utils.llm's generative runs."""
    cfg = resolve_config(profile, output_dir=str(tmp_path / "run"))
    llm_cfg = llm.decoder_run_config(cfg)
    names = {"TrainingArguments": TrainingArguments, "llm_cfg": llm_cfg, "cfg": cfg,
             "device": train_device(cfg.use_cpu), "precision_flags": precision_flags}
    seq = eval(lesson_call("TrainingArguments(", "load_best_model_at_end"), names).to_dict()
    gen = eval(lesson_call("TrainingArguments(", 'save_strategy="no"'), names).to_dict()
    helper_seq = training_arguments(llm_cfg).to_dict()
    gen_cfg = dataclasses.replace(llm_cfg, output_dir=f"{llm_cfg.output_dir}-gen")
    helper_gen = llm.generative_arguments(gen_cfg).to_dict()
    assert {k: seq[k] for k in SEQ_KEYS} == {k: helper_seq[k] for k in SEQ_KEYS}
    assert {k: gen[k] for k in GEN_KEYS} == {k: helper_gen[k] for k in GEN_KEYS}
    assert seq["output_dir"] == helper_seq["output_dir"] and gen["output_dir"] == helper_gen["output_dir"]


GPUS = [((7, 5), torch.float16), ((8, 0), torch.bfloat16), ((9, 0), torch.bfloat16)]  # T4, A100, H100


@pytest.mark.parametrize("capability, dtype", GPUS)
def test_lesson_four_bit_config_computes_in_the_gpus_16_bit_type(capability, dtype, monkeypatch):
    """A T4 (7.5) gets fp16 although torch.cuda.is_bf16_supported() says True there; Ampere and newer get bf16."""
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a: capability)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # what a T4 reports (emulation)
    ours = eval(lesson_call("BitsAndBytesConfig("), {"BitsAndBytesConfig": BitsAndBytesConfig, "torch": torch,
                                                      "precision_flags": precision_flags})
    assert ours.bnb_4bit_compute_dtype == dtype
    assert ours.to_dict() == llm.four_bit_config().to_dict()
    assert ours.bnb_4bit_quant_type == "nf4" and ours.bnb_4bit_use_double_quant and ours.load_in_4bit


def test_lesson_qlora_section_has_the_install_line_and_asks_the_helper():
    cell = next(c for c in lesson_cells() if "qlora_blocker()" in c)
    assert 'sys.platform == "linux"' in cell and 'find_spec("bitsandbytes") is None' in cell
    assert '"pip", "install"' in cell and "bitsandbytes" in cell


def test_trainer_leaves_its_autocast_on_the_trained_model(tmp_path):
    """Section 8's reason to merge from the saved adapter: after bf16 training, the model's forward runs in autocast."""
    from peft import get_peft_model
    from transformers import DataCollatorForSeq2Seq, Trainer

    from utils.data import load_imdb

    cfg = dataclasses.replace(llm.decoder_run_config(resolve_config("smoke")), output_dir=str(tmp_path), epochs=1)
    data, _ = load_imdb(cfg)
    lm, tokenizer = llm.load_causal_lm(cfg.model)
    model = get_peft_model(lm, llm.causal_lora_config(lm, cfg))
    args = dataclasses.replace(llm.generative_arguments(cfg), bf16=True, fp16=False, use_cpu=True, max_steps=1)
    Trainer(model=model, args=args, train_dataset=llm.generative_examples(data["train"], tokenizer, cfg.max_length),
            data_collator=DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=llm.IGNORE_INDEX)).train()
    batch = tokenizer(["A great film, I loved every minute of it."], return_tensors="pt")
    with torch.no_grad():
        wrapped = model.eval()(**batch).logits  # the PeftModel, as the Trainer left it
        plain = model.base_model.model(**batch).logits  # the same weights, LoRA layers included, without the wrapper
    assert hasattr(model, "_original_forward")  # accelerate's autocast wrapper is still on
    assert wrapped.dtype == plain.dtype == torch.float32  # the wrapper converts its outputs back to float32 ...
    assert not torch.equal(wrapped, plain)  # ... after computing in bf16
    torch.testing.assert_close(wrapped, plain, rtol=0.05, atol=0.05)


def test_results_cpu_bf16_column_is_results_llm_cpu_json():
    """The table's `cpu bf16` figures are those `python -m utils.llm measure` wrote, rounded as shown."""
    table = {r["what"]: r for r in load_results("06")["rows"]}
    rows = json.loads((ROOT / "results" / "llm-cpu.json").read_text())["rows"]
    zero, seq, gen = (rows[k] for k in ("zero-shot (chat prompt, label-word logits)", "LoRA SEQ_CLS (score head)",
                                        "LoRA CAUSAL_LM (generative)"))
    encoder = next(v for k, v in rows.items() if k.startswith("encoder LoRA"))
    number = lambda what: float(str(table[what]["cpu bf16"]).split()[0].replace(",", ""))
    assert number("zero-shot: test accuracy (200 reviews)") == zero["test_accuracy"]
    assert number("zero-shot: share answered positive") == zero["positive_share"]
    assert number("zero-shot: time to score the test reviews") == round(zero["predict_runtime_s"])
    for name, run in (("LoRA SEQ_CLS", seq), ("LoRA CAUSAL_LM", gen), ("encoder LoRA", encoder)):
        label = "encoder LoRA on the same reviews" if run is encoder else name
        assert number(f"{label}: test accuracy (200 reviews)") == run["test_accuracy"]
        assert number(f"{name}: trainable parameters") == run["trainable_params"]
        assert number(f"{name}: training time") == round(run["train_runtime_s"])
    assert number("adapter folder, each way (with the tokenizer)") == seq["adapter_mb"] == gen["adapter_mb"]
    assert all(r["eval_size"] == 200 and r.get("train_size", 1200) == 1200 for r in (zero, seq, gen, encoder))


def test_lesson_prose_repeats_no_figure_of_its_table():
    """Numbers appear once, in the "What you should see" table: no measured figure in the lesson's text."""
    prose = "\n".join(lesson_cells("markdown"))
    values = [str(r[c]) for r in load_results("06")["rows"] for c in ("cpu", "cpu bf16") if c in r]
    figures = {n for v in values for n in re.findall(r"\d[\d,]*(?:\.\d+)?", v) if "." in n or len(n) >= 3}
    repeated = [f for f in figures if re.search(rf"(?<![\d.,]){re.escape(f)}(?![\d])", prose)]
    assert figures and not repeated, repeated
