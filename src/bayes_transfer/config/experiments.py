"""The experiments of a paper-scale sweep: one config per dataset x backbone, derived from one config file.

``configs/paper.yaml`` holds the paper's main experiment at its top level and the others under
``sweep.experiments`` as overrides. :func:`sweep_experiments` turns that into one complete config per
experiment; the workflow (workflow/rules/sweep.smk) runs each as an instance of the same rules, and
``benchmarks/gpu_hours.py`` prices them, so both read the sweep the same way.
"""

from __future__ import annotations

import copy
from typing import Any, Mapping

#: what every sweep experiment switches off: the Fig. 3 ablations, the segmentation tables and the controls belong
#: to the main experiment (each section only where the config has it)
SWEEP_OFF: dict[str, Any] = {
    "ablations": {
        "rank": {"methods": []},
        "lambda": {"methods": []},
        "learned_mean": {"methods": []},
        "landscape": {"enabled": False},
    },
    "segmentation": {"enabled": False},
    # the pipeline's controls (docs/controls.md) check the pipeline once, in the main experiment
    "controls": {"enabled": False},
}


def merged(base: Mapping, overrides: Mapping) -> dict:
    """A deep copy of ``base`` with ``overrides`` applied: dicts merged key by key, anything else replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merged(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def sweep_experiments(config: Mapping) -> dict[str, dict]:
    """Experiment name -> its complete config (the top level without ``sweep``, then SWEEP_OFF, then its
    overrides). The main experiment (the top level itself) is not included."""
    experiments = (config.get("sweep") or {}).get("experiments") or {}
    base = {k: v for k, v in config.items() if k != "sweep"}
    base = merged(base, {k: v for k, v in SWEEP_OFF.items() if k in base})
    return {name: merged(base, overrides or {}) for name, overrides in experiments.items()}
