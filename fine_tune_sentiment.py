"""Fine-tune DistilBERT with LoRA into an IMDB sentiment classifier, in one command.

    python fine_tune_sentiment.py                    # gpu profile on a GPU, cpu profile otherwise
    python fine_tune_sentiment.py --profile smoke    # tiny offline model and data: seconds
    python fine_tune_sentiment.py --model PATH --data-dir DIR --train-size 2000

Each step lives in `utils/` and is taught in the notebooks: data (01), LoRA (02), training (03),
evaluation (04), inference (05); lesson 06 runs it on a small LLM (--model a decoder).
"""

from __future__ import annotations

import argparse

from utils.config import OneLineParser, add_config_arguments, resolve_config, run_cli, set_threads

EXAMPLES = ["This movie was absolutely fantastic!", "I was really disappointed by this film."]
# Every setting of utils.config.RunConfig but lesson 06's decoder (the script trains the one --model names).
OPTIONS = ("profile", "model", "data_dir", "train_size", "eval_size", "val_size", "max_length", "epochs",
           "batch_size", "lr", "lora_r", "lora_alpha", "lora_dropout", "target_modules", "seed", "use_cpu",
           "output_dir")


def build_parser() -> argparse.ArgumentParser:
    """The script's options: RunConfig's fields (type and help declared there), and --bundle."""
    p = OneLineParser(description=__doc__.split("\n")[0])
    add_config_arguments(p, OPTIONS)
    p.add_argument("--bundle", help="a room bundle (python -m utils.bundle DIR): its model and IMDB instead of "
                                    "the Hub's (default: LORA_BUNDLE)")
    return p


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; any option left out comes from the profile (or LORA_* variables)."""
    return build_parser().parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Train, evaluate, save, and predict the two example sentences."""
    args = vars(parse_args(argv))
    set_threads()
    cfg = resolve_config(args.pop("profile"), **args)
    print(cfg.table(), flush=True)

    from accelerate import PartialState  # heavy imports after the table is shown
    from utils.predict import SentimentPredictor
    from utils.training import TEST_KEYS, run_training

    metrics = run_training(cfg)
    if not PartialState().is_main_process:  # torchrun / accelerate launch: the first process reports
        return 0
    print(f"Final evaluation results: { {k: metrics[k] for k in TEST_KEYS} }")  # the test split, once
    print(f"Adapter and metrics.json saved in {cfg.output_dir}")

    predictor = SentimentPredictor.from_pretrained(f"{cfg.output_dir}/adapter", base_model=cfg.model)
    for text in EXAMPLES:
        print(f"{text!r}: {predictor(text)}")
    return 0


if __name__ == "__main__":
    run_cli(main)
