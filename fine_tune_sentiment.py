"""Fine-tune DistilBERT with LoRA into an IMDB sentiment classifier, in one command.

    python fine_tune_sentiment.py                    # gpu profile on a GPU, cpu profile otherwise
    python fine_tune_sentiment.py --profile smoke    # tiny offline model and data: seconds
    python fine_tune_sentiment.py --model PATH --data-dir DIR --train-size 2000

Each step lives in `utils/` and is taught in the notebooks: data (01), LoRA (02), training (03),
evaluation (04), inference (05); lesson 06 runs it on a small LLM (--model a decoder).
"""

from __future__ import annotations

import argparse

from utils.config import PROFILES, resolve_config, run_cli, set_threads

EXAMPLES = ["This movie was absolutely fantastic!", "I was really disappointed by this film."]


class OneLineParser(argparse.ArgumentParser):
    """An ArgumentParser whose errors are one line, like every other bad input of the script."""

    def error(self, message: str):
        """Exit with `Error: <what is wrong>` (argparse would print the whole usage first)."""
        self.exit(2, f"Error: {message} (python {self.prog} --help lists the options)\n")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options; any option left out comes from the profile (or LORA_* variables)."""
    p = OneLineParser(description=__doc__.split("\n")[0])
    p.add_argument("--profile", choices=list(PROFILES), help="gpu, cpu or smoke (default: LORA_PROFILE, else gpu if CUDA else cpu)")
    p.add_argument("--model", help="Hub name or local checkpoint folder (default: distilbert-base-uncased)")
    p.add_argument("--data-dir", help="local IMDB: train/test parquet or csv (text,label), or the aclImdb folder")
    p.add_argument("--bundle", help="a room bundle (python -m utils.bundle DIR): its model and IMDB instead of "
                                    "the Hub's (default: LORA_BUNDLE)")
    p.add_argument("--train-size", type=int, help="seeded, stratified subset of the training reviews")
    p.add_argument("--eval-size", type=int, help="seeded, stratified subset of the test reviews")
    p.add_argument("--val-size", type=int, help="validation reviews carved from the training split (pick the best epoch)")
    p.add_argument("--max-length", type=int, help="tokens kept per review")
    p.add_argument("--epochs", type=float)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--lr", type=float, help="learning rate (LoRA wants ~10x a full fine-tune's)")
    p.add_argument("--lora-r", type=int, help="rank of the LoRA update")
    p.add_argument("--lora-alpha", type=int, help="scale of the LoRA update (alpha / r)")
    p.add_argument("--lora-dropout", type=float)
    p.add_argument("--target-modules", type=lambda s: [m.strip() for m in s.split(",") if m.strip()],
                   help="comma-separated module names to adapt (default: from the architecture)")
    p.add_argument("--seed", type=int)
    p.add_argument("--output-dir", help="where checkpoints, adapter/ and metrics.json go")
    return p.parse_args(argv)


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
