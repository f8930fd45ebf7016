"""Tokenizing, the Trainer setup, and the whole training run that the script and lessons share."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path

import torch
from datasets import DatasetDict
from transformers import DataCollatorWithPadding, Trainer, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .config import RunConfig, SetupError
from .data import load_imdb
from .metrics import compute_metrics
from .model import add_lora, base_model_reference, count_parameters, load_backbone, load_tokenizer


EVAL_KEYS = ("eval_loss", "eval_accuracy", "eval_f1", "eval_precision", "eval_recall")
PAD_TO_MULTIPLE_OF = 8  # on a GPU, batches are padded to a multiple of this (tensor cores)


def tokenize(data: DatasetDict, tokenizer, max_length: int) -> DatasetDict:
    """Turn `text` into token ids, truncated to `max_length` and not padded (the collator pads each batch)."""
    return data.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
                    batched=True, remove_columns=["text"])


def precision_flags() -> dict[str, bool]:
    """Mixed precision for this machine: bf16 on GPUs that have it, else fp16 on a GPU, else fp32.

    bf16 needs an Ampere or newer GPU (A100, H100, RTX 30xx...); older ones such as Colab's T4 only
    emulate it, slowly, so they get fp16 (with loss scaling, which the Trainer adds).
    """
    if not torch.cuda.is_available():
        return {"bf16": False, "fp16": False}
    bf16 = torch.cuda.get_device_capability()[0] >= 8  # Ampere or newer: bf16 in hardware
    return {"bf16": bf16, "fp16": not bf16}


def tune_gpu() -> None:
    """GPU settings that the recipe relies on (no-ops on a CPU).

    cuDNN's attention builds a new plan for every sequence length it meets; with dynamic padding
    that is hundreds of plans in the first epoch (on an H200: 615 samples/s instead of 2,388), so
    PyTorch's other fused attention kernels (flash, memory-efficient) are used instead.
    TF32 speeds up whatever still runs in float32.
    """
    if torch.cuda.is_available():
        torch.backends.cuda.enable_cudnn_sdp(False)
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def training_arguments(cfg: RunConfig) -> TrainingArguments:
    """The Trainer settings of the recipe: evaluate and save each epoch, keep the best, group by length.

    On a GPU: mixed precision (`precision_flags`), the profile's large batch (gpu: 64, with a learning
    rate scaled to it), a smaller batch tried automatically on out-of-memory, and dataloader workers
    that pad the next batches while the GPU computes.
    """
    cuda = torch.cuda.is_available()
    workers = min(4, (os.cpu_count() or 1) // 2) if cuda else 0
    return TrainingArguments(
        output_dir=str(Path(cfg.output_dir) / "checkpoints"),
        num_train_epochs=cfg.epochs,
        per_device_train_batch_size=cfg.batch_size,
        per_device_eval_batch_size=cfg.batch_size * 2,  # no gradients kept: twice the batch fits
        learning_rate=cfg.lr,
        weight_decay=0.01,
        warmup_steps=0.1,  # a fraction of the training steps
        lr_scheduler_type="linear",
        eval_strategy="epoch",
        save_strategy="epoch",
        save_total_limit=1,  # the best checkpoint is kept as well
        load_best_model_at_end=True,
        metric_for_best_model="accuracy",
        train_sampling_strategy="group_by_length",  # batches of similar lengths: little padding
        logging_steps=max(1, min(50, cfg.train_size or 50) // 5),
        seed=cfg.seed,
        use_cpu=not cuda,  # on a CPU, several processes (torchrun) talk through gloo
        auto_find_batch_size=cuda,  # on out-of-memory, halve the batch and go on
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0,  # keep them between epochs and evaluations
        ddp_find_unused_parameters=False,  # every trainable (LoRA, head) weight is used: skip the search
        report_to="none",
        **precision_flags(),
    )


def build_trainer(model, tokenizer, tokenized: DatasetDict, cfg: RunConfig) -> Trainer:
    """A Trainer for `model` on the tokenized train/test splits, padding each batch dynamically."""
    tune_gpu()
    # Pad each batch to its longest review; on a GPU round up to a multiple of 8 for the tensor cores.
    multiple = PAD_TO_MULTIPLE_OF if torch.cuda.is_available() else None
    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple)
    return Trainer(model=model, args=training_arguments(cfg), train_dataset=tokenized["train"],
                   eval_dataset=tokenized["test"], processing_class=tokenizer, data_collator=collator,
                   compute_metrics=compute_metrics)


def write_json(path: Path, data: dict) -> None:
    """Write `data` as JSON atomically (a reader never sees half a file)."""
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per process: torchrun starts several
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def resume_point(cfg: RunConfig) -> str | None:
    """The checkpoint to resume an interrupted run from, or None to start afresh.

    A finished run (metrics.json present) is started again from scratch. An interrupted one is
    resumed only with the same settings; otherwise the user is asked to choose another folder.
    """
    out, settings = Path(cfg.output_dir), json.loads(json.dumps(dataclasses.asdict(cfg), default=str))
    checkpoints = out / "checkpoints"
    if (out / "metrics.json").exists():
        (out / "metrics.json").unlink(missing_ok=True)  # another process may have been first
        shutil.rmtree(checkpoints, ignore_errors=True)
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    saved = json.loads((out / "run_config.json").read_text()) if (out / "run_config.json").exists() else None
    if last and saved != settings:
        raise SetupError(f"{out} holds an unfinished run with other settings: pass another --output-dir, "
                         f"or delete {checkpoints} to start again.")
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "run_config.json", settings)
    return last


def run_training(cfg: RunConfig, log=print) -> dict:
    """The whole recipe: data, backbone, LoRA, tokenize, train, evaluate, save adapter and metrics.json.

    An interrupted run in `cfg.output_dir` is resumed (see `resume_point`). `metrics.json` is
    written last, so its presence means the run finished. Returns the metrics.
    """
    out = Path(cfg.output_dir)
    last = resume_point(cfg)
    set_seed(cfg.seed)

    data, source = load_imdb(cfg)
    log(f"Data: {source} | train {len(data['train']):,} | test {len(data['test']):,}")
    tokenizer = load_tokenizer(cfg.model, cfg.max_length)
    model = add_lora(load_backbone(cfg.model), cfg)
    trainable, total = count_parameters(model)
    log(f"Model: {cfg.model} | trainable {trainable:,} of {total:,} parameters ({trainable / total:.2%})")

    trainer = build_trainer(model, tokenizer, tokenize(data, tokenizer, cfg.max_length), cfg)
    if last:
        log(f"Resuming from {last}")
    start = time.perf_counter()
    train_out = trainer.train(resume_from_checkpoint=last)
    train_runtime = time.perf_counter() - start
    # load_best_model_at_end restored the best epoch's weights, so that epoch's evaluation is the
    # final result (no need to evaluate the same weights again).
    evals = [h for h in trainer.state.log_history if "eval_accuracy" in h]
    results = max(evals, key=lambda h: h["eval_accuracy"]) if evals else trainer.evaluate()

    metrics = {
        **{k: round(float(results[k]), 4) for k in EVAL_KEYS},
        "profile": cfg.profile, "model": cfg.model, "data_source": source,
        "train_size": len(data["train"]), "eval_size": len(data["test"]), "max_length": cfg.max_length,
        "epochs": cfg.epochs, "lr": cfg.lr,
        "batch_size": trainer._train_batch_size,  # the one used, after auto_find_batch_size
        "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
        "target_modules": sorted(model.peft_config["default"].target_modules),
        "trainable_params": trainable, "total_params": total,
        "train_runtime_s": round(train_runtime, 2),
        "train_samples_per_second": round(train_out.metrics["train_samples_per_second"], 2),
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else f"cpu x{torch.get_num_threads()}",
        "log_history": trainer.state.log_history,
    }
    if trainer.is_world_process_zero():  # with several processes (torchrun), one writes the files
        model.peft_config["default"].base_model_name_or_path = base_model_reference(cfg.model)  # what predictors load
        model.save_pretrained(out / "adapter", save_embedding_layers=False)  # only LoRA and the head
        tokenizer.save_pretrained(out / "adapter")
        write_json(out / "metrics.json", metrics)
    return metrics


def ensure_adapter(cfg: RunConfig, log=print) -> Path:
    """The adapter folder of a finished run in `cfg.output_dir`; trains one first, saying so, if there is none."""
    out = Path(cfg.output_dir)
    if (out / "metrics.json").is_file() and (out / "adapter" / "adapter_config.json").is_file():
        log(f"Using the adapter trained earlier: {out / 'adapter'}")
    else:
        log(f"No finished run in {out}: training an adapter now on the {cfg.profile!r} profile "
            "(lesson 03 explains each step).")
        run_training(cfg, log)
    return out / "adapter"
