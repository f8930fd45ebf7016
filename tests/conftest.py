"""Fixtures shared by the unit tests: one smoke training run per test session."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def smoke_run(tmp_path_factory) -> Path:
    """The output folder of a finished smoke run (adapter/, metrics.json), trained once per session (~8 s)."""
    from utils.config import resolve_config
    from utils.training import run_training

    out = tmp_path_factory.mktemp("smoke-run")
    run_training(resolve_config("smoke", output_dir=str(out)), log=lambda *args: None)
    return out
