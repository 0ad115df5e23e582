"""What the audit is configured with (the config's ``audit`` section) and the conventions of the metrics it
tests: which direction is better, the unit each is shown in, and the default smallest relevant effect."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

LOWER_IS_BETTER = {"error": True, "nll": True, "ece": True, "brier": True, "loss": True,
                   "accuracy": False, "mean_per_class_accuracy": False, "miou": False}
#: display scale and unit of each metric (fractions are shown in percentage points)
DISPLAY = {"error": (100.0, "pp"), "ece": (100.0, "pp"), "miou": (100.0, "pp"), "accuracy": (100.0, "pp"),
           "mean_per_class_accuracy": (100.0, "pp"), "brier": (1.0, ""), "nll": (1.0, "nats"),
           "loss": (1.0, "nats")}
#: smallest relevant effect per metric, in the metric's own units (fractions; nats for NLL and loss)
DEFAULT_MIN_EFFECT = {"error": 0.01, "nll": 0.02, "ece": 0.01, "miou": 0.005, "loss": 0.02}


@dataclass(frozen=True)
class AuditSettings:
    """The config's ``audit`` section (see workflow/schemas/config.schema.yaml)."""

    alpha: float = 0.05
    min_effect: Mapping[str, float] = field(default_factory=lambda: dict(DEFAULT_MIN_EFFECT))
    saturation_rank: int = 5

    @classmethod
    def from_config(cls, cfg: Mapping | None) -> AuditSettings:
        cfg = dict(cfg or {})
        unknown = set(cfg) - {"alpha", "min_effect", "saturation_rank"}
        if unknown:
            raise ValueError(f"audit: unknown keys {sorted(unknown)}")
        alpha = float(cfg.get("alpha", 0.05))
        if not 0 < alpha < 1:
            raise ValueError(f"audit.alpha: expected a number in (0, 1), got {alpha!r}")
        min_effect = dict(DEFAULT_MIN_EFFECT) | dict(cfg.get("min_effect") or {})
        for key, value in min_effect.items():
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ValueError(f"audit.min_effect.{key}: expected a number >= 0, got {value!r}")
        return cls(alpha=alpha, min_effect=min_effect, saturation_rank=int(cfg.get("saturation_rank", 5)))

    def delta(self, metric: str) -> float:
        """The smallest relevant effect of ``metric`` in its own units (0 when the config sets none)."""
        return float(self.min_effect.get(metric, 0.0))


def display(metric: str) -> tuple[float, str]:
    """(scale, unit) in which ``metric``'s effects are shown: percentage points for fractions."""
    return DISPLAY.get(metric, (1.0, ""))
