"""What an embedded dataset's loader returns (:mod:`bayes_transfer.data.registry`): both tasks of the protocol.

:class:`EmbeddedSplits` holds the splits every embedded tier has (the digits, Fashion-MNIST): the source task's
training and test sets, the downstream pool that training subsamples are drawn from, its validation and test sets
and the shifted test set, each a ``TensorDataset`` of ``(x, y)``, with the positions of their examples in the files
read and the standardisation constants.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from torch.utils.data import TensorDataset

__all__ = ["EmbeddedSplits"]


@dataclass(frozen=True)
class EmbeddedSplits:
    """The splits of an embedded dataset; ``*_indices`` are positions in the dataset's files (the loader's
    docstring says which), ``mean``/``std`` the standardisation constants (from the source-train images)."""

    source_train: TensorDataset
    source_test: TensorDataset
    pool: TensorDataset
    val: TensorDataset
    test: TensorDataset
    shifted_test: TensorDataset
    num_classes: int
    source_train_indices: np.ndarray
    source_test_indices: np.ndarray
    pool_indices: np.ndarray
    val_indices: np.ndarray
    test_indices: np.ndarray
    mean: float
    std: float
    split_seed: int
    shift_strength: float
