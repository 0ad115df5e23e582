"""Learning-rate policies of the downstream loop: ``lr_t = lr * factor(t, steps, schedule)``.

``schedule`` is the SG-MCMC chain's :class:`~bayes_transfer.inference.samplers.CyclicalSchedule` (None for SGD).

* :func:`cosine_lr` (classification): cosine decay over the run, or within each cycle of the schedule
  (Zhang et al. 2020).
* :class:`PolyLR` (segmentation, paper App. C.1): the poly policy ``(1 - t / T) ** power`` over the run, or
  within each cycle (the last cycle runs to the last step, so one cycle is the paper's single poly run).
"""

from __future__ import annotations

from dataclasses import dataclass

from bayes_transfer.inference.samplers import CyclicalSchedule, cosine_factor


def cosine_lr(step: int, steps: int, schedule: CyclicalSchedule | None) -> float:
    """Cosine decay from 1 to 0 over ``steps`` (SGD) or within each cycle of ``schedule``."""
    return schedule.lr_factor(step) if schedule is not None else cosine_factor(step, steps)


def poly_factor(t: int, period: int, power: float) -> float:
    """The poly learning-rate policy ``(1 - t / period) ** power`` (clamped at 0)."""
    return max(0.0, 1.0 - t / period) ** power


@dataclass(frozen=True)
class PolyLR:
    """The poly policy with exponent ``power`` over ``steps`` (SGD) or within each cycle of ``schedule``."""

    power: float

    def __call__(self, step: int, steps: int, schedule: CyclicalSchedule | None) -> float:
        if schedule is None:
            return poly_factor(step, steps, self.power)
        cycle, within = schedule.position(step)
        start = cycle * schedule.steps_per_cycle
        length = (steps - start) if cycle == schedule.cycles - 1 else schedule.steps_per_cycle
        return poly_factor(within, length, self.power)
