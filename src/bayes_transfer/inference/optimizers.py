"""The optimiser of a downstream fit: SGD or an SG-MCMC sampler, plain (the explicit prior update) or with the
prior's diagonal part taken exactly (the split update of :mod:`bayes_transfer.inference.prior_step`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Mapping

import torch

from bayes_transfer.inference.prior_step import ExponentialSGLD, PreconditionedSGHMC, ProximalSGD
from bayes_transfer.inference.samplers import SGHMC, SGLD, CyclicalSchedule, NesterovSGHMC

if TYPE_CHECKING:
    from bayes_transfer.inference.loop import LoopHyper

__all__ = ["make_optimizer", "explicit_stiffness"]


def make_optimizer(inference: str, groups: list[dict], hp: LoopHyper, num_data: int, nesterov: bool = False,
                   diagonal: Mapping | None = None) -> tuple[torch.optim.Optimizer, CyclicalSchedule | None]:
    """SGD with momentum (Nesterov's if ``nesterov``) or the sampler, and the chain's cyclical schedule.

    ``diagonal`` (``{param: (mean, c)}``, :func:`~bayes_transfer.inference.prior_step.diagonal_part`): the
    prior's diagonal part, taken exactly by the split optimizers of
    :mod:`~bayes_transfer.inference.prior_step`; None: the plain optimizers (the explicit update).
    """
    nesterov = nesterov and hp.momentum > 0
    schedule = None
    if inference != "sgd":
        schedule = CyclicalSchedule(hp.steps, hp.cycles, hp.exploration_fraction, hp.samples_per_cycle)
    if diagonal is not None:
        if inference == "sgd":
            return ProximalSGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=nesterov, diagonal=diagonal), None
        if inference == "sgld":
            return ExponentialSGLD(groups, lr=hp.lr, num_data=num_data, temperature=hp.temperature,
                                   diagonal=diagonal), schedule
        return PreconditionedSGHMC(groups, lr=hp.lr, num_data=num_data, momentum=hp.momentum,
                                   temperature=hp.temperature, diagonal=diagonal, nesterov=nesterov), schedule
    if inference == "sgd":
        return torch.optim.SGD(groups, lr=hp.lr, momentum=hp.momentum, nesterov=nesterov), None
    if inference == "sgld":
        return SGLD(groups, lr=hp.lr, num_data=num_data, temperature=hp.temperature), schedule
    cls = NesterovSGHMC if nesterov else SGHMC
    return cls(groups, lr=hp.lr, num_data=num_data, momentum=hp.momentum, temperature=hp.temperature), schedule


def explicit_stiffness(bound, lr: float, num_data: int) -> float:
    """``lr * max_j 1 / (N v_j)``: the explicit update's largest per-step prior curvature. Heavy-ball with
    momentum m is unstable on a quadratic above ``2 (1 + m)`` (plain SGD and SGLD: above 2)."""
    return float(lr) / num_data * max(float(prec.max()) for prec in bound.precs)
