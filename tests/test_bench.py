"""The speed benchmark (utils.bench): a smoke-sized run on the CPU, and the padding arithmetic behind it."""

import json
import sys
from pathlib import Path

import pytest
import torch

from utils import bench
from utils.config import PROFILES


def test_shipped_lengths_are_the_imdb_training_set():
    """The histogram holds 25,000 reviews of plausible token counts (median in the low hundreds)."""
    lengths, source = bench.load_lengths()
    assert len(lengths) == 25_000 and "imdb_token_lengths.json" in source
    ordered = sorted(lengths)
    assert ordered[0] >= 3 and 150 < ordered[12_500] < 300 and ordered[-1] > 512


def test_lengths_from_a_data_dir():
    """--data-dir smoke tokenizes the shipped review set's training split with the smoke tokenizer."""
    lengths, source = bench.load_lengths("smoke")
    assert len(lengths) == 160 and min(lengths) > 2 and "smoke" in source


def test_grouping_by_length_cuts_padding():
    """Batches from length grouping need far less padding than random ones (real IMDB lengths, max 512)."""
    lengths = [min(n, 512) for n in bench.load_lengths()[0]]

    def padded_fraction(batches, pad_to_max):
        real = sum(sum(b) for b in batches)
        return 1 - real / sum(len(b) * bench.batch_width(b, 512, pad_to_max, None) for b in batches)

    random_order = bench.sample_batches(lengths, 16, 200, grouped=False, seed=0)
    grouped = bench.sample_batches(lengths, 16, 200, grouped=True, seed=0)
    assert all(len(b) == 16 for b in random_order + grouped)
    assert padded_fraction(random_order, True) > 0.4  # IMDB's median review is about 220 tokens
    assert padded_fraction(random_order, False) > 0.2  # dynamic padding alone still pads to the longest
    assert padded_fraction(grouped, False) < 0.05


def test_batch_width():
    """Pad to max length, to the longest review, or to the longest rounded up to a multiple."""
    assert bench.batch_width([10, 30], 512, True, None) == 512
    assert bench.batch_width([10, 30], 512, False, None) == 30
    assert bench.batch_width([10, 30], 512, False, 8) == 32
    assert bench.batch_width([10, 510], 512, False, 64) == 512


@pytest.fixture
def keep_threads():
    """Give torch its thread count back after a test that changes it."""
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("native_bf16", [False, True])
def test_smoke_run_writes_both_recipes(tmp_path, keep_threads, monkeypatch, native_bf16):
    """A tiny model, a few CPU steps: the JSON has both recipes, the ratio, and sane figures.

    On a CPU the project recipe runs in fp32, and in bf16 only where the CPU has it natively
    (faked both ways here); otherwise the report says why bf16 was skipped.
    """
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bench, "cpu_has_native_bf16", lambda: native_bf16)
    out = tmp_path / "bench.json"
    args = bench.parse_args(["--model-size", "tiny", "--steps", "2", "--warmup", "1", "--max-length", "256",
                             "--threads", "1", "--output", str(out)])
    report = bench.run(args)
    assert report["device"] == "cpu, 1 torch threads"
    assert json.loads(out.read_text()) == report
    naive, project = report["naive"], report["project"]
    assert naive["padding"] == "max_length" and naive["batch_size"] == 16 and naive["precision"] == "fp32"
    for recipe in (naive, project):
        assert recipe["samples_per_s"] > 0 and recipe["real_tokens_per_s"] > 0 and recipe["peak_memory_mb"] > 0
        assert 0 <= recipe["padded_fraction"] <= 1
        assert recipe["achieved_gflops"] == pytest.approx(recipe["train_gflop"] / recipe["seconds"], rel=0.05)
        peak = report["matmul_peak"]["gflops"][recipe["precision"]]
        assert recipe["peak_fraction"] == pytest.approx(recipe["achieved_gflops"] / peak, abs=0.002)
    assert report["matmul_peak"]["shape"] == "4096x128 @ 128x256"  # the tiny model's feed-forward layer
    assert project["padded_fraction"] < naive["padded_fraction"]
    ratio = project["samples_per_s"] / naive["samples_per_s"]
    assert report["ratio"]["samples_per_s"] == pytest.approx(ratio, rel=0.01)
    text = bench.format_report(report)
    assert "naive" in text and "x samples/s" in text
    assert project["precision"] == "fp32" and report["cpu_native_bf16"] is native_bf16
    if native_bf16:
        bf16 = report["project_bf16"]
        assert bf16["precision"] == "bf16" and bf16["samples_per_s"] > 0 and bf16["process_cpu_s"] > 0
        assert bf16["padded_fraction"] == project["padded_fraction"]  # same batches, other precision
        assert report["bf16_vs_fp32"]["process_cpu_s"] == pytest.approx(
            bf16["process_cpu_s"] / project["process_cpu_s"], rel=0.02)
        assert "CPU bf16 / fp32" in text and "project bf16" in text
    else:
        assert "no native bf16" in report["project_bf16"]["skipped"] and "bf16_vs_fp32" not in report
        assert "CPU bf16: skipped" in text and "project bf16" not in text


def test_flop_count_of_distilbert_base():
    """About 89 MFLOP per token forward at 256 tokens (linear layers 85, attention 5), twice that per LoRA step."""
    from transformers import DistilBertConfig

    config = DistilBertConfig()
    per_token = bench.forward_flop(config, 1, 256) / 256
    linear = 6 * 2 * (4 * 768 * 768 + 2 * 768 * 3072)  # q, k, v, out, and the feed-forward pair, 6 layers
    assert 88e6 < per_token < 91e6 and per_token > linear
    assert bench.train_step_flop(config, 16, 256) == 2 * bench.forward_flop(config, 16, 256)


def test_cpu_recipes():
    """On a CPU: the project recipe in fp32, and its bf16 twin only when asked for."""
    assert set(bench.recipes(False, None)) == {"naive", "project"}
    both = bench.recipes(False, None, cpu_bf16=True)
    assert both["project"]["precision"] == "fp32" and both["project_bf16"]["precision"] == "bf16"
    assert {k: v for k, v in both["project_bf16"].items() if k != "precision"} == \
        {k: v for k, v in both["project"].items() if k != "precision"}
    assert both["project"]["batch_size"] == PROFILES["cpu"]["batch_size"] and both["project"]["pad_multiple"] is None


UNIX_ONLY = {"resource", "fcntl", "pwd", "grp", "termios", "tty", "pty", "posix", "crypt", "spwd", "syslog", "nis"}


def test_no_unix_only_module_at_top_level():
    """Windows has no `resource`, `fcntl`, `pwd`...: no utils module, nor the script, imports one at its top level."""
    import ast

    root = Path(__file__).resolve().parents[1]
    files = sorted((root / "utils").glob("*.py")) + [root / "fine_tune_sentiment.py"]
    found = []
    for path in files:
        for node in ast.parse(path.read_text()).body:  # module level only: imports inside functions are fine
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            found += [f"{path.name}: {n}" for n in names if n.split(".")[0] in UNIX_ONLY]
    assert len(files) > 5 and found == []


def test_peak_memory_without_resource(monkeypatch):
    """Where `resource` is missing (Windows) the CPU peak memory is psutil's peak working set, else None."""
    import psutil

    from utils import system

    real = psutil.Process().memory_info()
    monkeypatch.setitem(sys.modules, "resource", None)  # `import resource` now raises ImportError
    windows = type("pmem", (), {"rss": real.rss, "peak_wset": 123 * 2**20})()
    monkeypatch.setattr(system.psutil.Process, "memory_info", lambda self: windows)
    assert bench.peak_memory_mb(torch.device("cpu")) == 123.0
    monkeypatch.setattr(system.psutil.Process, "memory_info", lambda self: real)
    assert bench.peak_memory_mb(torch.device("cpu")) is None  # neither counter: no figure rather than a wrong one
    monkeypatch.undo()
    assert bench.peak_memory_mb(torch.device("cpu")) > 0  # this machine's own counters
    if sys.platform != "win32":
        assert not hasattr(psutil.Process().memory_info(), "peak_wset")  # psutil has no peak here: resource gives it


@pytest.mark.parametrize("capability, precision", [((7, 5), "fp16"), ((8, 0), "bf16"), ((9, 0), "bf16")])
def test_gpu_recipe(monkeypatch, capability, precision):
    """On a GPU (faked here): bf16 from Ampere on, fp16 before (a T4 is 7.5), padding to 8, the gpu profile's batch."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *device: capability)
    naive, project = bench.recipes(True, None).values()
    assert (naive["precision"], naive["batch_size"], naive["pad_to_max"], naive["tuned"]) == ("fp32", 16, True, False)
    assert project["precision"] == precision and project["pad_multiple"] == 8 and project["tuned"]
    assert project["batch_size"] == PROFILES["gpu"]["batch_size"]
    assert bench.recipes(True, 128)["project"]["batch_size"] == 128


def test_bad_options_are_refused():
    """Nonsense sizes stop with argparse's one-line error."""
    with pytest.raises(SystemExit):
        bench.parse_args(["--steps", "0"])
    with pytest.raises(SystemExit):
        bench.parse_args(["--max-length", "1024"])


def test_the_bench_model_follows_the_run_s_backbone():
    assert bench.model_size_for("smoke-distilbert") == "tiny"
    assert bench.model_size_for("distilbert-base-uncased") == bench.model_size_for("/models/minilm") == "base"


def test_save_model_writes_a_folder_that_a_run_loads(tmp_path, capsys):
    """--save-model: the random model and its tokenizer, loadable as a backbone (to time a whole run at its size)."""
    from utils.model import load_backbone, load_tokenizer

    assert bench.main(["--save-model", str(tmp_path / "m"), "--model-size", "tiny"]) == 0
    assert f"--model {tmp_path / 'm'} --data-dir <IMDB>" in capsys.readouterr().out
    backbone, tokenizer = load_backbone(str(tmp_path / "m")), load_tokenizer(str(tmp_path / "m"))
    assert backbone.config.dim == bench.random_model("tiny").config.dim and len(tokenizer) <= backbone.config.vocab_size


def test_save_model_refuses_a_larger_tokenizer_and_an_existing_folder(tmp_path):
    from utils.config import SMOKE_DECODER, SetupError

    with pytest.raises(SetupError, match="more than the model's"):
        bench.save_model(str(tmp_path / "m"), "tiny", SMOKE_DECODER)
    (tmp_path / "taken").mkdir()
    with pytest.raises(SetupError, match="already exists: choose a new folder"):
        bench.save_model(str(tmp_path / "taken"), "tiny", None)
