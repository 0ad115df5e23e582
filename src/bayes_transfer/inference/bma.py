"""Online Bayesian model average: predictive probabilities accumulated as samples are drawn."""

from __future__ import annotations

import torch
from torch import Tensor

from bayes_transfer.results.ood import entropy


class BayesianModelAverage:
    """Equal-weight average of predictive probabilities (softmax outputs), per evaluation set.

    Each call to :meth:`add` contributes one sample's probabilities for every evaluation set, and its
    predictive entropy per example (:meth:`expected_entropy`); nothing else about the sample is kept, so no
    sample checkpoints need to be written.
    """

    def __init__(self) -> None:
        self._sums: dict[str, Tensor] = {}
        self._entropy_sums: dict[str, Tensor] = {}
        self.num_samples = 0

    def add(self, probs: dict[str, Tensor]) -> None:
        if self._sums and set(probs) != set(self._sums):
            raise ValueError(f"every sample must cover the same evaluation sets {sorted(self._sums)}, got {sorted(probs)}")
        for name, p in probs.items():
            p = p.detach().to("cpu", torch.float64)
            if name in self._sums and self._sums[name].shape != p.shape:
                raise ValueError(f"evaluation set {name!r}: shape {tuple(p.shape)} != {tuple(self._sums[name].shape)}")
            self._sums[name] = self._sums[name] + p if name in self._sums else p.clone()
            h = entropy(p)  # this sample's predictive entropy per example
            self._entropy_sums[name] = self._entropy_sums[name] + h if name in self._entropy_sums else h
        self.num_samples += 1

    def probs(self) -> dict[str, Tensor]:
        """The averaged probabilities per evaluation set (float64)."""
        if self.num_samples == 0:
            raise ValueError("the Bayesian model average has no samples yet")
        return {name: s / self.num_samples for name, s in self._sums.items()}

    def expected_entropy(self) -> dict[str, Tensor]:
        """The samples' mean predictive entropy per example and evaluation set (float64): with the entropy of
        :meth:`probs` it gives the mutual information (:mod:`bayes_transfer.results.ood`)."""
        if self.num_samples == 0:
            raise ValueError("the Bayesian model average has no samples yet")
        return {name: s / self.num_samples for name, s in self._entropy_sums.items()}
