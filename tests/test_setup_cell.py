"""Every notebook's setup cell: the same in all twelve, and safe to rerun after a Colab runtime restart."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").rglob("*.ipynb"))


def setup_cell(path: Path) -> str:
    """The first code cell of a notebook."""
    cells = json.loads(path.read_text())["cells"]
    return "".join(next(c for c in cells if c["cell_type"] == "code")["source"])


SETUP = setup_cell(NOTEBOOKS[0])


def test_every_notebook_opens_with_the_same_setup_cell():
    assert len(NOTEBOOKS) == 12
    assert all(setup_cell(p) == SETUP for p in NOTEBOOKS), [p.name for p in NOTEBOOKS if setup_cell(p) != SETUP]


@pytest.fixture
def colab(tmp_path, monkeypatch):
    """A folder like Colab's /content after a restart: the clone beside the working folder, no git on the PATH."""
    clone = tmp_path / "lora-sentiment-lessons"
    (clone / "utils").mkdir(parents=True)
    (clone / "utils" / "__init__.py").touch()
    (clone / "requirements.txt").write_text("")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "no-tools"))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the cell prepends the project
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    return clone, calls


def test_setup_after_a_restart_finds_the_clone_and_installs_nothing(colab):
    clone, calls = colab
    (clone / ".installed").touch()  # the first run installed the requirements
    exec(SETUP, {})
    assert Path.cwd() == clone.resolve() and sys.path[0] == str(clone.resolve())
    assert calls == []  # no git clone (the folder exists), no second pip install


def test_setup_installs_once_into_an_existing_clone(colab):
    clone, calls = colab
    exec(SETUP, {})  # a clone whose install never finished: install now, then mark it
    assert len(calls) == 1 and calls[0][1:4] == ["-m", "pip", "install"]
    assert (clone / ".installed").exists() and Path.cwd() == clone.resolve()


def test_setup_in_the_repository_uses_it_as_it_is(monkeypatch):
    calls = []
    monkeypatch.chdir(ROOT / "notebooks")  # Jupyter started in notebooks/
    monkeypatch.setattr(sys, "path", list(sys.path))
    monkeypatch.setattr(subprocess, "run", lambda cmd, **kw: calls.append(cmd))
    exec(SETUP, {})
    assert Path.cwd() == ROOT and calls == []
