"""Plumbing every other module may use: the one-line error type, this machine in words, files and folders.

It imports nothing from `utils`, so any module can import it without a circle.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import psutil
import torch


class SetupError(RuntimeError):
    """A problem the user can fix (missing files, no network, bad input); the message says how."""


# --- this machine -------------------------------------------------------------------------------

def usable_cores() -> int:
    """The CPU cores this process may run on (its affinity where the OS tells, else every core)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def cpu_has_native_bf16() -> bool:
    """True on CPUs that compute bf16 in hardware (AVX512-BF16 or AMX); elsewhere bf16 is emulated, slowly."""
    return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())


def load_average() -> list[float] | None:
    """The 1, 5 and 15-minute load averages (None on Windows, which has none)."""
    return [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None


def installed(name: str) -> str:
    """The installed version of the package `name`, or "not installed"."""
    try:
        return version(name)
    except PackageNotFoundError:
        return "not installed"


def cpu_name() -> str:
    """The CPU's model name (from /proc/cpuinfo on Linux), else what `platform` says."""
    cpu = platform.processor() or platform.machine()
    if Path("/proc/cpuinfo").is_file():
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        cpu = names[0] if names else cpu
    return cpu


def machine_info() -> dict:
    """The machine a measurement ran on: CPU model, cores, torch threads, GPU, library versions, load."""
    return {
        "cpu": cpu_name(), "cpu_cores": os.cpu_count(), "usable_cores": usable_cores(),
        "torch_threads": torch.get_num_threads(), "cpu_native_bf16": cpu_has_native_bf16(),
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "platform": platform.platform(), "python": platform.python_version(),
        **{name: installed(name) for name in ("torch", "transformers", "peft", "scikit-learn")},
        "load_average": load_average(),
    }


def describe_machine(info: dict) -> str:
    """`machine_info()` in one line: CPU, cores, torch version and threads, native bf16, load."""
    return (f"{info['cpu']}, {info['cpu_cores']} CPUs, torch {info['torch']}, {info['torch_threads']} threads, "
            f"native bf16: {info['cpu_native_bf16']}, load average {info['load_average']}")


def describe_device(device: str, detail: bool = False) -> str:
    """The training device in a few words: the GPU's name, `mps`, or `cpu xN` (N torch threads).

    With `detail` (the readiness check): `cuda (<GPU>)`, `mps (Apple GPU)`, or the CPU's usable cores
    and whether it computes bf16 in hardware.
    """
    if device == "cuda":
        name = torch.cuda.get_device_name()
        return f"cuda ({name})" if detail else name
    if device == "mps":
        return "mps (Apple GPU)" if detail else "mps"
    if not detail:
        return f"cpu x{torch.get_num_threads()}"
    bf16 = "native bf16 (AVX512-BF16 or AMX)" if cpu_has_native_bf16() else "no native bf16"
    return f"cpu ({usable_cores()} cores, {bf16})"


# --- memory ------------------------------------------------------------------------------------

def reset_peak_memory(device: torch.device) -> None:
    """Start counting peak memory afresh (CUDA allocator; on Linux, the process's peak RSS)."""
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    elif Path("/proc/self/clear_refs").exists():
        try:
            Path("/proc/self/clear_refs").write_text("5")
        except OSError:
            pass  # not allowed here: the figure is then the peak so far


def peak_memory_mb(device: torch.device) -> float | None:
    """Peak memory since the last reset, in MiB: CUDA's max_memory_allocated, else the process's peak resident memory.

    psutil gives the peak working set on Windows (`peak_wset`); on Linux and macOS, where psutil has
    no peak, `resource.getrusage` does (ru_maxrss: KiB on Linux, bytes on macOS). None where neither can.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated() / 2**20
    peak = getattr(psutil.Process().memory_info(), "peak_wset", None)  # Windows only
    if peak is not None:
        return peak / 2**20
    try:
        import resource  # Unix only: imported here so that the module loads on Windows
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def current_memory_mb(device: torch.device) -> float:
    """Memory in use now, in MiB: CUDA's allocated memory on a GPU, else the process's resident memory (psutil)."""
    if device.type == "cuda":
        return torch.cuda.memory_allocated() / 2**20
    return psutil.Process().memory_info().rss / 2**20


# --- files and folders --------------------------------------------------------------------------

def write_json(path: str | Path, data: dict) -> None:
    """Write `data` as JSON atomically (a reader never sees half a file)."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{os.getpid()}.tmp")  # one per process: torchrun starts several
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)


def read_json(path: str | Path) -> dict:
    """A JSON file's contents; {} when it is missing or unreadable."""
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return {}


def folder_bytes(*paths: str | Path) -> int:
    """Total size of these files (folders: every file inside, at any depth)."""
    total = 0
    for path in map(Path, paths):
        files = [p for p in path.rglob("*") if p.is_file()] if path.is_dir() else [path]
        total += sum(p.stat().st_size for p in files)
    return total


def folder_mb(*paths: str | Path) -> float:
    """`folder_bytes(*paths)` in MB (10**6 bytes)."""
    return folder_bytes(*paths) / 1e6


# --- quiet libraries ----------------------------------------------------------------------------

@contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' warnings and progress bars inside the block (restored afterwards).

    Loading a base model for an adapter prints a "LOAD REPORT" listing the classification head as
    MISSING: the head comes from the adapter, so that warning is noise there (`utils.adapter.load_adapter`
    checks the head itself).
    """
    from transformers.utils import logging as hf_logging

    level, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            yield
    finally:
        hf_logging.set_verbosity(level)
        if bars:
            hf_logging.enable_progress_bar()
