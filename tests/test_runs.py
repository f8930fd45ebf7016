"""utils.runs and the guards around a run: every row of issue 10's "Why" list, on the smoke profile.

Nothing of a finished run is lost: bad settings, data or models stop before the output folder is
touched, a second run into the same folder stops at once, a rerun trains in staging/ and replaces
the finished run only when it has finished; adapters carry no path of the machine that trained them.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import pandas as pd
import pytest
import torch

from utils import runs
from utils.config import SetupError, resolve_config
from utils.data import load_local_imdb, load_smoke_reviews
from utils.model import add_lora, build_smoke_model, load_backbone
from utils.predict import SentimentPredictor, load_adapter
from utils.runs import HOLDER_NAME, LOCK_NAME, output_lock, publish, staging_dir, validate_config
from utils.training import run_training

ROOT = Path(__file__).resolve().parents[1]
QUIET = dict(log=lambda *args: None)
SMOKE = {k: getattr(resolve_config("smoke"), k) for k in ("lora_r", "epochs")}  # the finished run's settings


def snapshot(folder: Path) -> dict[str, str]:
    """Every file under `folder` (relative path) with the SHA-256 of its bytes."""
    return {str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.fixture
def finished(smoke_run, tmp_path) -> Path:
    """A copy of the session's finished smoke run that a test may rerun into."""
    return Path(shutil.copytree(smoke_run, tmp_path / "run"))


def one_line(exc: pytest.ExceptionInfo) -> str:
    """The error's message, checked to be a single line."""
    message = str(exc.value)
    assert "\n" not in message
    return message


# --- 1. data loss: nothing is written before everything is checked ----------------------------

@pytest.mark.parametrize("override, match", [
    (dict(data_dir="/nonexistent"), "Data directory"),
    (dict(batch_size=0), "--batch-size 0"),
    (dict(max_length=100_000), "at most 512 tokens"),
    (dict(model="./no-such-model"), "does not exist"),
])
def test_a_rerun_that_fails_checks_leaves_the_finished_run_byte_for_byte(finished, override, match):
    before = snapshot(finished)
    with pytest.raises(SetupError, match=match):
        run_training(resolve_config("smoke", output_dir=str(finished), **override), **QUIET)
    assert snapshot(finished) == before
    assert sorted(p.name for p in finished.iterdir()) == ["adapter", "checkpoints", "metrics.json", "run_config.json"]


def test_a_rerun_killed_while_training_leaves_the_finished_run_unchanged(finished, monkeypatch):
    before = snapshot(finished)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt  # as if the user pressed Ctrl-C (or the process was killed) mid-training

    monkeypatch.setattr("transformers.Trainer.train", killed)
    with pytest.raises(KeyboardInterrupt):
        run_training(resolve_config("smoke", lora_r=2, output_dir=str(finished)), **QUIET)
    after = snapshot(finished)
    assert {k: v for k, v in after.items() if not k.startswith("staging")} == before
    assert json.loads((finished / "staging" / "run_config.json").read_text())["lora_r"] == 2  # resumable there
    assert not (finished / LOCK_NAME).exists()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the finished run's folder is consistent: no warning
        predictor = SentimentPredictor.from_pretrained(finished / "adapter")
    assert predictor.model.peft_config["default"].r == SMOKE["lora_r"]  # still the finished run's adapter


def test_a_rerun_replaces_the_finished_run_only_once_it_has_finished(finished, monkeypatch):
    seen = {}
    real_publish = runs.publish

    def spy(out):
        """Before the swap: the old run is intact and the new one is complete in staging/."""
        stage = staging_dir(out)
        if (stage / "metrics.json").is_file():
            seen["old"] = json.loads((Path(out) / "metrics.json").read_text())["epochs"]
            seen["new"] = sorted(p.name for p in stage.iterdir())
        return real_publish(out)

    monkeypatch.setattr("utils.training.publish", spy)
    run_training(resolve_config("smoke", epochs=1, output_dir=str(finished)), **QUIET)
    assert seen == {"old": SMOKE["epochs"], "new": ["adapter", "checkpoints", "metrics.json", "run_config.json"]}
    assert json.loads((finished / "metrics.json").read_text())["epochs"] == 1
    assert json.loads((finished / "run_config.json").read_text())["epochs"] == 1
    assert sorted(p.name for p in finished.iterdir()) == ["adapter", "checkpoints", "metrics.json", "run_config.json"]


def test_an_interrupted_swap_is_completed_by_the_next_call(tmp_path, monkeypatch):
    out = tmp_path / "run"
    for folder, tag in ((out, "old"), (out / "staging", "new")):
        (folder / "adapter").mkdir(parents=True)
        (folder / "adapter" / "weights").write_text(tag)
        for name in ("metrics.json", "run_config.json"):
            (folder / name).write_text(tag)
    real_replace, calls = os.replace, []

    def crash_on_third(src, dst):
        calls.append(src)
        if len(calls) == 3:
            raise OSError("killed mid-swap")
        real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_on_third)
    with pytest.raises(OSError):
        publish(out)
    monkeypatch.setattr(os, "replace", real_replace)
    assert not (out / "metrics.json").exists()  # a half-swapped folder never claims to be finished
    assert publish(out) is True
    assert {p.name: (p.read_text() if p.is_file() else None) for p in out.iterdir()} == {
        "adapter": None, "metrics.json": "new", "run_config.json": "new"}
    assert (out / "adapter" / "weights").read_text() == "new"
    assert publish(out) is False  # nothing left to swap


def test_an_adapter_older_than_its_run_folder_gets_a_warning(finished):
    settings = json.loads((finished / "run_config.json").read_text())
    (finished / "run_config.json").write_text(json.dumps({**settings, "lora_r": 2}))
    with pytest.warns(UserWarning, match=rf"lora_r=2.* r={SMOKE['lora_r']}, .*: they come from different runs"):
        load_adapter(finished / "adapter")
    (finished / "metrics.json").unlink()  # the layout an interrupted run left before staging/ existed
    with pytest.warns(UserWarning, match="did not finish"):
        load_adapter(finished / "adapter")


def test_a_crash_between_peft_s_two_files_is_not_blamed_on_the_backbone(finished, tmp_path):
    """Weights of an r=2 save next to the adapter_config.json of the r=4 one."""
    other = tmp_path / "r2"
    model = add_lora(load_backbone("smoke-distilbert"), resolve_config("smoke", lora_r=2))
    model.save_pretrained(other)
    shutil.copy(other / "adapter_model.safetensors", finished / "adapter" / "adapter_model.safetensors")
    with pytest.raises(SetupError, match=f"come from different saves .*r={SMOKE['lora_r']}.*r=2.*interrupted") as info:
        load_adapter(finished / "adapter")
    assert "another backbone" not in one_line(info)


# --- 2. one run per folder ---------------------------------------------------------------------

def test_a_second_concurrent_run_stops_at_once_naming_the_first(tmp_path):
    """A run holds the folder (here: this process, through output_lock); a second run into it stops at once."""
    out = tmp_path / "run"
    with output_lock(out):
        start = time.monotonic()
        with pytest.raises(SetupError) as info:
            run_training(resolve_config("smoke", output_dir=str(out)), **QUIET)
        took = time.monotonic() - start
        assert (out / LOCK_NAME).exists(), "the second run must not touch the first one's lock"
    last = one_line(info)
    assert last.startswith(f"Another run is using {out} (pid {os.getpid()} on ")
    assert took < 5, f"the second run took {took:.0f} s to stop"
    assert not (out / "metrics.json").exists()


def test_the_lock_is_released_and_a_crashed_run_s_lock_is_taken_over(tmp_path):
    out = tmp_path / "run"
    with output_lock(out) as owner:
        assert owner and json.loads((out / HOLDER_NAME).read_text())["pid"] == os.getpid()
        with pytest.raises(SetupError, match=f"Another run is using .* \\(pid {os.getpid()} on "):
            with output_lock(out):
                pass
    assert not out.exists(), "a run that wrote nothing leaves nothing behind"

    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    out.mkdir()
    (out / LOCK_NAME).write_text("")  # what a crashed run leaves: its lock file (the OS freed the lock) and note
    (out / HOLDER_NAME).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "started": "earlier"}))
    with output_lock(out):  # the process that left this lock is gone: taken over
        assert json.loads((out / HOLDER_NAME).read_text())["pid"] == os.getpid()
    assert not (out / LOCK_NAME).exists() and not (out / HOLDER_NAME).exists()


def test_torchrun_processes_share_their_run_s_lock(tmp_path, monkeypatch):
    out = tmp_path / "run"
    run = {"RANK": "0", "TORCHELASTIC_RUN_ID": "abc", "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": "29500"}
    for key, value in run.items():
        monkeypatch.setenv(key, value)
    with output_lock(out) as owner:
        assert owner
        monkeypatch.setenv("RANK", "1")  # another process of the same run
        with output_lock(out) as owner:
            assert not owner
        monkeypatch.setenv("MASTER_PORT", "29501")  # a process of another torchrun run
        with pytest.raises(SetupError, match="Another run is using"):
            with output_lock(out):
                pass
        monkeypatch.setenv("RANK", "0")
    assert not (out / LOCK_NAME).exists()


# --- 3. one line for every bad input -----------------------------------------------------------

@pytest.mark.parametrize("override, match", [
    (dict(train_size=0), "--train-size 0 is out of range"),
    (dict(train_size=-5), "--train-size -5 is out of range"),
    (dict(eval_size=1), "--eval-size 1 is out of range"),
    (dict(batch_size=0), "--batch-size 0 is out of range"),
    (dict(lr=-1.0), "--lr -1.0 is out of range"),
    (dict(lr=float("nan")), "--lr nan is out of range"),
    (dict(max_length=0), "--max-length 0 is out of range"),
    (dict(max_length=1), "--max-length 1 is out of range"),
    (dict(epochs=0), "--epochs 0 is out of range"),
    (dict(lora_r=0), "--lora-r 0 is out of range"),
    (dict(lora_dropout=1.0), "--lora-dropout 1.0 is out of range"),
    (dict(seed=-1), "--seed -1 is out of range"),
])
def test_out_of_range_settings_are_one_line_and_write_nothing(tmp_path, override, match):
    out = tmp_path / "run"
    cfg = resolve_config("smoke", output_dir=str(out), **override)
    with pytest.raises(SetupError, match=match) as info:
        validate_config(cfg)
    assert "LORA_" in one_line(info) and "target-modules" not in str(info.value)
    with pytest.raises(SetupError, match=match):
        run_training(cfg, **QUIET)
    assert not out.exists()


def test_max_length_beyond_the_position_embeddings_is_refused_before_training(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(SetupError, match="--max-length 100000 .* at most 512 tokens: smoke-distilbert has 512") as info:
        run_training(resolve_config("smoke", max_length=100_000, output_dir=str(out)), **QUIET)
    one_line(info)
    assert not out.exists()


def test_an_output_dir_that_is_a_file_or_not_writable_is_one_line(tmp_path):
    afile = tmp_path / "notes.txt"
    afile.write_text("keep me")
    with pytest.raises(SetupError, match="is a file, not a folder"):
        run_training(resolve_config("smoke", output_dir=str(afile)), **QUIET)
    assert afile.read_text() == "keep me"
    with pytest.raises(SetupError, match="Cannot write in --output-dir") as info:
        with output_lock(afile / "run"):  # a folder under a file cannot be made
            pass
    one_line(info)
    if sys.platform.startswith("linux") and Path("/sys").is_dir():  # read-only even for root
        with pytest.raises(SetupError, match="Cannot write in --output-dir /sys/lora-out"):
            with output_lock("/sys/lora-out"):
                pass


def test_environment_and_argument_typos_are_one_line():
    env = {**os.environ, "LORA_EPOCHS": "abc"}
    done = subprocess.run([sys.executable, "fine_tune_sentiment.py", "--profile", "smoke"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and done.stderr.strip() == "Error: LORA_EPOCHS='abc' is not a number: fix or unset that variable."
    done = subprocess.run([sys.executable, "fine_tune_sentiment.py", "--batch-size", "two"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and len(done.stderr.strip().splitlines()) == 1
    assert done.stderr.startswith("Error: argument --batch-size: invalid int value: 'two'")


def _imdb_dir(tmp_path: Path, train: pd.DataFrame, fmt: str = "csv") -> Path:
    """A data folder with `train` and the smoke test split, as csv or parquet."""
    folder = tmp_path / f"data-{fmt}"
    folder.mkdir()
    test = load_smoke_reviews()["test"].to_pandas()
    for name, df in (("train", train), ("test", test)):
        df.to_csv(folder / f"{name}.csv", index=False) if fmt == "csv" else df.to_parquet(folder / f"{name}.parquet")
    return folder


@pytest.mark.parametrize("fmt", ["csv", "parquet"])
def test_missing_and_empty_texts_are_dropped_with_the_count(tmp_path, capsys, fmt):
    train = load_smoke_reviews()["train"].to_pandas().head(20)
    train.loc[[1, 4], "text"] = None
    train.loc[7, "text"] = "<br /><br />  "
    train.loc[9, "text"] = "\u200b\u200d\ufeff"  # zero-width characters only
    data = load_local_imdb(_imdb_dir(tmp_path, train, fmt))
    assert len(data["train"]) == 16 and "nan" not in data["train"]["text"]
    assert "dropped 4 of 20 reviews with missing or empty text" in capsys.readouterr().out


def test_a_file_with_only_a_header_or_damaged_is_one_line(tmp_path):
    header_only = _imdb_dir(tmp_path, pd.DataFrame({"text": [], "label": []}))
    with pytest.raises(SetupError, match="has no review with text \\(0 rows\\)"):
        load_local_imdb(header_only)
    damaged = _imdb_dir(tmp_path, load_smoke_reviews()["train"].to_pandas(), "parquet")
    whole = (damaged / "train.parquet").read_bytes()
    (damaged / "train.parquet").write_bytes(whole[: len(whole) // 2])  # a truncated copy
    with pytest.raises(SetupError, match="Cannot read .*train.parquet .*damaged") as info:
        load_local_imdb(damaged)
    one_line(info)


# --- 4. silent or misleading -------------------------------------------------------------------

def test_a_model_folder_with_missing_or_garbage_weights_is_not_blamed_on_the_hub(tmp_path):
    for broken in ("missing", "garbage"):
        folder = tmp_path / broken
        folder.mkdir()
        shutil.copy(build_smoke_model() / "config.json", folder)
        if broken == "garbage":
            (folder / "model.safetensors").write_bytes(b"not weights at all")
        with pytest.raises(SetupError, match="weights .* are missing or damaged") as info:
            load_backbone(str(folder))
        assert "Hub" not in one_line(info)
    only_config = tmp_path / "missing"  # what run_training meets first there: the tokenizer
    with pytest.raises(SetupError, match="No usable tokenizer in the model folder") as info:
        run_training(resolve_config("smoke", model=str(only_config), output_dir=str(tmp_path / "out")))
    assert "Hub" not in one_line(info) and not (tmp_path / "out").exists()


def test_lora_r_0_names_the_rank_not_the_target_modules():
    with pytest.raises(SetupError, match="--lora-r 0 is out of range") as info:
        add_lora(load_backbone("smoke-distilbert"), resolve_config("smoke", lora_r=0))
    assert "target" not in one_line(info)


# --- 5. portable, self-describing adapters -----------------------------------------------------

@pytest.fixture(scope="module")
def local_run(tmp_path_factory) -> tuple[Path, Path]:
    """A finished smoke run on a local copy of the smoke backbone: (run folder, backbone folder)."""
    root = tmp_path_factory.mktemp("local-backbone")
    backbone = Path(shutil.copytree(build_smoke_model(), root / "models" / "tiny-distilbert"))
    out = root / "run"
    run_training(resolve_config("smoke", model=str(backbone), epochs=1, output_dir=str(out)), **QUIET)
    return out, backbone


def test_no_file_in_adapter_holds_a_path_of_this_machine(smoke_run, local_run):
    out, backbone = local_run
    for adapter in (smoke_run / "adapter", out / "adapter"):
        for path in adapter.iterdir():
            text = path.read_bytes().decode("utf-8", errors="replace")
            for machine_path in (str(Path.home()), str(backbone.parent), str(out), "/tmp/", "/root/"):
                assert machine_path not in text, f"{path.name} holds {machine_path}"
    config = json.loads((out / "adapter" / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == "tiny-distilbert"
    info = json.loads((out / "adapter" / "run_info.json").read_text())
    assert info["base_model"] == {"name": "tiny-distilbert", "source": "local", "config": {
        "model_type": "distilbert", "vocab_size": 363, "dim": 128, "n_layers": 2, "n_heads": 4, "hidden_dim": 256,
        "max_position_embeddings": 512}}


def test_an_adapter_trained_on_a_local_backbone_loads_elsewhere_with_base_model(local_run, tmp_path, monkeypatch):
    out, backbone = local_run
    here = SentimentPredictor.from_pretrained(out / "adapter")  # the training machine: found via run_config.json
    adapter = Path(shutil.copytree(out / "adapter", tmp_path / "colleague" / "adapter"))  # the adapter alone
    moved = Path(shutil.copytree(backbone, tmp_path / "elsewhere" / "my-distilbert"))
    with pytest.raises(SetupError, match="local model folder named 'tiny-distilbert' .*base_model=PATH") as info:
        SentimentPredictor.from_pretrained(adapter)
    assert "--model" not in one_line(info)
    there = SentimentPredictor.from_pretrained(adapter, base_model=moved)
    texts = ["A wonderful film.", "Dull and far too long."]
    assert torch.allclose(here.probabilities(texts), there.probabilities(texts), atol=1e-6)
    monkeypatch.setenv("LORA_MODEL", str(moved))
    assert torch.allclose(SentimentPredictor.from_pretrained(adapter).probabilities(texts),
                          there.probabilities(texts), atol=1e-6)


def test_a_base_model_with_other_sizes_is_refused_naming_the_option(local_run, tmp_path):
    from transformers import DistilBertConfig, DistilBertModel

    other = tmp_path / "other"
    DistilBertModel(DistilBertConfig(vocab_size=363, dim=64, n_layers=2, n_heads=4, hidden_dim=128)).save_pretrained(other)
    with pytest.raises(SetupError, match="does not fit the base model .*from base_model=.*dim 128 \\(this model: 64\\)"):
        load_adapter(local_run[0] / "adapter", base_model=other)


def test_standard_loaders_get_the_labels_from_run_info(local_run, monkeypatch):
    from peft import AutoPeftModelForSequenceClassification
    from transformers import pipeline

    adapter = local_run[0] / "adapter"
    info = json.loads((adapter / "run_info.json").read_text())
    labels = {"id2label": {int(k): v for k, v in info["id2label"].items()}, "label2id": info["label2id"]}
    monkeypatch.chdir(local_run[1].parent)  # the base model's folder name, next to it, as on any machine
    model = AutoPeftModelForSequenceClassification.from_pretrained(adapter, **labels)
    assert model.config.id2label == {0: "NEGATIVE", 1: "POSITIVE"}
    classify = pipeline("text-classification", model=str(adapter), model_kwargs=labels)
    assert classify("A wonderful film.", truncation=True)[0]["label"] in ("NEGATIVE", "POSITIVE")


def test_saved_files_are_readable_by_everyone(smoke_run):
    if os.name != "posix":
        pytest.skip("file modes are POSIX")
    modes = {p.name: oct(p.stat().st_mode & 0o777) for p in (smoke_run / "adapter").iterdir()}
    assert set(modes.values()) == {"0o644"}, modes


def test_the_readme_pipeline_example_truncates_long_reviews(smoke_run, tmp_path):
    from transformers import pipeline

    from utils.predict import merge_adapter

    readme = (ROOT / "README.md").read_text()
    calls = [line for line in readme.splitlines() if "pipeline(" in line and "text-classification" in line]
    assert calls and all("truncation=True" in line for line in calls)
    merged = merge_adapter(smoke_run / "adapter", tmp_path / "merged")
    classify = pipeline("text-classification", model=str(merged), truncation=True)
    review = "a long and winding review of a film " * 120  # far over the 512 positions of the model
    assert classify(review)[0]["label"] in ("NEGATIVE", "POSITIVE")


def test_every_option_an_error_message_names_exists_in_the_script():
    import re

    from fine_tune_sentiment import build_parser, parse_args

    script = {flag for action in build_parser()._actions for flag in action.option_strings}
    named = set()
    for module in ("runs", "data", "config", "hub", "model", "adapter", "training"):
        named |= set(re.findall(r"--[a-z][a-z-]+", (ROOT / "utils" / f"{module}.py").read_text()))
    assert named <= script, f"named in messages but not options of the script: {named - script}"
    assert parse_args(["--val-size", "7"]).val_size == 7


def _options_in_errors(path: Path) -> set[str]:
    """The --options named in the text of the SetupError(...) and error(...) calls of a module."""
    import ast
    import re

    named = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Call) and getattr(node.func, "id", getattr(node.func, "attr", "")) in ("SetupError", "error"):
            texts = [n.value for n in ast.walk(node) if isinstance(n, ast.Constant) and isinstance(n.value, str)]
            texts = [re.sub(r"pip [a-z]+ (--[a-z-]+ ?)+", "", t) for t in texts]  # pip's own options
            named |= {m for t in texts for m in re.findall(r"--[a-z][a-z-]+", t)}
    return named


def test_every_option_a_tool_s_error_names_exists_in_that_tool(capsys):
    """`python -m utils.experiments` and `python -m utils.llm measure`: their one-line errors name their own options."""
    import re

    from utils import experiments, llm

    for module, argv in ((experiments, ["--help"]), (llm, ["measure", "--help"])):
        with pytest.raises(SystemExit):
            module.parse_args(argv)
        options = set(re.findall(r"--[a-z][a-z-]+", capsys.readouterr().out))
        named = _options_in_errors(Path(module.__file__))
        assert named and named <= options, f"{module.__name__}: {named - options}"
