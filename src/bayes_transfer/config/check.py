"""Checks of a pipeline config beyond its JSON schema (run when the Snakefile is parsed, before any job).

The config is one the schema has validated and completed (:func:`bayes_transfer.config.schema.prepare_config`):
every key is present. Each problem is one line naming the key (as a dotted path), what was expected and the
value given.
"""

from __future__ import annotations

from typing import Iterable, Mapping

from bayes_transfer.inference.methods import METHODS
from bayes_transfer.inference.loop import Hyper

#: training-pool sizes of the paper-scale datasets (train split; flowers102: train + val)
PAPER_POOL_SIZES = {"cifar10": 50000, "cifar100": 50000, "flowers102": 2040, "oxford_pets": 3680}
POSITIVE_KEYS = {"lr", "prior_scale", "isotropic_variance"}
NONNEGATIVE_KEYS = {"temperature", "weight_decay", "head_weight_decay"}


class ConfigError(ValueError):
    """Config values that the protocol cannot run; ``problems`` holds one line per problem."""

    def __init__(self, problems: str | Iterable[str]) -> None:
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("\n".join(self.problems))


def pool_size(data_cfg: Mapping) -> int:
    """Training-pool size of the configured dataset (an embedded one's pool plus its validation split)."""
    from bayes_transfer.data.registry import embedded_pool_size, is_embedded

    name = data_cfg["dataset"]
    return embedded_pool_size(data_cfg) if is_embedded(name) else PAPER_POOL_SIZES[name]


def _value_problem(path: str, key: str, value) -> list[str]:
    if key in POSITIVE_KEYS and not (isinstance(value, (int, float)) and value > 0):
        return [f"{path}: expected a number > 0, got {value!r}"]
    if key in NONNEGATIVE_KEYS and not (isinstance(value, (int, float)) and value >= 0):
        return [f"{path}: expected a number >= 0, got {value!r}"]
    return []


def config_problems(config: Mapping) -> list[str]:
    """Every problem found, one line each (empty: the config can run)."""
    problems: list[str] = []
    known_hyper = set(Hyper.__dataclass_fields__)
    train = config["train"]
    for key, value in train.items():
        problems += _value_problem(f"train.{key}", key, value)
    tuning = config["tuning"]
    for method, grid in tuning["grids"].items():
        if method not in METHODS:
            problems.append(f"tuning.grids.{method}: unknown method; expected one of {', '.join(METHODS)}")
            continue
        for key, values in grid.items():
            if key not in known_hyper:
                problems.append(f"tuning.grids.{method}.{key}: unknown hyper-parameter; expected one of "
                                f"{', '.join(sorted(known_hyper))}")
                continue
            for i, v in enumerate(values):
                problems += _value_problem(f"tuning.grids.{method}.{key}[{i}]", key, v)
    if tuning.get("strategy") == "successive_halving":
        sh, steps = tuning.get("successive_halving") or {}, train.get("steps")
        if sh.get("min_steps") is not None and steps is not None and sh["min_steps"] > steps:
            problems.append(f"tuning.successive_halving.min_steps: expected at most train.steps ({steps}), got "
                            f"{sh['min_steps']}")
        problems += [f"tuning.grids.{m}.steps: successive halving sets the steps of each rung; expected no steps "
                     f"in a grid, got {g['steps']}" for m, g in tuning["grids"].items() if "steps" in g]
    for method, source in tuning["inherit"].items():
        for path, name in ((f"tuning.inherit.{method}", method), (f"tuning.inherit.{method} (value)", source)):
            if name not in METHODS:
                problems.append(f"{path}: unknown method; expected one of {', '.join(METHODS)}, got {name!r}")
    data = config["data"]
    if data.get("shifted_test") is not None and data["dataset"] != "cifar10":
        problems.append(f"data.shifted_test: {data['shifted_test']} is the shifted test set of cifar10 (its 10 "
                        f"classes); expected null for dataset {data['dataset']!r}, got {data['shifted_test']!r}")
    from bayes_transfer.data.registry import embedded_problems, is_embedded

    if is_embedded(data["dataset"]):
        problems += embedded_problems(data)
    pool = pool_size(data)
    for i, n in enumerate(config["sizes"]):
        if n > pool:
            problems.append(f"sizes[{i}]: training size {n} is larger than the training pool of "
                            f"{data['dataset']} ({pool} examples)")
    max_rank = config["swag"]["max_rank"]
    if train["prior_rank"] is not None and train["prior_rank"] > max_rank:
        problems.append(f"train.prior_rank: expected at most swag.max_rank ({max_rank}), got {train['prior_rank']}")
    problems += _ablation_problems(config, pool)
    problems += _prior_variant_problems(config)
    from bayes_transfer.config.segmentation import segmentation_config_problems

    return problems + segmentation_config_problems(config)


def _prior_variant_problems(config: Mapping) -> list[str]:
    """prior.variants: each (pretraining, method) once (a size not among `sizes` is skipped, see the schema)."""
    problems, seen = [], set()
    for i, v in enumerate(config["prior"]["variants"]):
        key = (v["pretraining"], v["method"])
        if key in seen:
            problems.append(f"prior.variants[{i}]: {v['pretraining']}_{v['method']} is listed twice; expected "
                            "each pre-training and method once")
        seen.add(key)
    return problems


def _ablation_problems(config: Mapping, pool: int) -> list[str]:
    abl = config["ablations"]
    rank, lam, mean, land = abl["rank"], abl["lambda"], abl["learned_mean"], abl["landscape"]
    if not (rank["methods"] or lam["methods"] or mean["methods"] or land["enabled"]):
        return []
    problems = []
    if abl["pretraining"] not in config["pretrainings"]:
        problems.append(f"ablations.pretraining: expected one of pretrainings {config['pretrainings']} (or unset: "
                        f"it follows them), got {abl['pretraining']!r}")
    n = abl["n_train"]
    if (rank["methods"] or lam["methods"]) and n not in config["sizes"]:
        problems.append(f"ablations.n_train: {n} must be one of sizes {config['sizes']} (the ablations reuse the "
                        "values tuned at that size; unset, it follows them)")
    max_rank = config["swag"]["max_rank"]
    for i, k in enumerate(rank["ranks"]):
        if k > max_rank:
            problems.append(f"ablations.rank.ranks[{i}]: rank {k} is above swag.max_rank ({max_rank})")
    if land["enabled"] and land["prior_directions"] > max_rank:
        problems.append(f"ablations.landscape.prior_directions: expected at most swag.max_rank ({max_rank}), got "
                        f"{land['prior_directions']}")
    if land["enabled"] and land["n_train"] > pool:
        problems.append(f"ablations.landscape.n_train: expected at most the training pool ({pool} examples), got "
                        f"{land['n_train']}")
    for i, m in enumerate(abl["reliability"]["methods"] or []):
        if m not in config["methods"]:
            problems.append(f"ablations.reliability.methods[{i}]: expected one of methods {config['methods']}, "
                            f"got {m!r}")
    return problems


def check_config(config: Mapping) -> None:
    """Raise :class:`ConfigError` listing every problem of :func:`config_problems`."""
    problems = config_problems(config)
    if problems:
        raise ConfigError(problems)
