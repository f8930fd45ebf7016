"""utils.config: profile resolution, the printed table, and failing fast without the Hub."""

import pytest

from utils import config, hub
from utils.config import PROFILES, SetupError, resolve_config
from utils.hub import check_hub


def test_argument_beats_environment_beats_profile(monkeypatch):
    monkeypatch.setenv("LORA_PROFILE", "cpu")
    monkeypatch.setenv("LORA_EPOCHS", "3")
    assert resolve_config().profile == "cpu"
    assert resolve_config().epochs == 3.0
    cfg = resolve_config("smoke", epochs=5, lr=None)
    assert (cfg.profile, cfg.epochs, cfg.lr) == ("smoke", 5, PROFILES["smoke"]["lr"])


def test_automatic_profile_is_cpu_without_cuda(monkeypatch):
    monkeypatch.delenv("LORA_PROFILE", raising=False)
    monkeypatch.setattr(config.torch.cuda, "is_available", lambda: False)
    assert resolve_config().profile == "cpu"
    monkeypatch.setattr(config.torch.cuda, "is_available", lambda: True)
    assert resolve_config().profile == "gpu"


def test_environment_lists_and_numbers_are_parsed(monkeypatch):
    monkeypatch.setenv("LORA_TARGET_MODULES", "q_lin, v_lin")
    monkeypatch.setenv("LORA_TRAIN_SIZE", "100")
    cfg = resolve_config("cpu")
    assert cfg.target_modules == ["q_lin", "v_lin"] and cfg.train_size == 100


def test_unknown_profile_says_which_exist():
    with pytest.raises(SetupError, match="gpu, cpu, smoke"):
        resolve_config("laptop")


def test_table_lists_every_setting():
    table = resolve_config("smoke").table()
    for name in ("profile", "model", "max_length", "lora_r", "output_dir"):
        assert name in table
    assert "smoke-distilbert" in table


def test_hub_reachable_is_false_for_a_closed_port(monkeypatch):
    monkeypatch.setattr(hub, "HUB_HOST", ("127.0.0.1", 1))  # loopback, nothing listens there
    assert hub.hub_reachable(timeout=1) is False


def test_unreachable_hub_fails_fast_with_what_to_do(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: False)
    with pytest.raises(SetupError) as err:
        check_hub("the model 'x'")
    for hint in ("--data-dir", "--model", "--profile smoke", "the model 'x'"):
        assert hint in str(err.value)


def test_offline_mode_skips_the_network_check(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "hub_reachable", lambda timeout=3.0: pytest.fail("network checked"))
    check_hub("anything")


def test_shown_paths_hide_this_machine_s_folders(tmp_path, monkeypatch):
    """Results files name ../shared, ~/.cache and outputs/..., never this machine's absolute folders."""
    from pathlib import Path

    from utils.config import shown_paths

    work = tmp_path / "main"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.setattr(Path, "home", lambda: Path("/home/someone"))
    data = {"cmd": f"python -m utils.experiments --model {tmp_path}/shared/m --out {work}/outputs/r.json",
            "rows": [{"source": "local: /home/someone/.cache/x"}, 3, None], "other": "/opt/data/x"}
    assert shown_paths(data) == {"cmd": "python -m utils.experiments --model ../shared/m --out outputs/r.json",
                                 "rows": [{"source": "local: ~/.cache/x"}, 3, None], "other": "/opt/data/x"}
