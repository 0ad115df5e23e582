"""Self-supervised losses: SimCLR's NT-Xent loss and its MLP projection head."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["nt_xent", "ProjectionHead"]


def nt_xent(z1: torch.Tensor, z2: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Normalised-temperature cross-entropy (NT-Xent) loss of SimCLR.

    ``z1`` and ``z2`` are projections ``(B, D)`` of two augmented views of the same ``B`` images;
    row ``i`` of ``z1`` and row ``i`` of ``z2`` form the positive pair. The ``2B`` embeddings are
    L2-normalised, their cosine similarities are divided by ``temperature``, each embedding's
    similarity with itself is excluded, and the cross-entropy of picking the positive among the
    other ``2B - 1`` embeddings is averaged over all ``2B`` anchors. Returns a scalar tensor.
    """
    if not isinstance(z1, torch.Tensor) or not isinstance(z2, torch.Tensor):
        raise TypeError(
            f"nt_xent: z1 and z2 must be torch.Tensor, got {type(z1).__name__} and {type(z2).__name__}"
        )
    if z1.dim() != 2 or z2.dim() != 2:
        raise ValueError(
            f"nt_xent: z1 and z2 must be 2-D (batch, dim), got shapes {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape != z2.shape:
        raise ValueError(
            f"nt_xent: z1 and z2 must have the same shape, got {tuple(z1.shape)} and {tuple(z2.shape)}"
        )
    if z1.shape[0] < 1:
        raise ValueError("nt_xent: the batch must hold at least one pair (z1.shape[0] >= 1), got 0")
    if not z1.is_floating_point() or not z2.is_floating_point():
        raise TypeError(f"nt_xent: z1 and z2 must be floating point, got {z1.dtype} and {z2.dtype}")
    if not float(temperature) > 0.0:
        raise ValueError(f"nt_xent: temperature must be > 0, got {temperature!r}")

    batch = z1.shape[0]
    z = F.normalize(torch.cat([z1, z2], dim=0), p=2, dim=1)
    logits = (z @ z.t()) / temperature
    self_mask = torch.eye(2 * batch, dtype=torch.bool, device=z.device)
    logits = logits.masked_fill(self_mask, float("-inf"))
    idx = torch.arange(batch, device=z.device)
    targets = torch.cat([idx + batch, idx])  # anchor i in view 1 <-> i + B in view 2
    return F.cross_entropy(logits, targets, reduction="mean")


class ProjectionHead(nn.Module):
    """SimCLR MLP projection head: ``(Linear-BN-ReLU) x (layers - 1)`` followed by a ``Linear``.

    ``layers`` is 2 (SimCLR v1) or 3 (SimCLR v2). Hidden linear layers omit the bias, which the
    following batch norm makes redundant. Maps ``(B, in_dim)`` to ``(B, out_dim)``.
    """

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, layers: int = 2) -> None:
        super().__init__()
        for name, value in (("in_dim", in_dim), ("hidden_dim", hidden_dim), ("out_dim", out_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"ProjectionHead: {name} must be a positive int, got {value!r}")
        if layers not in (2, 3) or isinstance(layers, bool):
            raise ValueError(f"ProjectionHead: layers must be 2 or 3, got {layers!r}")
        modules: list[nn.Module] = []
        width = in_dim
        for _ in range(layers - 1):
            modules += [
                nn.Linear(width, hidden_dim, bias=False),
                nn.BatchNorm1d(hidden_dim),
                nn.ReLU(inplace=True),
            ]
            width = hidden_dim
        modules.append(nn.Linear(width, out_dim))
        self.net = nn.Sequential(*modules)
        self.in_dim, self.hidden_dim, self.out_dim, self.layers = in_dim, hidden_dim, out_dim, layers

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Project features ``(B, in_dim)`` to ``(B, out_dim)``."""
        if x.dim() != 2 or x.shape[1] != self.in_dim:
            raise ValueError(
                f"ProjectionHead: input must have shape (batch, {self.in_dim}), got {tuple(x.shape)}"
            )
        return self.net(x)
