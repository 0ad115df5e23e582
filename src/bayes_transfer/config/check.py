"""Checks of a pipeline config beyond its JSON schema (run when the Snakefile is parsed, before any job).

Every error names the key (as a dotted path) and what was expected.
"""

from __future__ import annotations

from typing import Mapping

from bayes_transfer.inference.methods import METHODS
from bayes_transfer.inference.loop import Hyper

#: training-pool sizes of the paper-scale datasets (train split; flowers102: train + val)
PAPER_POOL_SIZES = {"cifar10": 50000, "cifar100": 50000, "flowers102": 2040, "oxford_pets": 3680}
POSITIVE_KEYS = {"lr", "prior_scale", "isotropic_variance"}
NONNEGATIVE_KEYS = {"temperature", "weight_decay", "head_weight_decay"}


class ConfigError(ValueError):
    """A config value that the schema allows but the protocol cannot run."""


def pool_size(data_cfg: Mapping) -> int:
    name = data_cfg.get("dataset", "digits")
    if name == "digits":
        from bayes_transfer.data.digits import load_digits_tasks

        d = load_digits_tasks(split_seed=data_cfg.get("split_seed", 0), n_test=data_cfg.get("n_test", 300),
                              n_val=data_cfg.get("n_val", 150), shift_strength=data_cfg.get("shift_strength", 1.0))
        return len(d.pool) + len(d.val)
    return PAPER_POOL_SIZES[name]


def _check_value(path: str, key: str, value) -> None:
    if key in POSITIVE_KEYS and not (isinstance(value, (int, float)) and value > 0):
        raise ConfigError(f"{path}: expected a number > 0, got {value!r}")
    if key in NONNEGATIVE_KEYS and not (isinstance(value, (int, float)) and value >= 0):
        raise ConfigError(f"{path}: expected a number >= 0, got {value!r}")


def check_config(config: Mapping) -> None:
    """Raise :class:`ConfigError` for the first problem found."""
    known_hyper = set(Hyper.__dataclass_fields__)
    for key, value in (config.get("train") or {}).items():
        _check_value(f"train.{key}", key, value)
    tuning = config.get("tuning") or {}
    for method, grid in (tuning.get("grids") or {}).items():
        if method not in METHODS:
            raise ConfigError(f"tuning.grids.{method}: unknown method; expected one of {', '.join(METHODS)}")
        for key, values in grid.items():
            if key not in known_hyper:
                raise ConfigError(f"tuning.grids.{method}.{key}: unknown hyper-parameter; expected one of "
                                  f"{', '.join(sorted(known_hyper))}")
            for i, v in enumerate(values):
                _check_value(f"tuning.grids.{method}.{key}[{i}]", key, v)
    for method, source in (tuning.get("inherit") or {}).items():
        for path, name in ((f"tuning.inherit.{method}", method), (f"tuning.inherit.{method} (value)", source)):
            if name not in METHODS:
                raise ConfigError(f"{path}: unknown method {name!r}; expected one of {', '.join(METHODS)}")
    data = config.get("data") or {}
    pool = pool_size(data)
    for i, n in enumerate(config.get("sizes") or []):
        if n > pool:
            raise ConfigError(f"sizes[{i}]: training size {n} is larger than the training pool of "
                              f"{data.get('dataset', 'digits')} ({pool} examples)")
    train = config.get("train") or {}
    if train.get("prior_rank") is not None and train["prior_rank"] > (config.get("swag") or {}).get("max_rank", 20):
        raise ConfigError(f"train.prior_rank: {train['prior_rank']} is above swag.max_rank")
    _check_ablations(config, pool)
    from bayes_transfer.segmentation import segmentation_config_problems  # the segmentation section's checks live beside it

    problems = segmentation_config_problems(config)
    if problems:
        raise ConfigError(problems[0])


def _check_ablations(config: Mapping, pool: int) -> None:
    abl = config.get("ablations") or {}
    rank, lam = abl.get("rank") or {}, abl.get("lambda") or {}
    mean, land = abl.get("learned_mean") or {}, abl.get("landscape") or {}
    enabled = bool(rank.get("methods") or lam.get("methods") or mean.get("methods") or land.get("enabled"))
    if not enabled:
        return
    pretraining = abl.get("pretraining", "simclr")
    if pretraining not in (config.get("pretrainings") or []):
        raise ConfigError(f"ablations.pretraining: {pretraining!r} is not one of pretrainings "
                          f"{config.get('pretrainings')}")
    n = abl.get("n_train", 50)
    if (rank.get("methods") or lam.get("methods")) and n not in (config.get("sizes") or []):
        raise ConfigError(f"ablations.n_train: {n} must be one of sizes {config.get('sizes')} "
                          "(the sweeps reuse the values tuned at that size)")
    max_rank = (config.get("swag") or {}).get("max_rank", 20)
    for i, k in enumerate(rank.get("ranks") or []):
        if k > max_rank:
            raise ConfigError(f"ablations.rank.ranks[{i}]: rank {k} is above swag.max_rank ({max_rank})")
    if land.get("enabled") and land.get("prior_directions", 5) > max_rank:
        raise ConfigError(f"ablations.landscape.prior_directions: {land['prior_directions']} is above "
                          f"swag.max_rank ({max_rank})")
    if land.get("enabled") and land.get("n_train", 250) > pool:
        raise ConfigError(f"ablations.landscape.n_train: {land['n_train']} is larger than the training pool "
                          f"({pool} examples)")
    shown = (abl.get("reliability") or {}).get("methods")
    for i, m in enumerate(shown or []):
        if m not in (config.get("methods") or []):
            raise ConfigError(f"ablations.reliability.methods[{i}]: {m!r} is not one of methods")
