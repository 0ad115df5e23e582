"""A learned-looking prior over a model's backbone whose variances span 8 decades (1e-9 .. 1e-1): the case
the split prior update exists for. Shared by the loop's stability tests and the resume tests."""

import torch

from bayes_transfer.models.resnets import split_named_parameters
from bayes_transfer.priors.gaussian import GaussianPrior


def stiff_prior(model) -> GaussianPrior:
    backbone, _ = split_named_parameters(model)
    g = torch.Generator().manual_seed(5)
    mean = torch.cat([p.detach().reshape(-1) for p in backbone.values()])
    d = mean.numel()
    variance = 10.0 ** (-9.0 + 8.0 * torch.rand(d, generator=g))
    factor = 0.5 * torch.randn(2, d, generator=g) * variance.sqrt()
    return GaussianPrior(mean + 0.01 * torch.randn(d, generator=g), variance, factor, list(backbone),
                         [tuple(p.shape) for p in backbone.values()])
