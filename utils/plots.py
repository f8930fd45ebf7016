"""Plots the lessons share (matplotlib; each function draws on the axes it is given or on new ones)."""

from __future__ import annotations

import matplotlib.pyplot as plt


def plot_loss_curves(log_history: list[dict], ax=None):
    """Training loss per logging step and evaluation loss per epoch, from `trainer.state.log_history`."""
    ax = ax or plt.subplots(figsize=(6, 3.5))[1]
    train = [(h["epoch"], h["loss"]) for h in log_history if "loss" in h]
    evals = [(h["epoch"], h["eval_loss"]) for h in log_history if "eval_loss" in h]
    if train:
        ax.plot(*zip(*train), label="training loss")
    if evals:
        ax.plot(*zip(*evals), "o-", label="evaluation loss")
    ax.set(xlabel="epoch", ylabel="cross-entropy loss", title="Loss during training")
    ax.legend()
    return ax
