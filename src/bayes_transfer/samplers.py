"""The public names of the samplers: ``from bayes_transfer.samplers import SGLD, SGHMC`` (live in
:mod:`bayes_transfer.inference.samplers`)."""

from bayes_transfer.inference.samplers import SGHMC, SGLD, CyclicalSchedule, NesterovSGHMC

__all__ = ["SGHMC", "SGLD", "CyclicalSchedule", "NesterovSGHMC"]
