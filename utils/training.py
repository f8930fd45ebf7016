"""Tokenizing, the Trainer setup, and the whole training run that the script and lessons share."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from datasets import DatasetDict
from transformers import DataCollatorWithPadding, Trainer, TrainerCallback, TrainingArguments, set_seed
from transformers.trainer_utils import get_last_checkpoint

from .config import PROFILES, SMOKE_DATA, RunConfig, SetupError
from .data import load_imdb
from .metrics import compute_metrics
from .model import add_lora, count_parameters, load_backbone, load_tokenizer
from .adapter import save_adapter
from .runs import check_max_length, output_lock, publish, staging_dir, validate_config
from .system import cpu_has_native_bf16, describe_device, quiet_transformers, write_json  # cpu_has_native_bf16: lessons import it from here


EVAL_KEYS = ("eval_loss", "eval_accuracy", "eval_f1", "eval_precision", "eval_recall")  # validation, each epoch
TEST_KEYS = ("test_loss", "test_accuracy", "test_f1", "test_precision", "test_recall")  # test split, once
PAD_TO_MULTIPLE_OF = 8  # on a GPU, batches are padded to a multiple of this (tensor cores)


def tokenize(data: DatasetDict, tokenizer, max_length: int) -> DatasetDict:
    """Turn `text` into token ids, truncated to `max_length` and not padded (the collator pads each batch)."""
    return data.map(lambda batch: tokenizer(batch["text"], truncation=True, max_length=max_length),
                    batched=True, remove_columns=["text"])


def train_device(use_cpu: bool = False) -> str:
    """Where the Trainer will train: `cuda`, `mps` (Apple GPUs) or `cpu` (always, when `use_cpu`)."""
    if use_cpu:
        return "cpu"
    if torch.cuda.is_available():
        return "cuda"
    mps = getattr(torch.backends, "mps", None)
    return "mps" if mps is not None and mps.is_available() else "cpu"


def precision_flags(device: str | None = None) -> dict[str, bool]:
    """Mixed precision for `device` (default: `train_device()`): the Trainer's `bf16` and `fp16` flags.

    - CUDA: bf16 on Ampere or newer (A100, H100, RTX 30xx...); older GPUs such as Colab's T4 only
      emulate it, slowly, so they get fp16 (with loss scaling, which the Trainer adds).
    - CPU: bf16 autocast where the CPU has it in hardware (AVX512-BF16, AMX), else float32.
    - Apple MPS: float32 (the Trainer's mixed precision on MPS depends on the macOS version).
    """
    device = device or train_device()
    if device == "cuda":
        bf16 = torch.cuda.get_device_capability()[0] >= 8  # Ampere or newer: bf16 in hardware
        return {"bf16": bf16, "fp16": not bf16}
    return {"bf16": device == "cpu" and cpu_has_native_bf16(), "fp16": False}


@contextmanager
def gpu_training_settings() -> Iterator[None]:
    """For the block only: the GPU settings the recipe trains with (nothing changes without CUDA).

    - cuDNN's attention builds a new plan for every sequence length it meets; with dynamic padding that
      is hundreds of plans in the first epoch (on an H200: 615 samples/s instead of 2,388), so PyTorch's
      other fused attention kernels (flash, memory-efficient) are used instead.
    - TF32 (TensorFloat-32: float32 numbers multiplied with a 10-bit mantissa on the tensor cores of
      Ampere and newer GPUs) speeds up the matrix products that still run in float32.
    Both are restored afterwards, so evaluation and inference later in the same process run in full
    float32 precision. It uses torch's `fp32_precision` setting (torch 2.9 and newer raise when the older
    `allow_tf32` flags are mixed with it).
    """
    if not torch.cuda.is_available():
        yield
        return
    matmul = torch.backends.cuda.matmul
    cudnn_sdp, precision = torch.backends.cuda.cudnn_sdp_enabled(), matmul.fp32_precision
    torch.backends.cuda.enable_cudnn_sdp(False)
    matmul.fp32_precision = "tf32"
    try:
        yield
    finally:
        torch.backends.cuda.enable_cudnn_sdp(cudnn_sdp)
        matmul.fp32_precision = precision


def single_process() -> bool:
    """True unless torchrun / accelerate launch started several processes for this run."""
    return int(os.environ.get("WORLD_SIZE", "1")) == 1


def training_arguments(cfg: RunConfig) -> TrainingArguments:
    """The Trainer settings of the recipe: evaluate and save each epoch, keep the best, group by length.

    On a GPU: mixed precision (`precision_flags`), the profile's large batch (gpu: 64, with a learning
    rate scaled to it), and dataloader workers that pad the next batches while the GPU computes. With
    one process on CUDA, `auto_find_batch_size`: on out-of-memory, accelerate retries the whole training
    loop from step 0 with 0.9x the batch (the evaluation batch is not shrunk). Not under torchrun, where
    one process's retry would leave the others waiting.
    """
    device = train_device(cfg.use_cpu)
    cuda = device == "cuda"
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
        use_cpu=device == "cpu",  # else CUDA or Apple's MPS; on a CPU, torchrun's processes talk through gloo
        auto_find_batch_size=cuda and single_process(),  # on out-of-memory: retry from step 0 at 0.9x the batch
        dataloader_num_workers=workers,
        dataloader_persistent_workers=workers > 0,  # kept between epochs (so the test split goes through predict)
        ddp_find_unused_parameters=False,  # every trainable (LoRA, head) weight is used: skip the search
        report_to="none",
        **precision_flags(device),
    )


class StepTimer(TrainerCallback):
    """Where a training run's time goes: the optimizer steps themselves (forward, backward, update) against
    everything between them (fetching and padding the next batch, logging, the epoch's evaluation, saving).

    `trainer.train()`'s `train_samples_per_second` divides by the whole loop, evaluation and checkpoints
    included; `step_samples_per_second` counts the steps only, like `utils.bench`'s loop.
    """

    def __init__(self):
        self.step_s = self.between_s = 0.0
        self._begin = self._end = None

    def on_step_begin(self, args, state, control, **kwargs):
        """Start the clock of one optimizer step."""
        self._begin = time.perf_counter()
        if self._end is not None:
            self.between_s += self._begin - self._end

    def on_step_end(self, args, state, control, **kwargs):
        """Stop it."""
        self._end = time.perf_counter()
        self.step_s += self._end - self._begin


def step_times(trainer: Trainer, samples: int) -> dict:
    """The StepTimer's split of `samples` trained (build_trainer adds the timer; {} without one), for metrics.json."""
    timer = next((c for c in trainer.callback_handler.callbacks if isinstance(c, StepTimer)), None)
    if timer is None or not timer.step_s:
        return {}
    return {"step_s": round(timer.step_s, 2), "between_steps_s": round(timer.between_s, 2),
            "step_samples_per_second": round(samples / timer.step_s, 2)}


def faster_attention(device: str) -> str | None:
    """`"eager"` where it trains faster than PyTorch's fused attention (sdpa), else None (keep the default).

    Measured with `utils.bench`'s LoRA DistilBERT-base steps (2-core AMD EPYC with AVX512-BF16, max length 256,
    2026-12-03): under CPU bf16 autocast, eager 5.16 samples/s against sdpa's 4.10-4.29; in float32 the two
    were equal (2.70 against 2.74). On GPUs sdpa's fused kernels are the fast ones.
    """
    return "eager" if device == "cpu" and precision_flags(device)["bf16"] else None


def build_trainer(model, tokenizer, tokenized: DatasetDict, cfg: RunConfig) -> Trainer:
    """A Trainer for `model`: trains on `train`, picks the best epoch on `validation`, pads each batch dynamically.

    On a CPU in bf16 the model switches to eager attention (`faster_attention`).
    """
    device = train_device(cfg.use_cpu)
    attention = faster_attention(device)
    if attention:
        (model.get_base_model() if hasattr(model, "get_base_model") else model).set_attn_implementation(attention)
    # Pad each batch to its longest review; on a GPU round up to a multiple of 8 for the tensor cores.
    multiple = PAD_TO_MULTIPLE_OF if device == "cuda" else None
    collator = DataCollatorWithPadding(tokenizer, pad_to_multiple_of=multiple)
    return Trainer(model=model, args=training_arguments(cfg), train_dataset=tokenized["train"],
                   eval_dataset=tokenized["validation"], processing_class=tokenizer, data_collator=collator,
                   compute_metrics=compute_metrics, callbacks=[StepTimer()])


def resume_point(cfg: RunConfig) -> str | None:
    """The checkpoint to resume an interrupted run from, or None to start afresh; deletes nothing.

    A run trains in OUTPUT_DIR/staging/ and replaces the folder's finished run only once it has
    finished (utils.runs), so a finished run is never touched here. An interrupted run in staging/
    is resumed only with the same settings; otherwise the user is asked to choose another folder.
    """
    stage, settings = staging_dir(cfg.output_dir), _settings(cfg)
    checkpoints = stage / "checkpoints"
    last = get_last_checkpoint(str(checkpoints)) if checkpoints.is_dir() else None
    saved = json.loads((stage / "run_config.json").read_text()) if (stage / "run_config.json").exists() else None
    if last and saved != settings:
        raise SetupError(f"{stage} holds an unfinished run with other settings: pass another --output-dir, "
                         f"or delete {stage} to start again.")
    stage.mkdir(parents=True, exist_ok=True)
    write_json(stage / "run_config.json", settings)
    return last


def _settings(cfg: RunConfig) -> dict:
    """The run's configuration as plain JSON values (run_config.json)."""
    return json.loads(json.dumps(dataclasses.asdict(cfg), default=str))


def run_training(cfg: RunConfig, log=print) -> dict:
    """The whole recipe: data, backbone, LoRA, tokenize, train, evaluate, save adapter and metrics.json.

    The arguments are checked, then the run takes the folder's lock (a second run stops at once),
    then data and model are checked before anything in the folder is touched; it trains in its
    staging/ folder (utils.runs), so a finished run there is replaced only when this one has
    finished. An interrupted run is resumed (see `resume_point`).
    `metrics.json` is written last, so its presence means the run finished. Returns the metrics.
    """
    out = Path(cfg.output_dir)
    validate_config(cfg)
    with output_lock(out) as owner:  # a second run into this folder stops here, at once, with one line
        set_seed(cfg.seed)
        data, source = load_imdb(cfg)
        log(f"Data: {source} | train {len(data['train']):,} | validation {len(data['validation']):,} "
            f"| test {len(data['test']):,}")
        tokenizer = load_tokenizer(cfg.model, cfg.max_length)
        with quiet_transformers():  # its load report lists the new head as MISSING: expected, lesson 02 explains it
            backbone = load_backbone(cfg.model)
        check_max_length(cfg, backbone.config)
        model = add_lora(backbone, cfg)
        trainable, total = count_parameters(model)
        log(f"Model: {cfg.model} | trainable {trainable:,} of {total:,} parameters ({trainable / total:.2%})")

        # Everything is checked: only now is the folder touched.
        if owner:
            publish(out)  # completes a swap that a crash interrupted
        last = resume_point(cfg)
        tokenized = tokenize(data, tokenizer, cfg.max_length)
        trainer = build_trainer(model, tokenizer, tokenized, dataclasses.replace(cfg, output_dir=str(staging_dir(out))))
        if last:
            log(f"Resuming from {last}")
        train_out, test = train_then_test(trainer, tokenized["test"], resume_from_checkpoint=last)
        return save_run(trainer, tokenized, cfg, train_out, test, source)


def train_then_test(trainer: Trainer, test_split, resume_from_checkpoint: str | None = None) -> tuple:
    """`trainer.train()` (with the GPU settings of `gpu_training_settings`), then the test split scored once.

    The best epoch was chosen on the validation reviews (`load_best_model_at_end` restored its weights);
    the test split is scored once, with those weights, by `trainer.predict`, which builds a loader for
    the split it is given. (`trainer.evaluate(test)` would not, with persistent dataloader workers: it
    returns the loader it cached for the validation split; huggingface/transformers#30527.)
    Returns `(train_output, test_metrics)`, the metrics named `test_accuracy` and so on.
    """
    with gpu_training_settings():
        train_out = trainer.train(resume_from_checkpoint=resume_from_checkpoint)
    return train_out, trainer.predict(test_split, metric_key_prefix="test").metrics


def save_run(trainer: Trainer, tokenized: DatasetDict, cfg: RunConfig, train_out, test: dict, source: str) -> dict:
    """Save a trained run in `cfg.output_dir`: adapter/ (LoRA + head + tokenizer) and metrics.json; returns the metrics.

    `train_out` is what `trainer.train()` returned, `test` the one evaluation of the test split
    (`metric_key_prefix="test"`); the validation figures are those of the best epoch.
    """
    model, tokenizer, out = trainer.model, trainer.processing_class, Path(cfg.output_dir)
    trainable, total = count_parameters(model)
    evals = [h for h in trainer.state.log_history if "eval_accuracy" in h]
    best = max(evals, key=lambda h: h["eval_accuracy"]) if evals else trainer.evaluate()
    metrics = {
        **{k: round(float(test[k]), 4) for k in TEST_KEYS},
        "validation": {"epoch": best.get("epoch"), **{k: round(float(best[k]), 4) for k in EVAL_KEYS}},
        "profile": cfg.profile, "model": cfg.model, "data_source": source,
        "train_size": len(tokenized["train"]), "val_size": len(tokenized["validation"]),
        "eval_size": len(tokenized["test"]), "max_length": cfg.max_length,
        "epochs": cfg.epochs, "lr": cfg.lr,
        "batch_size": trainer._train_batch_size,  # the one used, after auto_find_batch_size
        "lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha,
        "target_modules": sorted(model.peft_config["default"].target_modules),
        "trainable_params": trainable, "total_params": total,
        "train_runtime_s": round(train_out.metrics["train_runtime"], 2),
        "train_samples_per_second": round(train_out.metrics["train_samples_per_second"], 2),
        **step_times(trainer, train_out.metrics["train_samples_per_second"] * train_out.metrics["train_runtime"]),
        "device": describe_device(train_device(cfg.use_cpu)),
        "precision": "bf16" if trainer.args.bf16 else "fp16" if trainer.args.fp16 else "fp32",
        "log_history": trainer.state.log_history,
    }
    if trainer.is_world_process_zero():  # with several processes (torchrun), one writes the files
        stage = staging_dir(out)  # written there, then swapped in whole: a finished run is never half replaced
        save_adapter(model, tokenizer, cfg, stage / "adapter")  # portable: no path of this machine inside
        write_json(stage / "run_config.json", _settings(cfg))
        write_json(stage / "metrics.json", metrics)
        publish(out)
    return metrics


# A small, fast run for lessons 04-06 when lesson 03's adapter is not there (a fresh Colab VM, say):
# the `cpu` profile's sizes, on whatever device there is (a few minutes on a CPU, well under one on a GPU).
SMALL_RUN = ("train_size", "eval_size", "val_size", "max_length", "epochs", "batch_size", "lr")


def small_run_config(cfg: RunConfig) -> RunConfig:
    """`cfg` with the `cpu` profile's sizes, in its own output folder; `cfg` itself when it is that small already."""
    small = {k: PROFILES["cpu"][k] for k in SMALL_RUN}
    if cfg.data_dir == SMOKE_DATA or (cfg.train_size is not None and cfg.train_size <= small["train_size"]):
        return cfg  # already small (the smoke set, the cpu profile): nothing to cut
    return dataclasses.replace(cfg, **small, output_dir=f"{cfg.output_dir}-small")


def find_or_train_adapter(cfg: RunConfig, log=print) -> Path:
    """The adapter folder for lessons 04-06: lesson 03's, else train a small one now, saying so and how long it took.

    In order: LORA_ADAPTER (a ready adapter, for workshops), the adapter lesson 03 (or the script) saved
    in `cfg.output_dir/adapter`, a small run's saved earlier, else a small run now (`small_run_config`:
    the `cpu` profile's sizes, so a fresh GPU machine does not retrain the full `gpu` profile).
    """
    ready = os.environ.get("LORA_ADAPTER")
    if ready:
        if not (Path(ready) / "adapter_config.json").is_file():
            raise SetupError(f"LORA_ADAPTER={ready} is not an adapter folder (no adapter_config.json): "
                             "point it at the adapter/ folder of a finished run, or unset it.")
        log(f"Using the ready adapter LORA_ADAPTER={ready}")
        return Path(ready)
    small = small_run_config(cfg)
    for folder in dict.fromkeys([cfg.output_dir, small.output_dir]):
        adapter = Path(folder) / "adapter"
        if (adapter / "adapter_config.json").is_file():
            log(f"Using the adapter trained earlier: {adapter}")
            return adapter
    reviews = f"{small.train_size:,}" if small.train_size else "all the"
    log(f"No adapter from lesson 03 in {Path(cfg.output_dir) / 'adapter'}: training a small one now "
        f"({reviews} training reviews, max length {small.max_length}, on {train_device(small.use_cpu)}).")
    start = time.perf_counter()
    run_training(small, log)
    log(f"Trained the small adapter in {time.perf_counter() - start:.0f} s: {Path(small.output_dir) / 'adapter'}")
    return Path(small.output_dir) / "adapter"
