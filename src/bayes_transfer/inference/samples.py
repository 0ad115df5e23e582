"""What a downstream fit keeps at its sample steps (the final model alone for SGD), and how it is scored.

A keeper has :meth:`add` (called with the model after a sample step's update), :meth:`result` (the fit's
outputs, as :class:`~bayes_transfer.inference.loop.FitResult` fields), ``num_samples`` and
``state_dict`` / ``load_state_dict`` (part of a resumable fit's state).

* :class:`EvalSetAverage` (classification): each sample's predictive probabilities on every evaluation set,
  averaged online (:class:`~bayes_transfer.inference.bma.BayesianModelAverage`); nothing else is kept.
* :class:`~bayes_transfer.inference.pixel_bma.PixelAverage` (segmentation): each sample's state dict, scored
  at the end by the per-pixel Bayesian model average.
"""

from __future__ import annotations

from pathlib import Path
from typing import Mapping, Protocol

import torch
from torch import Tensor, nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

from bayes_transfer.device import RuntimeOptions
from bayes_transfer.inference.bma import BayesianModelAverage
from bayes_transfer.io import save_torch


class Diverged(RuntimeError):
    """A numerical failure of a chain or an optimisation (recorded as data, not raised to the user)."""


class SampleKeeper(Protocol):
    num_samples: int

    def add(self, model: nn.Module, step: int) -> None: ...

    def result(self, model: nn.Module) -> dict: ...

    def state_dict(self) -> dict: ...

    def load_state_dict(self, state: Mapping) -> None: ...


@torch.no_grad()
def predict_probs(model: nn.Module, dataset: Dataset, device: torch.device, batch_size: int = 512,
                  runtime: RuntimeOptions | None = None) -> Tensor:
    """Softmax predictive probabilities (float64, on CPU) of ``model`` in eval mode."""
    runtime = runtime or RuntimeOptions()
    was_training = model.training
    model.eval()
    out = []
    if isinstance(dataset, TensorDataset):
        x = dataset.tensors[0]
        chunks = (x[i:i + batch_size] for i in range(0, len(x), batch_size))
    else:
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False, num_workers=runtime.num_workers,
                            pin_memory=runtime.pin_memory, generator=torch.Generator().manual_seed(0))
        chunks = (xb for xb, _ in loader)
    for xb in chunks:
        with runtime.autocast_context(device):
            logits = model(runtime.prepare_input(xb.to(device, non_blocking=True)))
        out.append(torch.softmax(logits.double(), dim=-1).cpu())
    model.train(was_training)
    return torch.cat(out)


class EvalSetAverage:
    """The Bayesian model average of the samples' probabilities on ``eval_sets`` (name -> dataset).

    ``sample_dir`` (optional) also writes each sample's state dict there as ``sample_XXX.pt``; the average
    itself never needs them. Non-finite probabilities raise :class:`Diverged`.
    """

    def __init__(self, eval_sets: Mapping[str, Dataset], device: torch.device, runtime: RuntimeOptions,
                 sample_dir: str | None = None) -> None:
        self.eval_sets, self.device, self.runtime, self.sample_dir = dict(eval_sets), device, runtime, sample_dir
        self.bma = BayesianModelAverage()

    @property
    def num_samples(self) -> int:
        return self.bma.num_samples

    def add(self, model: nn.Module, step: int) -> None:
        probs = {k: predict_probs(model, ds, self.device, runtime=self.runtime) for k, ds in self.eval_sets.items()}
        if not all(torch.all(torch.isfinite(p)) for p in probs.values()):
            raise Diverged(f"non-finite predictions at sample step {step}")
        self.bma.add(probs)
        if self.sample_dir is not None:
            save_torch(model.state_dict(), Path(self.sample_dir) / f"sample_{self.num_samples - 1:03d}.pt")

    def result(self, model: nn.Module) -> dict:
        return {"probs": self.bma.probs(), "expected_entropy": self.bma.expected_entropy()}

    def state_dict(self) -> dict:
        return dict(self.bma.__dict__)

    def load_state_dict(self, state: Mapping) -> None:
        self.bma.__dict__.update(state)
