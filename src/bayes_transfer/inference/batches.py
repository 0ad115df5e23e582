"""The endless, resumable stream of shuffled training mini-batches every training loop draws from."""

from __future__ import annotations

from collections import deque
from typing import Callable, Iterator, Mapping

import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bayes_transfer.device import RuntimeOptions


class BatchStream:
    """An endless stream of shuffled mini-batches (epochs without replacement, last partial batch dropped).

    Each epoch is ``torch.randperm(n, generator=generator)``. In-memory ``TensorDataset``s are indexed directly
    (fast for the embedded default); other datasets are read by one ``DataLoader`` (the runtime's workers and
    pinned memory) whose batch sampler draws the same epochs, ahead of use when workers prefetch.
    ``pad`` (segmentation: a :class:`~bayes_transfer.data.padding.PadTo`) pads indexed batches (its
    :meth:`batch`) and collates the loader's samples of different sizes (called on a list of samples).
    :meth:`state_dict` / :meth:`load_state_dict` save and restore the position of the last batch *used* (the
    generator's state at the start of its epoch and the offset in it), so a resumed stream yields the same
    batches without reading the skipped ones. With data-loader workers the random augmentations after a resume
    differ from an uninterrupted run's (each worker has its own generator); without workers (the CPU default)
    they come from torch's global generator, which a fit's state includes.
    """

    def __init__(self, dataset: Dataset, batch_size: int, generator: torch.Generator,
                 device: torch.device | str, runtime: RuntimeOptions | None = None, pad=None) -> None:
        self.dataset = dataset
        self.n = len(dataset)
        if self.n == 0:
            raise ValueError("cannot draw mini-batches from an empty dataset")
        self.bs = min(int(batch_size), self.n)
        self.generator = generator
        self.device = torch.device(device)
        self.runtime = runtime or RuntimeOptions()
        self.pad = pad
        self._tensors = (tuple(t.to(self.device) for t in dataset.tensors[:2])
                         if isinstance(dataset, TensorDataset) else None)
        # where the next batch of indices comes from
        self._epoch, self._epoch_state, self._perm, self._pos = -1, None, None, 0
        # the position after the last batch handed out, and those drawn by the loader but not yet handed out
        self._used = {"generator": generator.get_state(), "epoch": -1, "epoch_state": None, "pos": 0}
        self._pending: deque[dict] = deque()
        self._loader_iter = None

    def __iter__(self) -> "BatchStream":
        return self

    def _next_indices(self) -> tuple[Tensor, dict]:
        if self._perm is None or self._pos + self.bs > self.n:
            self._epoch += 1
            self._epoch_state = self.generator.get_state()
            self._perm = torch.randperm(self.n, generator=self.generator)
            self._pos = 0
        idx = self._perm[self._pos:self._pos + self.bs]
        self._pos += self.bs
        return idx, {"epoch": self._epoch, "epoch_state": self._epoch_state, "pos": self._pos}

    def _index_batches(self) -> Iterator[list[int]]:
        """The loader's batch sampler: endless, drawn in the main process, remembered until used."""
        while True:
            idx, position = self._next_indices()
            self._pending.append(position)
            yield idx.tolist()

    def __next__(self) -> tuple[Tensor, Tensor]:
        if self._tensors is not None:
            idx, self._used = self._next_indices()
            x, y = self._tensors
            idx = idx.to(self.device)
            return (x[idx], y[idx]) if self.pad is None else self.pad.batch(x[idx], y[idx])
        if self._loader_iter is None:
            workers = self.runtime.num_workers
            self._loader_iter = iter(DataLoader(
                self.dataset, batch_sampler=_Endless(self._index_batches), num_workers=workers,
                pin_memory=self.runtime.pin_memory, prefetch_factor=4 if workers else None, collate_fn=self.pad,
                # the loader's own seed source: creating it never draws from torch's global generator
                generator=torch.Generator().manual_seed(1_000_003 * (self._epoch + 1) + 17),
            ))
        xb, yb = next(self._loader_iter)
        self._used = self._pending.popleft()
        return xb.to(self.device, non_blocking=True), yb.to(self.device, non_blocking=True)

    def state_dict(self) -> dict:
        return dict(self._used)

    def load_state_dict(self, state: Mapping) -> None:
        self._loader_iter = None
        self._pending.clear()
        self._used = dict(state)
        if state["epoch_state"] is None:  # saved before the first batch
            self._epoch, self._epoch_state, self._perm, self._pos = -1, None, None, 0
            self.generator.set_state(state["generator"])
            return
        self._epoch, self._epoch_state = int(state["epoch"]), state["epoch_state"]
        self.generator.set_state(self._epoch_state)
        self._perm = torch.randperm(self.n, generator=self.generator)
        self._pos = int(state["pos"])


class _Endless:
    """A re-iterable wrapper that DataLoader accepts as ``batch_sampler`` (it has no length)."""

    def __init__(self, make: Callable[[], Iterator[list[int]]]) -> None:
        self.make = make

    def __iter__(self) -> Iterator[list[int]]:
        return self.make()
