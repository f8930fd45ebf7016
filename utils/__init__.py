"""Shared code of the LoRA sentiment lessons and `fine_tune_sentiment.py`, one module per concern.

What the lessons use, in the order they meet them:
    config        the run's settings: three profiles of one recipe (RunConfig, resolve_config), room bundles read
    data          IMDB from the Hub, a local folder or the shipped smoke set; train/validation/test splits
    model         the backbone and its tokenizer, the smoke models, LoRA around it (add_lora, lora_config)
    metrics       accuracy, F1, precision, recall through `evaluate` (classification_metrics: its offline module)
    training      tokenizing, the Trainer's settings, the whole training run (run_training)
    predict       the predictor (SentimentPredictor), input checks, latency
    widget        the interactive demo on the predictor
    plots         the lessons' figures
    results       the "What you should see" tables from results/

The command-line tools (`python -m utils.<tool>`):
    bench         training speed of the naive recipe against the project's, GFLOPS against a matmul peak
    experiments   baselines, LoRA, full fine-tuning and a rank sweep on one split
    bundle        makes a room bundle (model, decoder, IMDB) for working with no network
    check         is this machine ready for the lessons?
    llm           lesson 06's small decoder: prompts, label-word scoring, an offline SmolLM2 copy, measurements

The plumbing:
    adapter       the adapter's files: save_adapter, load_adapter and its checks, run_info.json, merge_adapter
    runs          settings checked before anything is written, one run per output folder (filelock), staging
    hub           the Hugging Face Hub, its cache and offline mode: fail fast when the Hub does not answer
    system        SetupError, this machine in words, memory, JSON and folder sizes, quiet_transformers

Imports go one way, downwards: system <- hub <- config <- data, model <- adapter, runs <- training
<- predict and the tools; no module imports one that imports it back.
"""
