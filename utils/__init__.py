"""Shared helpers for the LoRA sentiment lessons and `fine_tune_sentiment.py`.

Modules, in the order the lessons meet them:
config (profiles), data (IMDB), model (backbone + LoRA), metrics, training (Trainer),
predict (the predictor), widget (the interactive demo), plots, bench (speed benchmark).
"""
