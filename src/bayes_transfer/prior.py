"""The public name of the prior: ``from bayes_transfer.prior import GaussianPrior`` (lives in :mod:`bayes_transfer.priors`)."""

from bayes_transfer.priors.bound import BoundPrior
from bayes_transfer.priors.gaussian import GaussianPrior, PriorMismatchError

__all__ = ["BoundPrior", "GaussianPrior", "PriorMismatchError"]
