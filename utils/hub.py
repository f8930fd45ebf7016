"""The Hugging Face Hub, its local cache and offline mode: fail within seconds when the Hub does not answer.

`check_hub(what, repo_id, repo_type)` is called before anything is loaded from the Hub: with the Hub
unreachable it switches the process to the cached copy of `repo_id` (HF_HUB_OFFLINE=1) when there
is one, and otherwise raises a one-line SetupError naming the offline ways out.
"""

from __future__ import annotations

import os
import socket
import sys
from pathlib import Path
from urllib.parse import urlsplit

from .system import SetupError

HUB_HOST = ("huggingface.co", 443)
_CACHED_USED: set[str] = set()  # what check_hub took from the cache after it switched this process offline


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE is set: Hugging Face libraries then read only their local cache."""
    return os.environ.get("HF_HUB_OFFLINE", "0").lower() in ("1", "true", "yes", "on")


def hub_host() -> tuple[str, int]:
    """The Hub's host and port: from HF_ENDPOINT when set (a mirror), else huggingface.co:443."""
    endpoint = os.environ.get("HF_ENDPOINT", "").strip()
    if not endpoint:
        return HUB_HOST
    url = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    return url.hostname or HUB_HOST[0], url.port or (80 if url.scheme == "http" else 443)


def hub_reachable(timeout: float = 3.0) -> bool:
    """True if the Hugging Face Hub (or the HF_ENDPOINT mirror) answers a connection within `timeout` seconds."""
    try:
        socket.create_connection(hub_host(), timeout=timeout).close()
        return True
    except OSError:
        return False


def hf_home() -> Path:
    """The Hugging Face cache root, read now from the environment: HF_HOME, else ~/.cache/huggingface."""
    default = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "huggingface"
    return Path(os.environ.get("HF_HOME") or default).expanduser()


def hub_cache_dir() -> Path:
    """Where huggingface_hub caches downloaded repositories (HF_HUB_CACHE, else HF_HOME/hub).

    Read now: huggingface_hub reads it once, at import, and a test or a notebook may set HF_HOME later.
    """
    cache = os.environ.get("HF_HUB_CACHE") or os.environ.get("HUGGINGFACE_HUB_CACHE")
    return Path(cache).expanduser() if cache else hf_home() / "hub"


def datasets_cache_dir() -> Path:
    """Where `datasets` keeps the datasets it has prepared (HF_DATASETS_CACHE, else HF_HOME/datasets)."""
    cache = os.environ.get("HF_DATASETS_CACHE")
    return Path(cache).expanduser() if cache else hf_home() / "datasets"


def in_hf_cache(repo_id: str, repo_type: str = "model") -> bool:
    """True if an earlier run left `repo_id` in the local Hugging Face cache, complete enough to load offline.

    A model needs its config.json (`try_to_load_from_cache`) and weights in the huggingface_hub cache;
    a dataset needs the copy that `datasets` prepared (what `load_dataset` reads when HF_HUB_OFFLINE=1).
    """
    if repo_type == "dataset":
        from datasets.naming import camelcase_to_snakecase

        *namespace, name = repo_id.split("/")
        folder = datasets_cache_dir() / "___".join([*namespace, camelcase_to_snakecase(name)])
        return any(folder.glob("*/*/*/dataset_info.json"))
    from huggingface_hub import try_to_load_from_cache

    try:
        config_file = try_to_load_from_cache(repo_id, "config.json", cache_dir=hub_cache_dir(), repo_type=repo_type)
    except ValueError:  # not a valid repository name: nothing of it can be cached
        return False
    if not isinstance(config_file, str):  # None (never fetched) or a marker that it does not exist
        return False
    snapshot = Path(config_file).parent
    return any(snapshot.glob("*.safetensors")) or any(snapshot.glob("pytorch_model*.bin"))


def use_hub_cache(what: str) -> None:
    """Switch this process to HF_HUB_OFFLINE=1 and say so, once per `what`.

    Setting the variable is not enough once the libraries are imported: huggingface_hub reads it
    once, into `huggingface_hub.constants.HF_HUB_OFFLINE` (which transformers' and its own
    `is_offline_mode()` return), and `datasets.config` copies that at its import. Both are set here
    too; nothing else is written.
    """
    if what not in _CACHED_USED:
        print(f"Hub unreachable: using the cached copy of {what}", flush=True)
    _CACHED_USED.add(what)
    os.environ["HF_HUB_OFFLINE"] = "1"
    from huggingface_hub import constants

    constants.HF_HUB_OFFLINE = True
    datasets_config = sys.modules.get("datasets.config")
    if datasets_config is not None:
        datasets_config.HF_HUB_OFFLINE = datasets_config.HF_DATASETS_OFFLINE = True


def check_hub(what: str, repo_id: str | None = None, repo_type: str = "model") -> None:
    """Fail fast, with what to do instead, when `what` (repository `repo_id`) must come from an unreachable Hub.

    With HF_HUB_OFFLINE=1 set by the user nothing is checked: the libraries then use what an
    earlier run cached. When the Hub (HF_ENDPOINT, if set) does not answer but `repo_id` is in the
    local cache, the process switches to HF_HUB_OFFLINE=1 and uses it; what comes after is then
    looked for in the cache only. Without `repo_id` nothing can be taken from the cache.
    """
    went_offline = bool(_CACHED_USED)  # switched this process offline already: no second network check
    if not went_offline and (hub_offline() or hub_reachable()):
        return
    if repo_id and in_hf_cache(repo_id, repo_type):
        use_hub_cache(what)
        return
    raise hub_error(what)


def hub_error(what: str) -> SetupError:
    """The error for `what` that had to come from the Hub and could not."""
    host, port = hub_host()
    return SetupError(
        f"Cannot get {what} from the Hugging Face Hub ({host}:{port}): no connection, no such repository, "
        f"or no complete copy in the local cache {hf_home()}. "
        "Work offline instead: --bundle DIR / LORA_BUNDLE=DIR (a room bundle made by python -m utils.bundle), "
        "--data-dir DIR (IMDB as parquet/csv or the aclImdb folder), "
        "--model PATH (a local checkpoint), or --profile smoke (tiny offline model and data; "
        "LORA_PROFILE=smoke in notebooks)."
    )
