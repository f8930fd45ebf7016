"""Each lesson's "What you should see" table, read from `results/lessonNN.json`, with where every column came from.

A results file holds one lesson's expected figures, one column per profile, and each column's
provenance: the command that measured it, the machine, the model (the stand-in encoder is named as
such), the date; or, for figures not measured here, the published source they cite. Lessons show
the table once and refer to it; their cells never repeat a number.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

RESULTS_DIR = Path(__file__).resolve().parent.parent / "results"
PROVENANCE_KEYS = ("model", "command", "machine", "date", "source", "note")


def load_results(lesson: str) -> dict:
    """The parsed `results/lesson<lesson>.json` (lesson "03" reads lesson03.json)."""
    path = RESULTS_DIR / f"lesson{lesson}.json"
    if not path.is_file():
        raise FileNotFoundError(f"No results file {path.name} in {RESULTS_DIR}: the lesson's table lives there.")
    return json.loads(path.read_text())


def expected_table(lesson: str) -> pd.DataFrame:
    """The figures as a table: one row per figure, one column per profile ("-": not given for that profile)."""
    results = load_results(lesson)
    columns = list(results["columns"])
    rows = {row["what"]: [row.get(c, "-") for c in columns] for row in results["rows"]}
    return pd.DataFrame.from_dict(rows, orient="index", columns=columns)


def provenance(lesson: str) -> str:
    """One line per column: what model, command and machine its figures come from."""
    lines = []
    for column, source in load_results(lesson)["columns"].items():
        parts = [f"{key}: {source[key]}" for key in PROVENANCE_KEYS if source.get(key)]
        lines.append(f"{column}: " + "; ".join(parts))
    return "\n".join(lines)


def what_you_should_see(lesson: str) -> pd.DataFrame:
    """Print where the figures come from and return the lesson's table (Jupyter shows it)."""
    print(provenance(lesson))
    return expected_table(lesson)
