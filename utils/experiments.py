"""What LoRA buys, measured on one split: baselines, LoRA, full fine-tuning, and a rank sweep.

    python -m utils.experiments --profile smoke                       # seconds (the tests run this)
    python -m utils.experiments --profile cpu --model PATH --data-dir DIR
    python -m utils.experiments --runs lora,full --ranks none         # full fine-tuning only when named
    python -m utils.experiments --runs none --ranks 1,4,16 --max-length 128 --train-size 1000 --merge

Every run trains on the same split (`utils.data.load_imdb(cfg)`: train, validation, test), picks
its best epoch or setting on the validation reviews and is tested once on the test reviews:

- `majority`: always predict the most frequent training label (the floor);
- `tfidf`: TF-IDF of words and word pairs + logistic regression (scikit-learn), C chosen on validation;
- `head_only`: the backbone frozen, only the classification head (`utils.model.HEAD_MODULES`) trained;
- `lora`: the recipe itself (`utils.training.run_training`: LoRA on the profile's targets + the head);
- `lora_all_linear`: the same with LoRA on every Linear layer outside the head;
- `full`: every weight trained, at the usual smaller learning rate of full fine-tuning (`--full-lr`, 5e-5).
  It runs only when named in `--runs`: on a laptop CPU it takes several times the LoRA run.

Measured for each: test and validation accuracy, trainable parameters, training time (the
Trainer's `train()`, which includes its validation pass each epoch; for TF-IDF all the fits),
peak memory (CUDA's `max_memory_allocated` on a GPU, else the process's peak resident memory),
and the size on disk of what must be kept to use the model (the adapter's files, the head's
weights, the full model's weights, the pickled scikit-learn pipeline).
The CLI runs each experiment in a fresh Python process, so that its peak memory is its own.
`--ranks` adds a sweep of the LoRA rank (alpha scaled with r, so alpha/r stays the recipe's).
The results JSON records the command, the machine, the model, the data and every setting.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import gc
import json
import multiprocessing
import shlex
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .config import (OneLineParser, RunConfig, SetupError, add_config_arguments, resolve_config, run_cli,
                     set_threads, shown_paths)
from .system import (current_memory_mb, folder_bytes, load_average, machine_info, peak_memory_mb,
                     quiet_transformers, reset_peak_memory)

RUNS = ("majority", "tfidf", "head_only", "lora", "lora_all_linear", "full")
DEFAULT_RUNS = RUNS[:-1]  # full fine-tuning only when asked for by name
RANKS = (1, 2, 4, 8, 16, 32, 64)
FULL_FT_LR = 5e-5  # full fine-tuning's usual rate: LoRA's adapters start at zero and want ~10-40x more
TFIDF_C = (0.3, 1.0, 3.0, 10.0)  # inverse regularisation strengths tried on the validation reviews
RUN_LABELS = {
    "majority": "majority class",
    "tfidf": "TF-IDF + logistic regression",
    "head_only": "head only (backbone frozen)",
    "lora": "LoRA recipe",
    "lora_all_linear": "LoRA, all linear layers",
    "full": "full fine-tuning",
}


# ---------------------------------------------------------------- measuring

# ---------------------------------------------------------------- the runs

def _split(cfg: RunConfig):
    """The run's data (train / validation / test) and where it came from."""
    from .data import load_imdb

    return load_imdb(cfg)


def _data_row(data, source: str) -> dict:
    """Where the data came from and the size of each split."""
    return {"source": source, **{split: len(rows) for split, rows in data.items()}}


def _accuracy_row(test_labels, test_preds, val_accuracy: float) -> dict:
    """Test accuracy and F1 (scikit-learn) and the validation accuracy, rounded."""
    from .metrics import classification_metrics

    test = classification_metrics(test_labels, test_preds)
    return {"test_accuracy": round(test["accuracy"], 4), "test_f1": round(test["f1"], 4),
            "validation_accuracy": round(float(val_accuracy), 4)}


def run_majority(cfg: RunConfig) -> dict:
    """Predict the training split's most frequent label for every review (scikit-learn's DummyClassifier)."""
    import joblib
    from sklearn.dummy import DummyClassifier

    data, source = _split(cfg)
    start = time.perf_counter()
    model = DummyClassifier(strategy="most_frequent").fit(np.zeros((len(data["train"]), 1)), data["train"]["label"])
    train_time = time.perf_counter() - start

    def predict(split: str) -> np.ndarray:
        """The majority label for every review of `split` (the classifier looks at no feature)."""
        return model.predict(np.zeros((len(data[split]), 1)))

    val_accuracy = np.mean(predict("validation") == np.asarray(data["validation"]["label"]))
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out / "majority.joblib")
    return {**_accuracy_row(data["test"]["label"], predict("test"), val_accuracy),
            "trainable_params": 0, "train_time_s": round(train_time, 3),
            "disk_bytes": folder_bytes(out / "majority.joblib"), "saved": "majority.joblib (the label)",
            "data": _data_row(data, source),
            "settings": {"predicts": int(model.classes_[np.argmax(model.class_prior_)])}}


def tfidf_pipeline(C: float = 1.0, seed: int = 0):
    """TF-IDF of words and word pairs (seen in 2+ reviews, log-scaled counts) + logistic regression."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline

    return make_pipeline(TfidfVectorizer(ngram_range=(1, 2), min_df=2, sublinear_tf=True),
                         LogisticRegression(C=C, max_iter=1000, random_state=seed))


def run_tfidf(cfg: RunConfig) -> dict:
    """TF-IDF + logistic regression: fit on train for each C in TFIDF_C, keep the best on validation, test once."""
    import joblib

    data, source = _split(cfg)
    start = time.perf_counter()
    fitted = {C: tfidf_pipeline(C, cfg.seed).fit(data["train"]["text"], data["train"]["label"]) for C in TFIDF_C}
    train_time = time.perf_counter() - start
    val_scores = {C: p.score(data["validation"]["text"], data["validation"]["label"]) for C, p in fitted.items()}
    best_C = max(val_scores, key=val_scores.get)
    model = fitted[best_C]
    out = Path(cfg.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, out / "tfidf.joblib")
    logreg = model[-1]
    return {**_accuracy_row(data["test"]["label"], model.predict(data["test"]["text"]), val_scores[best_C]),
            "trainable_params": int(logreg.coef_.size + logreg.intercept_.size),
            "train_time_s": round(train_time, 3), "disk_bytes": folder_bytes(out / "tfidf.joblib"),
            "saved": "tfidf.joblib (vocabulary, IDF weights, coefficients)", "data": _data_row(data, source),
            "settings": {"C": best_C, "C_tried": list(TFIDF_C), "ngram_range": [1, 2], "min_df": 2,
                         "features": len(model[0].vocabulary_),
                         "validation_accuracy_by_C": {str(C): round(s, 4) for C, s in val_scores.items()}}}


def freeze_except_head(model: torch.nn.Module) -> list[str]:
    """Freeze every weight but the classification head's (`HEAD_MODULES`); return the head's module names."""
    from .model import head_modules

    head = head_modules(model)
    for name, param in model.named_parameters():
        param.requires_grad = any(part in head for part in name.split("."))
    return head


def all_linear_targets(model: torch.nn.Module) -> list[str]:
    """LoRA targets for every Linear layer outside the head (which is trained in full anyway).

    Short names (`query`, `lin1`) where they are unambiguous; where the head has a layer of the
    same name (BERT's `pooler.dense`), the last two parts (`intermediate.dense`, `output.dense`).
    """
    from .model import head_modules

    head = set(head_modules(model))
    linear = [n.split(".") for n, m in model.named_modules() if isinstance(m, torch.nn.Linear)]
    in_head = [parts for parts in linear if head & set(parts)]
    clash = {parts[-1] for parts in in_head}
    return sorted({".".join(parts[-2:]) if parts[-1] in clash else parts[-1]
                   for parts in linear if parts not in in_head})


def train_and_test(model, tokenizer, data, cfg: RunConfig) -> dict:
    """Train `model` with the recipe's Trainer (best epoch on validation), then test once; checkpoints removed."""
    from .training import build_trainer, tokenize, train_then_test

    tokenized = tokenize(data, tokenizer, cfg.max_length)
    trainer = build_trainer(model, tokenizer, tokenized, cfg)
    start = time.perf_counter()
    _, test = train_then_test(trainer, tokenized["test"])
    train_time = time.perf_counter() - start - test["test_runtime"]
    evals = [h for h in trainer.state.log_history if "eval_accuracy" in h]
    best = max(evals, key=lambda h: h["eval_accuracy"]) if evals else trainer.evaluate()
    shutil.rmtree(Path(cfg.output_dir) / "checkpoints", ignore_errors=True)
    return {"test_accuracy": round(test["test_accuracy"], 4), "test_f1": round(test["test_f1"], 4),
            "validation_accuracy": round(best["eval_accuracy"], 4), "best_epoch": best.get("epoch"),
            "train_time_s": round(train_time, 2)}


def _load(cfg: RunConfig):
    """Tokenizer and backbone (fresh head) of `cfg.model`, without the load report."""
    from .model import load_backbone, load_tokenizer

    with quiet_transformers():
        return load_tokenizer(cfg.model, cfg.max_length), load_backbone(cfg.model)


def run_head_only(cfg: RunConfig) -> dict:
    """Freeze the backbone, train only the head with the recipe's Trainer and learning rate."""
    from safetensors.torch import save_file

    from .model import count_parameters

    data, source = _split(cfg)
    tokenizer, model = _load(cfg)
    head = freeze_except_head(model)
    trainable, total = count_parameters(model)
    result = train_and_test(model, tokenizer, data, cfg)
    weights = Path(cfg.output_dir) / "head.safetensors"
    save_file({n: p.detach().contiguous() for n, p in model.named_parameters() if p.requires_grad}, weights)
    return {**result, "trainable_params": trainable, "model_params": total, "disk_bytes": folder_bytes(weights),
            "saved": "head.safetensors (the head's weights; the backbone is the public checkpoint)",
            "data": _data_row(data, source),
            "settings": {"trained_modules": head, "lr": cfg.lr}}


def run_lora(cfg: RunConfig, all_linear: bool = False) -> dict:
    """The LoRA recipe (`utils.training.run_training`), on its targets or on every Linear layer outside the head."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from .model import resolve_model_path
    from .training import run_training

    if all_linear:  # the layer names only: a skeleton on the meta device costs no memory
        with quiet_transformers(), torch.device("meta"):
            config = AutoConfig.from_pretrained(resolve_model_path(cfg.model), num_labels=2)
            targets = all_linear_targets(AutoModelForSequenceClassification.from_config(config))
        cfg = dataclasses.replace(cfg, target_modules=targets)
    with quiet_transformers():
        metrics = run_training(cfg, log=lambda _: None)
    out = Path(cfg.output_dir)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)
    adapter = [out / "adapter" / "adapter_model.safetensors", out / "adapter" / "adapter_config.json"]
    return {"test_accuracy": metrics["test_accuracy"], "test_f1": metrics["test_f1"],
            "validation_accuracy": metrics["validation"]["eval_accuracy"],
            "best_epoch": metrics["validation"]["epoch"], "train_time_s": metrics["train_runtime_s"],
            "trainable_params": metrics["trainable_params"], "disk_bytes": folder_bytes(*adapter),
            "saved": "adapter_model.safetensors + adapter_config.json (LoRA matrices and the head)",
            "data": {"source": metrics["data_source"], "train": metrics["train_size"],
                     "validation": metrics["val_size"], "test": metrics["eval_size"]},
            "settings": {"lora_r": cfg.lora_r, "lora_alpha": cfg.lora_alpha, "lr": cfg.lr,
                         "target_modules": metrics["target_modules"], "precision": metrics["precision"]}}


def run_full(cfg: RunConfig) -> dict:
    """Full fine-tuning: every weight trained with the recipe's Trainer at `cfg.lr` (`run_one` sets `FULL_FT_LR`)."""
    from .model import count_parameters

    data, source = _split(cfg)
    tokenizer, model = _load(cfg)
    trainable, total = count_parameters(model)
    result = train_and_test(model, tokenizer, data, cfg)
    folder = Path(cfg.output_dir) / "model"
    model.save_pretrained(folder)
    return {**result, "trainable_params": trainable, "model_params": total,
            "disk_bytes": folder_bytes(*[p for p in folder.iterdir() if p.suffix in (".safetensors", ".json")]),
            "saved": "model.safetensors + config.json (every weight, float32)", "data": _data_row(data, source),
            "settings": {"lr": cfg.lr}}


RUNNERS = {"majority": run_majority, "tfidf": run_tfidf, "head_only": run_head_only, "lora": run_lora,
           "lora_all_linear": lambda cfg: run_lora(cfg, all_linear=True), "full": run_full}


def backbone_size(name: str) -> int:
    """Parameters of the plain backbone with its 2-label head (counted on the meta device, no weights loaded)."""
    from transformers import AutoConfig, AutoModelForSequenceClassification

    from .model import resolve_model_path

    with quiet_transformers(), torch.device("meta"):
        config = AutoConfig.from_pretrained(resolve_model_path(name), num_labels=2)
        return sum(p.numel() for p in AutoModelForSequenceClassification.from_config(config).parameters())


def run_one(name: str, cfg: RunConfig, work_dir: str | Path | None = None, full_lr: float = FULL_FT_LR) -> dict:
    """Run one of RUNS on `cfg`'s split and measure it; its files go to `work_dir/name` (default `<output_dir>-experiments`).

    Returns one row: accuracies, trainable parameters (and their share of the backbone's), training
    time, peak memory and the bytes to keep, with the settings used.
    """
    from .training import train_device

    if name not in RUNNERS:
        raise SetupError(f"Unknown run {name!r}: choose from {', '.join(RUNS)}.")
    run_cfg = dataclasses.replace(cfg, output_dir=str(Path(work_dir or f"{cfg.output_dir}-experiments") / name),
                                  lr=full_lr if name == "full" else cfg.lr)
    shutil.rmtree(run_cfg.output_dir, ignore_errors=True)  # a finished earlier run would be reused otherwise
    device = torch.device(train_device(cfg.use_cpu))
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    before = current_memory_mb(device)
    reset_peak_memory(device)
    start = time.perf_counter()
    row = RUNNERS[name](run_cfg)
    wall = time.perf_counter() - start
    peak = peak_memory_mb(device)
    total = None if name in ("majority", "tfidf") else row.pop("model_params", None) or backbone_size(cfg.model)
    return {
        "run": name, "label": RUN_LABELS[name], **row,
        "model_params": total,
        "trainable_share": None if total is None else round(row["trainable_params"] / total, 6),
        "peak_memory_mb": None if peak is None else round(peak, 1),
        "memory_before_mb": None if before is None else round(before, 1),
        "memory_measure": "CUDA max_memory_allocated" if device.type == "cuda" else "peak resident memory (RSS)",
        "wall_s": round(wall, 2), "device": device.type,
        "config": {k: v for k, v in dataclasses.asdict(run_cfg).items() if k != "extra"},
    }


def _child(conn, threads: int, args: tuple) -> None:
    """The body of `run_isolated`'s process: run one experiment and send back its row (or its error)."""
    torch.set_num_threads(threads)
    try:
        conn.send(("row", run_one(*args)))
    except Exception as exc:  # noqa: BLE001 - handed to the parent, which raises it
        conn.send(("error", exc))


def run_isolated(name: str, cfg: RunConfig, work_dir: str | Path | None = None, full_lr: float = FULL_FT_LR,
                 threads: int | None = None) -> dict:
    """`run_one` in a fresh Python process (spawned), so that its peak memory is its own."""
    context = multiprocessing.get_context("spawn")
    parent, child = context.Pipe(duplex=False)
    process = context.Process(target=_child, args=(child, threads or torch.get_num_threads(),
                                                   (name, cfg, work_dir, full_lr)))
    process.start()
    child.close()
    try:
        kind, value = parent.recv()
    except EOFError:  # the process died without answering (killed, out of memory)
        process.join()
        raise SetupError(f"The {name!r} run stopped without a result (exit code {process.exitcode}); "
                         "out of memory? Try a smaller --batch-size or --max-length.") from None
    process.join()
    if kind == "error":
        raise value
    return value


# ---------------------------------------------------------------- the whole table

def run_experiments(cfg: RunConfig, runs=DEFAULT_RUNS, ranks=RANKS, work_dir: str | Path | None = None,
                    full_lr: float = FULL_FT_LR, isolate: bool = True, previous: dict | None = None,
                    command: str = "", log=print) -> dict:
    """Run `runs` and the rank sweep over `ranks` on `cfg`'s split; the results (merged into `previous`)."""
    work = Path(work_dir or f"outputs/experiments-{cfg.profile}")
    started = time.perf_counter()
    results = previous or {"model": cfg.model, "data_dir": cfg.data_dir, "runs": {}, "sweep": None, "commands": []}
    if (results["model"], results["data_dir"]) != (cfg.model, cfg.data_dir):
        raise SetupError(f"The results to merge into were measured with model {results['model']!r} and data "
                         f"{results['data_dir']!r}, not {cfg.model!r} / {cfg.data_dir!r}: write to another --out.")
    run = run_isolated if isolate else run_one
    kwargs = {"threads": torch.get_num_threads()} if isolate else {}
    entry = {"command": command, "started": dt.datetime.now().isoformat(timespec="seconds"),
             "machine": machine_info()}
    for name in runs:
        log(f"--- {RUN_LABELS[name]} ({name})")
        row = run(name, cfg, work, full_lr, **kwargs)
        results["runs"][name] = {**row, "command": command}
        log(f"    test accuracy {row['test_accuracy']}, {row['train_time_s']} s, peak {row['peak_memory_mb']} MB")
    if ranks:
        points = []
        for r in ranks:
            alpha = max(1, round(r * cfg.lora_alpha / cfg.lora_r))  # alpha/r kept: the same scale at every rank
            log(f"--- rank sweep: r={r}, alpha={alpha}")
            point = run("lora", dataclasses.replace(cfg, lora_r=r, lora_alpha=alpha), work / f"sweep-r{r}",
                        full_lr, **kwargs)
            points.append({k: point[k] for k in ("test_accuracy", "validation_accuracy", "trainable_params",
                                                 "trainable_share", "train_time_s", "peak_memory_mb", "disk_bytes")}
                          | {"lora_r": r, "lora_alpha": alpha})
        config = {k: v for k, v in dataclasses.asdict(cfg).items() if k not in ("extra", "lora_r", "lora_alpha")}
        old = results.get("sweep")
        if old and old["config"] == config:  # same settings: add (or replace) these ranks
            points = sorted({p["lora_r"]: p for p in old["points"] + points}.values(), key=lambda p: p["lora_r"])
        results["sweep"] = {"config": config, "alpha_over_r": cfg.lora_alpha / cfg.lora_r, "points": points,
                            "command": command}
    entry["wall_s"] = round(time.perf_counter() - started, 1)
    entry["load_average_end"] = load_average()
    results["commands"].append(entry)
    return results


def load_results(path: str | Path) -> dict:
    """A results file written by `python -m utils.experiments`; SetupError saying how to make it if missing."""
    path = Path(path)
    if not path.is_file():
        raise SetupError(f"No results file at {path}: make it with `python -m utils.experiments --out {path}` "
                         "(see the module's docstring for the options).")
    return json.loads(path.read_text())


def describe_setup(row: dict) -> str:
    """The model and data behind a result row, in a few words: `model, train/validation/test reviews, max length`."""
    data, config = row.get("data") or {}, row["config"]
    counts = [data.get(k, config.get(c)) for k, c in (("train", "train_size"), ("validation", "val_size"),
                                                       ("test", "eval_size"))]
    sizes = "/".join("all" if n is None else f"{n:,}" for n in counts)
    if row.get("run") in ("majority", "tfidf"):  # no neural network: the backbone and max length play no part
        return f"scikit-learn, {config['profile']} profile, {sizes} reviews"
    return f"{Path(config['model']).name}, {config['profile']} profile, {sizes} reviews, max length {config['max_length']}"


def experiment_table(rows) -> pd.DataFrame:
    """The comparison table of result rows (from `run_one` or a results file): one line per run."""
    frame = pd.DataFrame([{
        "run": r["label"],
        "test accuracy": r["test_accuracy"],
        "validation accuracy": r["validation_accuracy"],
        "trainable parameters": r["trainable_params"],
        "share of the model": r.get("trainable_share"),
        "training time (s)": r["train_time_s"],
        "peak memory (MB)": r.get("peak_memory_mb"),
        "size on disk (MB)": None if r.get("disk_bytes") is None else round(r["disk_bytes"] / 1e6, 3),
        "source": r.get("source", ""),
        "model and data": describe_setup(r) if "config" in r else "",
    } for r in rows])
    return frame.set_index("run")


# ---------------------------------------------------------------- command line

def _names(text: str, allowed, kind: str, cast=str) -> list:
    """A comma-separated list of `allowed` values ('none' or '' for none)."""
    if text.strip().lower() in ("", "none"):
        return []
    items = [cast(t.strip()) for t in text.split(",") if t.strip()]
    bad = [t for t in items if allowed is not None and t not in allowed]
    if bad:
        raise SetupError(f"Unknown {kind} {bad}: choose from {', '.join(map(str, allowed))} (or 'none').")
    return items


CONFIG_OPTIONS = ("profile", "model", "data_dir", "train_size", "eval_size", "val_size", "max_length", "epochs",
                  "batch_size", "lr", "seed")  # RunConfig's fields this command takes (utils.config)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; settings left out come from the profile (or LORA_* variables)."""
    p = OneLineParser(prog="python -m utils.experiments", description=__doc__.split("\n")[0])
    add_config_arguments(p, CONFIG_OPTIONS, lr="learning rate of the LoRA and head-only runs")
    p.add_argument("--runs", default=",".join(DEFAULT_RUNS),
                   help=f"comma-separated, from {','.join(RUNS)}, or none (default: all but full; "
                        "full fine-tuning runs only when named here)")
    p.add_argument("--ranks", default=",".join(map(str, RANKS)), help="LoRA ranks of the sweep, or none")
    p.add_argument("--full-lr", type=float, default=FULL_FT_LR, help="learning rate of full fine-tuning (5e-5)")
    p.add_argument("--out", help="results JSON (default: results/experiments-<profile>.json)")
    p.add_argument("--merge", action="store_true", help="keep the other entries of an existing --out file")
    p.add_argument("--work-dir", help="where each run's files go (default: outputs/experiments-<profile>)")
    p.add_argument("--in-process", action="store_true",
                   help="run everything in this process (faster to start; peak memory then includes earlier runs)")
    p.add_argument("--threads", type=int, help="torch threads (default: one per usable core)")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run the experiments, write the results JSON, print the table."""
    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    runs = _names(args.runs, RUNS, "run")
    ranks = _names(args.ranks, None, "rank", int)
    if any(r < 1 for r in ranks):
        raise SetupError("--ranks must be positive integers, e.g. 1,2,4,8.")
    torch.set_num_threads(args.threads) if args.threads else set_threads()
    cfg = resolve_config(**{name: getattr(args, name) for name in CONFIG_OPTIONS})
    out = Path(args.out or f"results/experiments-{cfg.profile}.json")
    previous = load_results(out) if args.merge and out.is_file() else None
    print(cfg.table(), flush=True)
    if "full" not in runs:
        print("Full fine-tuning not run: name it in --runs (e.g. --runs full) to run it.", flush=True)
    command = shlex.join(["python", "-m", "utils.experiments", *argv])
    results = run_experiments(cfg, runs, ranks, args.work_dir, args.full_lr, not args.in_process, previous, command)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(shown_paths(results), indent=2, default=str) + "\n")  # no path of this machine
    if results["runs"]:
        print(experiment_table(results["runs"].values()).to_string())
    if results["sweep"]:
        print(pd.DataFrame(results["sweep"]["points"]).to_string(index=False))
    print(f"Results written to {out}")
    return 0


if __name__ == "__main__":
    run_cli(main)
