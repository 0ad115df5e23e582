"""The one place where the compute device is chosen."""

from __future__ import annotations

import os

import torch


def get_device(preference: str | None = None) -> torch.device:
    """Return the device to run on.

    ``preference`` (or the environment variable ``BAYES_TRANSFER_DEVICE``) may be ``"cpu"``,
    ``"cuda"``, ``"cuda:1"``, ``"mps"`` or ``"auto"`` (the default): the first accelerator that is
    available, otherwise the CPU.
    """
    choice = (preference or os.environ.get("BAYES_TRANSFER_DEVICE") or "auto").lower()
    if choice != "auto":
        device = torch.device(choice)
        if device.type == "cuda" and not torch.cuda.is_available():
            raise RuntimeError(f"device {choice!r} was requested but torch sees no CUDA device")
        return device
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")
