"""The controls' network: a linear feature extractor (``body``) and a linear head (``fc``), 1 x 8 x 8 inputs.

The feature extractor starts at zero, so on the source task its rows move only within the span of the source
inputs (the gradient of ``body.weight`` is ``fc.weight^T (p - y) x^T``): what SWAG measures there is fixed by the
task (:mod:`bayes_transfer.controls.task`), which makes the prior's subspace a known answer. It has the
interface of :mod:`bayes_transfer.models.resnets`' models (``fc``, ``features``, ``feature_dim``), so the
library's stages, priors and methods use it unchanged once :func:`build_control_model` is registered
(:mod:`bayes_transfer.controls.registry`).
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["ARCH", "ControlNet", "build_control_model"]

#: the architecture name (``model.arch``)
ARCH = "control_linear"


class ControlNet(nn.Module):
    """features(x) = body(flatten(x)) (``feature_dim`` features, no bias); logits = fc(features)."""

    def __init__(self, num_classes: int, in_dim: int = 64, feature_dim: int = 8) -> None:
        super().__init__()
        for name, v in (("num_classes", num_classes), ("in_dim", in_dim), ("feature_dim", feature_dim)):
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"model.kwargs.{name} must be a positive int, got {v!r}")
        self.body = nn.Linear(in_dim, feature_dim, bias=False)
        nn.init.zeros_(self.body.weight)
        self.feature_dim = feature_dim
        self.fc = nn.Linear(feature_dim, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(torch.flatten(x, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.features(x))


def build_control_model(num_classes: int, **kwargs) -> ControlNet:
    return ControlNet(num_classes, **kwargs)
