"""Stochastic-gradient MCMC samplers and the cyclical schedule (cSG-MCMC).

Convention (tested in tests/unit/inference/test_samplers.py): the gradients in ``p.grad`` are those of the *mean
per-datum potential* ``U(theta) / N`` (the usual mean loss plus the prior's negative log-density divided
by ``N``), and in the small-learning-rate limit both samplers leave ``exp(-U(theta) / T)`` invariant.

- SGLD (Welling & Teh 2011): ``theta <- theta - lr * g + sqrt(2 lr T / N) xi``.
- SGHMC (Chen et al. 2014) in momentum form with ``momentum = 1 - friction``:
  ``m <- momentum * m - lr * g + sqrt(2 (1 - momentum) lr T / N) xi``; ``theta <- theta + m``.

``noise=False`` (per step or per group) turns them into plain gradient descent / heavy-ball SGD, the
exploration phase of the cyclical schedule.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch.optim import Optimizer


def _check(lr: float, num_data: int, temperature: float) -> None:
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr!r}")
    if not (isinstance(num_data, int) and num_data > 0):
        raise ValueError(f"num_data must be a positive int (training-set size N), got {num_data!r}")
    if not temperature >= 0:
        raise ValueError(f"temperature must be >= 0, got {temperature!r}")


def closure_loss(closure) -> torch.Tensor | None:
    """The loss of an optimiser's ``closure`` evaluated with gradients on (None without a closure)."""
    if closure is None:
        return None
    with torch.enable_grad():
        return closure()


class _SGMCMC(Optimizer):
    """Shared step loop: per group the noise scale, per parameter the gradient with weight decay."""

    def _noise_std(self, group: dict) -> float:
        raise NotImplementedError

    def _update(self, p: torch.Tensor, g: torch.Tensor, group: dict, noise: torch.Tensor | None) -> None:
        raise NotImplementedError

    @torch.no_grad()
    def step(self, closure=None, noise: bool | None = None, generator: torch.Generator | None = None):
        """One update; ``noise=False`` skips the injected noise (exploration), ``generator`` seeds it."""
        loss = closure_loss(closure)
        for group in self.param_groups:
            add_noise = group["noise"] if noise is None else noise
            std = self._noise_std(group) if add_noise else 0.0
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad
                if group["weight_decay"]:
                    g = g.add(p, alpha=group["weight_decay"])
                xi = None
                if std > 0:
                    xi = torch.randn(p.shape, generator=generator, device=p.device, dtype=p.dtype).mul_(std)
                self._update(p, g, group, xi)
        return loss


class SGLD(_SGMCMC):
    """Stochastic-gradient Langevin dynamics targeting exp(-U/T); see the module docstring."""

    def __init__(self, params, lr: float, num_data: int, temperature: float = 1.0, weight_decay: float = 0.0):
        _check(lr, num_data, temperature)
        super().__init__(params, dict(lr=lr, num_data=num_data, temperature=temperature,
                                      weight_decay=weight_decay, noise=True))

    def _noise_std(self, group: dict) -> float:
        return math.sqrt(2.0 * group["lr"] * group["temperature"] / group["num_data"])

    def _update(self, p, g, group, noise) -> None:
        p.add_(g, alpha=-group["lr"])
        if noise is not None:
            p.add_(noise)


class SGHMC(_SGMCMC):
    """Stochastic-gradient Hamiltonian Monte Carlo (momentum = 1 - friction) targeting exp(-U/T)."""

    def __init__(self, params, lr: float, num_data: int, momentum: float = 0.9, temperature: float = 1.0,
                 weight_decay: float = 0.0):
        _check(lr, num_data, temperature)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum!r}")
        super().__init__(params, dict(lr=lr, num_data=num_data, momentum=momentum, temperature=temperature,
                                      weight_decay=weight_decay, noise=True))

    def _noise_std(self, group: dict) -> float:
        return math.sqrt(2.0 * (1.0 - group["momentum"]) * group["lr"] * group["temperature"] / group["num_data"])

    def _velocity(self, p, g, group, noise) -> torch.Tensor:
        """``v <- m v - lr g + xi`` (the momentum buffer, updated in place)."""
        state = self.state[p]
        if "momentum_buffer" not in state:
            state["momentum_buffer"] = torch.zeros_like(p)
        buf = state["momentum_buffer"]
        buf.mul_(group["momentum"]).add_(g, alpha=-group["lr"])
        if noise is not None:
            buf.add_(noise)
        return buf

    def _update(self, p, g, group, noise) -> None:
        p.add_(self._velocity(p, g, group, noise))


class NesterovSGHMC(SGHMC):
    """SGHMC (momentum form, momentum = 1 - friction) with Nesterov's look-ahead, as the paper's SGLD runs.

    Heavy ball (:class:`SGHMC`): ``v <- m v - lr g + xi``, ``theta <- theta + v``. Here the parameter step
    uses the updated velocity once more, as ``torch.optim.SGD(nesterov=True)`` does:
    ``theta <- theta + m v - lr g + xi``. The noise ``xi`` (std ``sqrt(2 (1 - m) lr T / N)``) moves theta by
    ``xi / (1 - m)`` in total over the following steps, exactly as in the heavy-ball form, so the chain keeps
    the same temperature; with ``noise=False`` the update is Nesterov SGD (``lr_torch = lr``).
    """

    def _update(self, p, g, group, noise) -> None:
        buf = self._velocity(p, g, group, noise)
        if noise is not None:
            p.add_(noise)
        p.add_(buf, alpha=group["momentum"]).add_(g, alpha=-group["lr"])


def cosine_factor(t: float, period: float) -> float:
    """Cosine decay from 1 (t = 0) to 0 (t = period): ``(cos(pi t / period) + 1) / 2``."""
    return 0.5 * (math.cos(math.pi * t / period) + 1.0)


def set_lr(optimizer: Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass(frozen=True)
class CyclicalSchedule:
    """Cyclical cosine learning rate with exploration and sampling phases (Zhang et al. 2020).

    ``total_steps`` are split into ``cycles`` equal cycles. Within a cycle, at fraction ``r`` in [0, 1),
    the learning rate is ``lr0 / 2 * (cos(pi r) + 1)``; the first ``exploration_fraction`` of the cycle
    explores (no noise), the rest samples (noise on), and ``samples_per_cycle`` samples are taken at
    evenly spaced steps of the sampling phase, the last one at the cycle's last step.
    """

    total_steps: int
    cycles: int = 1
    exploration_fraction: float = 0.5
    samples_per_cycle: int = 1

    def __post_init__(self) -> None:
        if self.cycles < 1 or self.total_steps < self.cycles:
            raise ValueError(f"need total_steps >= cycles >= 1, got {self.total_steps} and {self.cycles}")
        if not 0.0 <= self.exploration_fraction < 1.0:
            raise ValueError(f"exploration_fraction must be in [0, 1), got {self.exploration_fraction}")
        sampling_steps = self.steps_per_cycle - self.exploration_steps
        if not 1 <= self.samples_per_cycle <= max(sampling_steps, 1):
            raise ValueError(
                f"samples_per_cycle must be in [1, {sampling_steps}] (the sampling steps of a cycle), "
                f"got {self.samples_per_cycle}"
            )

    @property
    def steps_per_cycle(self) -> int:
        return self.total_steps // self.cycles

    @property
    def exploration_steps(self) -> int:
        return int(math.floor(self.exploration_fraction * self.steps_per_cycle))

    @property
    def num_samples(self) -> int:
        return self.cycles * self.samples_per_cycle

    def position(self, step: int) -> tuple[int, int]:
        """(cycle index, step within the cycle); steps past the last full cycle belong to the last one."""
        cycle = min(step // self.steps_per_cycle, self.cycles - 1)
        return cycle, step - cycle * self.steps_per_cycle

    def lr_factor(self, step: int) -> float:
        _, within = self.position(step)
        return cosine_factor(within, self.steps_per_cycle)

    def is_exploring(self, step: int) -> bool:
        return self.position(step)[1] < self.exploration_steps

    def sample_steps(self) -> list[int]:
        """Global step indices (0-based, after the update of that step) at which samples are taken."""
        out = []
        n_sampling = self.steps_per_cycle - self.exploration_steps
        for c in range(self.cycles):
            end = (c + 1) * self.steps_per_cycle - 1
            if c == self.cycles - 1:
                end = self.total_steps - 1
            spacing = n_sampling / self.samples_per_cycle
            for j in range(self.samples_per_cycle):
                out.append(int(round(end - (self.samples_per_cycle - 1 - j) * spacing)))
        return out
