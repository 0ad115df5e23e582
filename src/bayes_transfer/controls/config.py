"""The config's ``controls`` section (workflow/rules/controls.smk) and the control settings it gives.

:class:`ControlsConfig` holds the section's defaults (the one place they are written; the schema's
``controls`` defaults equal them, tests/unit/controls/test_controls_audit.py). :func:`control_params` turns a
prepared config into the keyword arguments of :class:`~bayes_transfer.controls.run.ControlSettings`: the task
(``controls.data``), the network (``controls.model``), sizes and seeds from the section, and ``pretrain``,
``swag``, ``train``, the grid tuning's keys of ``tuning`` and the six methods' ``tuning.grids`` from the config's
own sections, so the controls follow whatever the config runs.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field

from bayes_transfer.controls.run import CONTROL_METHODS, DEFAULT_SIZES, FEATURE_DIM
from bayes_transfer.controls.task import VARIANTS, ControlSpec

__all__ = ["ControlsConfig", "TUNING_KEYS", "STEP_CPU_S", "control_params", "control_runtime_min"]

#: the keys of ``tuning`` a grid-tuning job reads (workflow/rules/tune.smk's TUNING_KEYS); the controls always
#: tune by the full grid (tuning.strategy is not theirs)
TUNING_KEYS = ("seed", "holdout_fraction", "metric", "validation", "score", "weight_decay_over_lr")
#: CPU seconds per training step of the control network, for the job's runtime request: about twice the measured
#: 0.43 ms (SGD), 0.68 ms (SGHMC) and 0.47 ms (SWAG) at batch 128 on one loaded core (docs/controls.md)
STEP_CPU_S = 1.0e-3


@dataclass(frozen=True)
class ControlsConfig:
    """The config's ``controls`` section (workflow/schemas/config.schema.yaml)."""

    enabled: bool = True
    variants: list = field(default_factory=lambda: list(VARIANTS))
    sizes: list = field(default_factory=lambda: list(DEFAULT_SIZES))
    seeds: list | None = None  # null: the top-level ``seeds``
    data: dict = field(default_factory=lambda: asdict(ControlSpec()))  # ControlSpec keys
    model: dict = field(default_factory=lambda: {"feature_dim": FEATURE_DIM})


def control_params(config: Mapping) -> dict:
    """ControlSettings keyword arguments (plain lists and dicts, fit for Snakemake params) from a prepared config;
    a clear error naming the key where the config lacks what the controls read."""
    section = {**asdict(ControlsConfig()), **dict(config.get("controls") or {})}
    grids = (config.get("tuning") or {}).get("grids") or {}
    missing = [m for m in CONTROL_METHODS if not grids.get(m)]
    if missing:
        raise ValueError(f"controls: tuning.grids has no grid for {missing}; the controls tune "
                         f"{list(CONTROL_METHODS)} (set the grids or controls.enabled: false)")
    for key in ("pretrain", "swag", "train", "seeds"):
        if key not in config:
            raise ValueError(f"controls: the config has no `{key}` section, which the controls read")
    ControlSpec.from_config(section["data"] or {})  # unknown keys or impossible sizes: an error now, not in the job
    seeds = config["seeds"] if section["seeds"] is None else section["seeds"]
    return {
        "spec": dict(section["data"] or {}),
        "model_kwargs": dict(section["model"] or {}),
        "pretrain": dict(config["pretrain"]),
        "swag": dict(config["swag"]),
        "train": dict(config["train"]),
        "tuning": {k: v for k, v in (config.get("tuning") or {}).items() if k in TUNING_KEYS},
        "grids": {m: dict(grids[m]) for m in CONTROL_METHODS},
        "sizes": [int(n) for n in section["sizes"]],
        "seeds": [int(s) for s in seeds],
    }


def control_runtime_min(params: Mapping, n_variants: int) -> int:
    """Minutes to request for the controls job (Snakemake's ``runtime``; at least 60): every tuning and evaluation
    fit's steps, pre-training and SWAG, for each control, at :data:`STEP_CPU_S` per step."""
    sizes, seeds = len(params["sizes"]), len(params["seeds"])
    fits = sum(math.prod(len(v) for v in grid.values()) * sizes + sizes * seeds for grid in params["grids"].values())
    swag = params["swag"]
    steps = fits * params["train"]["steps"] + params["pretrain"]["steps"] + swag["cycles"] * swag["steps_per_cycle"]
    return max(60, math.ceil(n_variants * steps * STEP_CPU_S / 60))
