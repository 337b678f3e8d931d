"""Provenance: where a number came from.

Every cached artifact and every results file carries :func:`collect` — the commit, whether the tree was
dirty, the device, the library versions, the host's CPU count and the wall time of the stage.
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch

from . import __version__, paths


def git_commit() -> str:
    """``<sha>`` of the project's HEAD, with ``+dirty`` when tracked files differ; ``unknown`` outside git.

    ``POISONCURE_COMMIT`` overrides it, for runs on a copy of a clean checkout that has no ``.git`` (a rented GPU
    machine that receives the working tree only)."""
    env = os.environ.get("POISONCURE_COMMIT")
    if env:
        return env
    root = paths.project_root()
    if root is None:
        return "unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=root, capture_output=True,
                             text=True, timeout=10, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return sha + ("+dirty" if dirty else "")


def device_name(device: torch.device | str | None = None) -> str:
    """Human-readable name of a device: the GPU model, or the CPU with its core count. ``None`` and ``"auto"`` (the
    library's default) name the device it would pick: CUDA when present."""
    dev = torch.device(device) if device not in (None, "auto") else None
    if (dev is None or dev.type == "cuda") and torch.cuda.is_available():
        return torch.cuda.get_device_name(dev)
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"CPU ({cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads)"


def collect(device: torch.device | str | None = None, **extra: Any) -> dict[str, Any]:
    """A provenance record; ``extra`` (profile, parameters, seed, wall time ...) is merged in."""
    record: dict[str, Any] = {
        "commit": git_commit(),
        "poisoncure": __version__,
        "device": device_name(device),
        "torch": torch.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
    }
    record.update(extra)
    return record


def library_versions(names: tuple[str, ...] = ("torch", "torchvision", "numpy", "scipy", "scikit-learn")
                     ) -> dict[str, str]:
    """Installed versions of the libraries whose numerics a result depends on ('not installed' where absent)."""
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for name in names:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = "not installed"
    return out


@contextmanager
def stopwatch() -> Iterator[dict[str, float]]:
    """``with stopwatch() as t: ...`` then ``t["seconds"]`` holds the wall time and ``t["cpu_seconds"]`` the CPU
    time of this process over the block (every thread)."""
    out: dict[str, float] = {}
    start, cpu = time.perf_counter(), time.process_time()
    try:
        yield out
    finally:
        out["seconds"] = time.perf_counter() - start
        out["cpu_seconds"] = time.process_time() - cpu


def machine_load(t: dict[str, float], threads: int, load_start: tuple[float, ...] | None) -> dict[str, Any]:
    """How busy the machine was during a :func:`stopwatch` block ``t``: the 1-minute load average at its start and
    end (Unix only) and the process's CPU time as a share of ``threads`` × wall time. A share well below 1 on a
    CPU run means the work waited for cores: its wall times, and a cost read from them, are inflated."""
    load_end = os.getloadavg() if hasattr(os, "getloadavg") else None
    share = t["cpu_seconds"] / (threads * t["seconds"]) if t.get("seconds") else None
    return {"loadavg_start": None if load_start is None else round(load_start[0], 2),
            "loadavg_end": None if load_end is None else round(load_end[0], 2),
            "cpu_seconds": round(t["cpu_seconds"], 1), "threads": threads,
            "cpu_share": None if share is None else round(share, 3)}


@contextmanager
def stage(stages: dict[str, float], name: str) -> Iterator[None]:
    """Record the wall time of the block in ``stages[name]`` (seconds, two decimals): the per-stage times a result
    file of the runner keeps in its provenance."""
    with stopwatch() as t:
        yield
    stages[name] = round(t["seconds"], 2)
