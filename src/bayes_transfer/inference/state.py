"""Saving and resuming training states: one design for every long loop (downstream fits, pre-training, SWAG).

A loop given a state path and ``checkpoint_every > 0`` saves its whole state (model, optimiser, batch-stream
position, random-number generators, what it has kept so far, its log) every ``checkpoint_every`` steps under
a *key* (the settings that produced it). Run again after a kill, it finds the state with its own key and
continues from the saved step, with the same numbers on the CPU as an uninterrupted run; a state of other
settings (a stale file from before a config change) is ignored. A finished downstream fit
(:func:`bayes_transfer.inference.loop.fit`) leaves its result in its state file, so a rerun of a job that
did several fits skips the finished ones; the job removes the files once its outputs are written.

A downstream fit is told where to save by a :class:`Checkpointing` (path, interval, caller's key).
Stages that run several fits through :func:`bayes_transfer.inference.methods.run_method` (an ensemble is M
fits) hand them their paths with :func:`resumable`: the k-th fit in the block saves to
``<prefix>.fit<k>.ckpt`` (:func:`state_path`); the order of fits in a job is deterministic.
"""

from __future__ import annotations

import contextlib
import contextvars
import glob
import logging
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from bayes_transfer.io import save_torch

log = logging.getLogger("bayes_transfer.inference.state")


def save_state(obj: Any, path: str | os.PathLike) -> None:
    """Save a state atomically (:func:`bayes_transfer.io.save_torch`): a kill never leaves a truncated one."""
    save_torch(obj, path)


def load_state(path: str | os.PathLike) -> dict:
    """A state written by :func:`save_state` (this library's own file: it pickles RNG states, so it is
    read with ``weights_only=False``)."""
    return torch.load(path, map_location="cpu", weights_only=False)


def load_matching_state(path: str | os.PathLike, key: Mapping) -> dict | None:
    """The state at ``path`` if it exists and was saved by a run with this ``key`` (its settings); a state of
    other settings (a stale file from before a config change) is ignored with a log line."""
    path = Path(path)
    if not path.is_file():
        return None
    state = load_state(path)
    if state.get("key") != key:
        log.warning("ignoring %s: it was saved with other settings", path)
        return None
    return state


def rng_states(device: torch.device) -> dict:
    """The global random-number generators' states (torch CPU and CUDA, numpy, Python)."""
    out = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        out["cuda"] = torch.cuda.get_rng_state(device)
    return out


def set_rng_states(states: Mapping, device: torch.device) -> None:
    torch.set_rng_state(states["torch"])
    np.random.set_state(states["numpy"])
    random.setstate(states["python"])
    if device.type == "cuda" and "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


@dataclass(frozen=True)
class Checkpointing:
    """Where one fit saves its state (``path``), how often (every ``every`` steps, > 0) and the part of its
    key only the caller knows (data settings, input files); the fit adds its own settings to the key."""

    path: Path
    every: int
    key: Mapping = field(default_factory=dict)

    def __post_init__(self) -> None:
        if int(self.every) <= 0:
            raise ValueError(f"checkpoint interval must be > 0, got {self.every!r}")
        object.__setattr__(self, "path", Path(self.path))


def state_path(prefix: str | os.PathLike, k: int = 0) -> Path:
    """The state file of the k-th fit of a job whose outputs start with ``prefix``: ``<prefix>.fit<k>.ckpt``."""
    return Path(f"{os.fspath(prefix)}.fit{int(k)}.ckpt")


def remove_checkpoints(prefix: str | os.PathLike) -> None:
    """Delete the state files ``<prefix>.*.ckpt`` (every fit's, also of prefixes that start with
    ``prefix.``), once the job's outputs are written, and the temporary files of state writes that a kill
    interrupted (``.<prefix>.*.ckpt.<pid>.<random>.tmp``, bayes_transfer.io: a requeued or cancelled job is
    stopped wherever it is, also inside a save)."""
    prefix = Path(prefix)
    name = glob.escape(prefix.name)
    for pattern in (f"{name}.*.ckpt", f".{name}.*.tmp"):
        for path in prefix.parent.glob(pattern):
            path.unlink(missing_ok=True)


@dataclass
class _Block:
    prefix: str
    every: int
    fits: int = 0


_BLOCK: contextvars.ContextVar[_Block | None] = contextvars.ContextVar("bayes_transfer_resumable", default=None)


@contextlib.contextmanager
def resumable(prefix: str | os.PathLike, checkpoint_every: int):
    """Give the fits run inside this block (that are not given a :class:`Checkpointing` of their own) the
    state paths ``<prefix>.fit<k>.ckpt``, k = 0, 1, ... in the order they run, saved every
    ``checkpoint_every`` steps. ``checkpoint_every <= 0`` makes the block a no-op. The files stay when the
    block raises (or the process is killed); call :func:`remove_checkpoints` once the job's outputs are written.
    """
    every = int(checkpoint_every or 0)
    token = _BLOCK.set(_Block(os.fspath(prefix), every) if every > 0 else None)
    try:
        yield
    finally:
        _BLOCK.reset(token)


def next_checkpointing() -> Checkpointing | None:
    """The :class:`Checkpointing` of the next fit of the enclosing :func:`resumable` block (None outside one)."""
    block = _BLOCK.get()
    if block is None:
        return None
    path = state_path(block.prefix, block.fits)
    block.fits += 1
    return Checkpointing(path, block.every)
