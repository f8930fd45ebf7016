"""Training speed of LoRA DistilBERT: the naive recipe against the project's, in one run.

    python -m utils.bench                                  # DistilBERT-base, real IMDB review lengths
    python -m utils.bench --model-size tiny --steps 6      # smoke-sized, seconds (CI)
    python -m utils.bench --data-dir ../shared/datasets/imdb --tokenizer PATH   # lengths from the data
    python -m utils.bench --save-model DIR --tokenizer PATH    # the random model, to time a whole run at its size

Both recipes train the same model (a random-initialised DistilBERT-base, `DistilBertConfig()`,
wrapped by `utils.model.add_lora`: r=8 on q_lin/v_lin) for the same number of steps:
- naive: float32, every review padded to `--max-length`, batch 16, random order, PyTorch's
  default GPU settings;
- project: the recipe of `utils.training` -- bf16 (fp16 on GPUs without it) on a GPU, each batch
  padded only to its longest review (rounded up to a multiple of 8 on a GPU, for tensor cores),
  batches of similar lengths (the Trainer's own `get_length_grouped_indices`), a larger batch on a
  GPU (the `gpu` profile's), and `gpu_training_settings()` (cuDNN attention off, TF32 on).
On a CPU the project recipe is timed twice, side by side: in float32 and under bf16 autocast.
bf16 is timed only where the CPU computes it in hardware (AVX512-BF16 or AMX,
`utils.training.cpu_has_native_bf16`); elsewhere it is emulated, slower than float32, and the
report says it was skipped (`--force-cpu-bf16` times it anyway).
Token ids are random: speed depends on the lengths, not on the words. The timed batches are
spread evenly over one epoch's batches, from the smallest to the largest, so that a few steps
already stand for a whole epoch.

What is timed: a plain loop of forward, backward and AdamW step, with `warmup` steps left out and
`torch.cuda.synchronize()` around the clock on a GPU. Not the Trainer, because its evaluation,
checkpointing and logging would blur what each speed setting buys, and a plain loop is short
enough to read in one go. Batches are built before the clock starts (the Trainer's dataloader
workers do that work in parallel with training), so the figures are the model's compute.

Efficiency: each recipe's `achieved_gflops` is the FLOP count of its timed steps (`train_step_flop`:
2x the forward pass, whose count `forward_flop` documents: DistilBERT's linear layers and attention)
divided by its seconds; `peak_fraction` divides that by a matmul peak measured in the same run, with
the same threads (`matmul_peak`: the fastest of a few (4096 x dim) @ (dim x hidden_dim) products, for
DistilBERT-base 4096x768 @ 768x3072, in each precision the recipes use; on CUDA on the GPU).

Review lengths: from `--data-dir` (its train split tokenized with `--tokenizer`), else from
`utils/assets/imdb_token_lengths.json`, a histogram of the 25,000 IMDB training reviews' token
counts. That file was made once, from the train.parquet of a local IMDB copy: each text cleaned
with `utils.data.clean_text`, tokenized without truncation (with [CLS]/[SEP]) by the
bert-base-uncased WordPiece vocabulary (the same 30,522 lower-cased tokens as
distilbert-base-uncased), and the counts of each length written as `lengths` and `counts`.

Peak memory (`utils.system.peak_memory_mb`): CUDA's `max_memory_allocated` on a GPU; on a CPU the
process's peak resident memory (reset between the recipes where Linux allows it, else the peak of the
whole run so far; Windows: psutil's peak working set; None where neither can be read).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from contextlib import nullcontext
from pathlib import Path

import torch
from transformers import DistilBertConfig, DistilBertForSequenceClassification
from transformers.trainer_pt_utils import get_length_grouped_indices

from .config import PROFILES, SMOKE_DATA, SMOKE_MODEL, RunConfig, SetupError, run_cli, set_threads
from .model import add_lora, build_smoke_model, load_tokenizer, save_atomically
from .system import load_average, machine_info, peak_memory_mb, reset_peak_memory
from .training import PAD_TO_MULTIPLE_OF, cpu_has_native_bf16, gpu_training_settings, precision_flags

LENGTHS_FILE = Path(__file__).parent / "assets" / "imdb_token_lengths.json"
IMDB_TRAIN_REVIEWS = 25_000
NAIVE_BATCH = 16


def load_lengths(data_dir: str | None = None, tokenizer: str | None = None) -> tuple[list[int], str]:
    """Token counts of the training reviews, and where they came from (the shipped histogram by default)."""
    if data_dir is None:
        hist = json.loads(LENGTHS_FILE.read_text())
        lengths = [n for n, c in zip(hist["lengths"], hist["counts"]) for _ in range(c)]
        return lengths, f"{LENGTHS_FILE.name} ({len(lengths):,} IMDB training reviews)"
    from .data import load_local_imdb, load_smoke_reviews

    name = tokenizer or (SMOKE_MODEL if data_dir == SMOKE_DATA else "distilbert-base-uncased")
    texts = (load_smoke_reviews() if data_dir == SMOKE_DATA else load_local_imdb(data_dir))["train"]["text"]
    lengths = [len(ids) for ids in load_tokenizer(name)(list(texts))["input_ids"]]
    return lengths, f"{data_dir} tokenized by {name} ({len(lengths):,} reviews)"


def sample_batches(lengths: list[int], batch_size: int, steps: int, grouped: bool, seed: int,
                   warmup: int = 0) -> list[list[int]]:
    """The lengths of `warmup` + `steps` batches of one epoch, formed as the Trainer would form them.

    The timed `steps` batches are spread evenly over the epoch's batches sorted by size (then
    shuffled), so that even a few steps have the epoch's mix of short and long batches; the
    warmup batches are drawn at random.
    """
    g = torch.Generator().manual_seed(seed)
    order = (get_length_grouped_indices(lengths, batch_size, generator=g) if grouped
             else torch.randperm(len(lengths), generator=g).tolist())
    batches = [[lengths[i] for i in order[s:s + batch_size]]
               for s in range(0, len(order) - batch_size + 1, batch_size)]
    if not batches:
        raise ValueError(f"Only {len(lengths)} reviews: fewer than one batch of {batch_size}; lower --batch-size.")
    batches.sort(key=lambda b: (max(b), sum(b)))
    timed = [batches[int((i + 0.5) * len(batches) / steps)] for i in range(steps)]
    timed = [timed[i] for i in torch.randperm(steps, generator=g).tolist()]
    return [batches[i] for i in torch.randint(len(batches), (warmup,), generator=g).tolist()] + timed


def batch_width(batch: list[int], max_length: int, pad_to_max: bool, multiple: int | None) -> int:
    """How long the padded batch is: `max_length`, or its longest review rounded up to `multiple`."""
    if pad_to_max:
        return max_length
    return min(max_length, math.ceil(max(batch) / (multiple or 1)) * (multiple or 1))


def make_batch(batch: list[int], width: int, vocab_size: int, g: torch.Generator) -> dict[str, torch.Tensor]:
    """Random token ids with these lengths, padded with 0 to `width`; attention mask and labels."""
    lengths = torch.tensor(batch)
    mask = (torch.arange(width)[None, :] < lengths[:, None]).long()
    ids = torch.randint(5, vocab_size, (len(batch), width), generator=g) * mask  # 0-4: [PAD] and special tokens
    return {"input_ids": ids, "attention_mask": mask, "labels": torch.randint(0, 2, (len(batch),), generator=g)}


def model_size_for(model: str) -> str:
    """The bench model that matches a run's backbone: `tiny` for the smoke model, else DistilBERT-`base`."""
    return "tiny" if model == SMOKE_MODEL else "base"


def random_model_config(size: str) -> DistilBertConfig:
    """The bench model's config: DistilBERT-base's sizes (`base`) or the smoke model's (`tiny`), 2 labels."""
    config = DistilBertConfig() if size == "base" else DistilBertConfig.from_pretrained(build_smoke_model())
    config.num_labels = 2
    return config


def random_model(size: str) -> DistilBertForSequenceClassification:
    """A random-initialised DistilBERT classifier: `base` (DistilBERT-base's size) or the smoke-sized `tiny`."""
    return DistilBertForSequenceClassification(random_model_config(size))


def forward_flop(config: DistilBertConfig, batch: int, width: int) -> float:
    """Floating-point operations of one forward pass of a batch of `batch` reviews padded to `width` tokens.

    A matmul of (m x k) @ (k x n) costs 2mkn. Per token and layer, DistilBERT's linear layers cost
    2 * (4 * d * d + 2 * d * h) (the q, k, v and output projections, and the feed-forward layer's two,
    d = `dim`, h = `hidden_dim`), and attention 2 * 2 * width * d (scores Q K^T and their weighted sum
    of V, all heads together); the head (pre_classifier, classifier) costs 2 * (d * d + 2 * d) per
    review. LoRA's r=8 matrices (under 3% of a projection's cost), the embeddings, softmax and layer
    norms are left out. DistilBERT-base (d 768, h 3072, 6 layers) at width 256: about 89 MFLOP a token.
    """
    d, h, layers = config.dim, config.hidden_dim, config.n_layers
    per_token = layers * (2 * (4 * d * d + 2 * d * h) + 4 * width * d)
    return batch * width * per_token + batch * 2 * (d * d + 2 * d)


def train_step_flop(config: DistilBertConfig, batch: int, width: int) -> float:
    """One LoRA training step: about 2x the forward pass.

    The backward pass computes the gradients of the activations (about one forward pass), but not
    those of the frozen weights (the other forward pass that full fine-tuning pays, 3x in all).
    """
    return 2 * forward_flop(config, batch, width)


PEAK_TOKENS = 4096  # rows of the peak matmul: DistilBERT-base's feed-forward layer on 4096 tokens is 4096x768 @ 768x3072
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def matmul_gflops(device: torch.device, precision: str, m: int, k: int, n: int, repeats: int = 3) -> float:
    """The matmul peak this run can reach: GFLOPS of the fastest of `repeats` timed (m x k) @ (k x n) products.

    On a CPU with torch's threads of this run (set before), on CUDA on the GPU; float32 without TF32.
    """
    g = torch.Generator().manual_seed(0)
    a = torch.randn(m, k, generator=g).to(device, DTYPES[precision])
    b = torch.randn(k, n, generator=g).to(device, DTYPES[precision])
    torch.matmul(a, b)  # untimed: the first product warms up
    best = math.inf
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        torch.matmul(a, b)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return round(2 * m * k * n / best / 1e9, 1)


def build_model(size: str) -> torch.nn.Module:
    """The bench's model: `random_model(size)` with LoRA added (r=8 on q_lin/v_lin)."""
    return add_lora(random_model(size), RunConfig(profile="bench"))


def save_model(path: str, size: str, tokenizer: str | None) -> str:
    """Save `random_model(size)` and a tokenizer as a model folder, so that a whole run can be timed at that size."""
    name = tokenizer or (SMOKE_MODEL if size == "tiny" else "distilbert-base-uncased")
    if Path(path).exists():
        raise SetupError(f"--save-model {path} already exists: choose a new folder.")
    torch.manual_seed(0)
    model, tok = random_model(size), load_tokenizer(name)
    if len(tok) > model.config.vocab_size:
        raise SetupError(f"--tokenizer {name} has {len(tok):,} tokens, more than the model's "
                         f"{model.config.vocab_size:,}: choose a BERT-uncased tokenizer (or a folder holding one).")
    save_atomically(Path(path), model, tok)
    return (f"Saved a random-initialised DistilBERT-{size} and the tokenizer of {name} in {path}. Time a whole "
            f"run at this size with: python fine_tune_sentiment.py --profile cpu --model {path} --data-dir <IMDB> "
            "(only the time means something: the weights are random)")


CPU_BF16_SKIPPED = ("skipped: this CPU has no native bf16 (AVX512-BF16 or AMX), so bf16 autocast would be "
                    "emulated, slower than float32; --force-cpu-bf16 times it anyway")


def recipes(cuda: bool, batch_size: int | None, cpu_bf16: bool = False) -> dict[str, dict]:
    """The recipes compared: naive (fp32, pad to max length, batch 16) and the project's.

    On a GPU the project's recipe runs in bf16 (fp16 before Ampere); on a CPU in float32, plus the
    same recipe under bf16 autocast (`project_bf16`) when `cpu_bf16`.
    """
    if cuda:
        flags = precision_flags("cuda")
        precision = "bf16" if flags["bf16"] else "fp16" if flags["fp16"] else "fp32"
    else:
        precision = "fp32"
    project = dict(precision=precision, pad_to_max=False, grouped=True,
                   pad_multiple=PAD_TO_MULTIPLE_OF if cuda else None,
                   batch_size=batch_size or PROFILES["gpu" if cuda else "cpu"]["batch_size"], tuned=True)
    chosen = {
        "naive": dict(precision="fp32", pad_to_max=True, grouped=False, batch_size=NAIVE_BATCH,
                      pad_multiple=None, tuned=False),
        "project": project,
    }
    if not cuda and cpu_bf16:
        chosen["project_bf16"] = dict(project, precision="bf16")
    return chosen


def sync(device: torch.device) -> None:
    """Wait for the GPU to finish queued work (so the clock measures it); nothing on a CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize()


def time_recipe(recipe: dict, lengths: list[int], args: argparse.Namespace, device: torch.device) -> dict:
    """Train a fresh LoRA model for `args.steps` steps under `recipe`; its speed and memory."""
    torch.manual_seed(args.seed)
    model = build_model(args.model_size).to(device).train()
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": None}[recipe["precision"]]
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)  # fp16 needs loss scaling
    plan = sample_batches([min(n, args.max_length) for n in lengths], recipe["batch_size"],
                          args.steps, recipe["grouped"], args.seed, warmup=args.warmup)
    widths = [batch_width(b, args.max_length, recipe["pad_to_max"], recipe["pad_multiple"]) for b in plan]
    g = torch.Generator().manual_seed(args.seed)
    batches = [make_batch(b, w, model.config.vocab_size, g) for b, w in zip(plan, widths)]
    reset_peak_memory(device)

    with gpu_training_settings() if recipe["tuned"] else nullcontext():  # naive: PyTorch's defaults
        for step, batch in enumerate(batches):
            if step == args.warmup:
                sync(device)
                start, cpu_start = time.perf_counter(), time.process_time()
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=dtype, enabled=dtype is not None):
                loss = model(**batch).loss
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
        sync(device)
    seconds, cpu_seconds = time.perf_counter() - start, time.process_time() - cpu_start

    timed = list(zip(plan, widths))[args.warmup:]
    samples = sum(len(b) for b, _ in timed)
    real = sum(sum(b) for b, _ in timed)
    padded = sum(len(b) * w for b, w in timed)
    multiple = recipe["pad_multiple"]
    peak = peak_memory_mb(device)
    flop = sum(train_step_flop(model.config, len(b), w) for b, w in timed)
    return {
        "precision": recipe["precision"], "batch_size": recipe["batch_size"],
        "padding": ("max_length" if recipe["pad_to_max"]
                    else f"dynamic, multiple of {multiple}" if multiple else "dynamic"),
        "length_grouped": recipe["grouped"], "gpu_tuned": recipe["tuned"] and device.type == "cuda",
        "steps": args.steps, "seconds": round(seconds, 3),
        "process_cpu_s": round(cpu_seconds, 3),  # CPU time of all threads: on a busy machine, compare with seconds
        "samples_per_s": round(samples / seconds, 2),
        "real_tokens_per_s": round(real / seconds, 1),
        "padded_fraction": round(1 - real / padded, 4),
        "peak_memory_mb": None if peak is None else round(peak, 1),
        "epoch_25k_s": round(IMDB_TRAIN_REVIEWS * seconds / samples, 1),
        "train_gflop": round(flop / 1e9, 1), "achieved_gflops": round(flop / seconds / 1e9, 1),
    }


def run(args: argparse.Namespace) -> dict:
    """Time both recipes on this machine and return the report (also written to `args.output`)."""
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    threads = args.threads or set_threads()
    torch.set_num_threads(threads)
    lengths, source = load_lengths(args.data_dir, args.tokenizer)
    native_bf16 = not cuda and cpu_has_native_bf16()
    report = {
        "device": torch.cuda.get_device_name() if cuda else f"cpu, {threads} torch threads",
        "torch": torch.__version__, "model_size": args.model_size, "max_length": args.max_length,
        "lengths_from": source,
        "load_average": load_average(),
        "machine": machine_info(), "date": time.strftime("%Y-%m-%d"),
        "arguments": {k: v for k, v in vars(args).items() if k not in ("output", "save_model")},  # python -m utils.bench
    }
    if not cuda:
        report["cpu_native_bf16"] = native_bf16
    chosen = recipes(cuda, args.batch_size, cpu_bf16=native_bf16 or args.force_cpu_bf16)
    for name, recipe in chosen.items():
        report[name] = time_recipe(recipe, lengths, args, device)
    config = random_model_config(args.model_size)
    m, k, n = PEAK_TOKENS, config.dim, config.hidden_dim  # the feed-forward layer's matmul on 4096 tokens
    report["matmul_peak"] = {"shape": f"{m}x{k} @ {k}x{n}", "gflops": {
        precision: matmul_gflops(device, precision, m, k, n) for precision in dict.fromkeys(
            recipe["precision"] for recipe in chosen.values())}}
    for name, recipe in chosen.items():
        peak_gflops = report["matmul_peak"]["gflops"][recipe["precision"]]
        report[name]["peak_fraction"] = round(report[name]["achieved_gflops"] / peak_gflops, 3)
    report["ratio"] = ratios(report["project"], report["naive"])
    if not cuda and "project_bf16" in report:
        report["bf16_vs_fp32"] = ratios(report["project_bf16"], report["project"])
    elif not cuda:
        report["project_bf16"] = {"skipped": CPU_BF16_SKIPPED}
    out = Path(args.output)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    return report


def ratios(new: dict, old: dict) -> dict:
    """new / old for speed, memory and CPU time (None where a figure is missing)."""
    return {k: round(new[k] / old[k], 2) if new.get(k) and old.get(k) else None
            for k in ("samples_per_s", "real_tokens_per_s", "peak_memory_mb", "process_cpu_s")}


def format_report(report: dict) -> str:
    """The recipes side by side, as a text table (on a CPU: the project's in fp32 and bf16)."""
    rows = [("precision", "precision"), ("batch size", "batch_size"), ("padding", "padding"),
            ("length-grouped", "length_grouped"), ("samples/s", "samples_per_s"),
            ("real tokens/s", "real_tokens_per_s"), ("padded fraction", "padded_fraction"),
            ("peak memory (MiB)", "peak_memory_mb"), ("25k-review epoch (s)", "epoch_25k_s"),
            ("wall seconds", "seconds"), ("CPU seconds", "process_cpu_s"),
            ("achieved GFLOPS", "achieved_gflops"), ("share of matmul peak", "peak_fraction")]
    columns = [k for k in ("naive", "project", "project_bf16") if k in report and "skipped" not in report[k]]
    lines = [f"{report['device']} | DistilBERT-{report['model_size']} + LoRA | max length {report['max_length']} "
             f"| lengths: {report['lengths_from']} | load {report['load_average']}",
             f"{'':<22}" + "".join(f"{k.replace('_', ' '):>24}" for k in columns)]
    lines += [f"{label:<22}" + "".join(f"{report[k][key]!s:>24}" for k in columns) for label, key in rows]
    peaks = ", ".join(f"{k} {v} GFLOPS" for k, v in report["matmul_peak"]["gflops"].items())
    lines.append(f"matmul peak ({report['matmul_peak']['shape']}, this run's threads): {peaks}")
    lines.append(f"project / naive: {report['ratio']['samples_per_s']}x samples/s, "
                 f"{report['ratio']['real_tokens_per_s']}x real tokens/s, "
                 f"{report['ratio']['peak_memory_mb']}x peak memory")
    if "bf16_vs_fp32" in report:
        r = report["bf16_vs_fp32"]
        lines.append(f"CPU bf16 / fp32 (project recipe): {r['samples_per_s']}x samples/s, "
                     f"{r['process_cpu_s']}x CPU seconds"
                     + ("" if report.get("cpu_native_bf16") else " (emulated bf16: this CPU has no native bf16)"))
    elif "project_bf16" in report:
        lines.append(f"CPU bf16: {report['project_bf16']['skipped']}")
    return "\n".join(lines)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the benchmark."""
    gpu = torch.cuda.is_available()
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=50 if gpu else 4,
                   help="timed steps per recipe (default: 50 on a GPU, 4 on a CPU)")
    p.add_argument("--warmup", type=int, default=5 if gpu else 1,
                   help="untimed steps first (default: 5 on a GPU, 1 on a CPU)")
    p.add_argument("--batch-size", type=int,
                   help="the project recipe's batch (default: the gpu or cpu profile's); naive uses 16")
    p.add_argument("--max-length", type=int, default=512, help="tokens kept per review (default 512)")
    p.add_argument("--model-size", choices=["base", "tiny"], default="base",
                   help="DistilBERT-base (default), or the smoke profile's tiny model for CI")
    p.add_argument("--data-dir", help="take review lengths from this IMDB folder (or 'smoke'); "
                                      "default: the shipped histogram")
    p.add_argument("--tokenizer", help="tokenizer for --data-dir and --save-model (default: distilbert-base-uncased; "
                                       "the smoke tokenizer for 'smoke' and the tiny model)")
    p.add_argument("--save-model", metavar="DIR",
                   help="time nothing: save the random model of --model-size (and --tokenizer) in DIR, "
                        "for timing a whole fine_tune_sentiment.py run at that size")
    p.add_argument("--threads", type=int,
                   help="CPU threads for torch (default: one per core; 1 is steadier on a busy machine)")
    p.add_argument("--force-cpu-bf16", action="store_true",
                   help="on a CPU without native bf16, time bf16 autocast anyway (emulated: slow)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--output", default="outputs/bench.json", help="where the JSON report goes")
    args = p.parse_args(argv)
    if min(args.steps, args.max_length - 1, args.batch_size or 1, args.threads or 1) < 1 or args.warmup < 0:
        p.error("--steps, --max-length, --batch-size and --threads must be positive, --warmup not negative")
    if args.max_length > 512:
        p.error("--max-length: DistilBERT reads at most 512 tokens")
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print its table (or, with --save-model, only save the model)."""
    args = parse_args(argv)
    if args.save_model:
        print(save_model(args.save_model, args.model_size, args.tokenizer))
        return 0
    report = run(args)
    print(format_report(report))
    return 0


if __name__ == "__main__":
    run_cli(main)
