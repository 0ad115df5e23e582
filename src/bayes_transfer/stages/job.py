"""What every stage job records and sets: the code version that wrote a result and the CPU thread count."""

from __future__ import annotations

import subprocess
from pathlib import Path

import torch

from bayes_transfer import __version__
from bayes_transfer.device import run_eagerly

__all__ = ["code_version", "set_threads"]


def code_version() -> str:
    """Library version plus the git commit of the working tree (``+dirty`` if modified)."""
    try:
        root = Path(__file__).resolve().parents[2]
        sha = subprocess.run(["git", "-C", str(root), "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no"],
                               capture_output=True, text=True, timeout=5).stdout.strip()
        return f"{__version__}+{sha}{'.dirty' if dirty else ''}" if sha else __version__
    except (OSError, subprocess.SubprocessError):
        return __version__


def set_threads(threads: int | None) -> None:
    """Set torch up for one stage job: ``torch.set_num_threads(threads)`` unless ``threads`` is 0 or None (then
    torch's default stays), and eager mode (:func:`bayes_transfer.device.run_eagerly`: no compiler import on
    the first optimiser call)."""
    run_eagerly()
    if threads:
        torch.set_num_threads(int(threads))
