"""One control end to end through the library's stages, and the audit's verdicts on its runs.

:func:`run_control` calls, inside :func:`~bayes_transfer.controls.registry.registered`, exactly the functions
the workflow's rules call: :func:`~bayes_transfer.stages.source.pretrain_stage` (supervised source checkpoint),
:func:`~bayes_transfer.stages.source.prior_stage` (SWAG prior), :func:`~bayes_transfer.stages.experiment.
tune_stage` (every method's grid at every size, scored on the control's validation split) and
:func:`~bayes_transfer.stages.experiment.fit_stage` (every method, size and seed), each writing its usual file
under ``workdir``; the run files become the tidy table of ``results/tables/runs.csv``
(:func:`~bayes_transfer.results.aggregate.tidy_runs`). :func:`control_verdicts` gives that table (the
``sgd_learned_mean`` / ``bnn_learned_mean`` rows as ``ablation_learned_mean``, as the workflow splits them) to
the audit's own :func:`~bayes_transfer.audit.claims.evaluate_claims` and keeps C3, C4 and C10.

The settings (:class:`ControlSettings`) are the embedded default's ``pretrain``, ``swag``, ``train``, ``tuning`` and
grids of config.yaml, copied, with three sizes; nothing is tuned for the controls beyond what tuning selects.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from bayes_transfer.controls.model import ARCH
from bayes_transfer.controls.registry import registered
from bayes_transfer.controls.subspace import shared_subspace_contrast, subspace_shares
from bayes_transfer.controls.task import VARIANTS, ControlSpec, control_data

__all__ = ["CONTROL_METHODS", "CONTROL_CLAIMS", "LEARNED_MEAN_METHODS", "DEFAULT_SIZES", "FEATURE_DIM",
           "ControlSettings", "ControlRun", "run_control", "control_verdicts"]

#: the methods C3, C4 and C10 compare
CONTROL_METHODS = ("sgd_transfer", "sgd_learned_prior", "bnn_learned_prior", "bnn_isotropic_prior",
                   "sgd_learned_mean", "bnn_learned_mean")
#: the runs the workflow writes to ablation_learned_mean.csv rather than runs.csv (Fig. 3c)
LEARNED_MEAN_METHODS = ("sgd_learned_mean", "bnn_learned_mean")
#: the claims about the learned prior that the controls check
CONTROL_CLAIMS = ("C3", "C4", "C10")
PRETRAINING = "supervised"
#: the controls' training sizes and the width of the linear feature extractor (config ``controls.sizes`` and
#: ``controls.model.feature_dim``; bayes_transfer.controls.config)
DEFAULT_SIZES = (10, 30, 100)
FEATURE_DIM = 8


def _default_grids() -> dict:
    """config.yaml's tuning.grids of :data:`CONTROL_METHODS` (copied; the embedded default's values)."""
    temps = [1.0e-4, 1.0e-2]
    alphas = [1.0e-2, 1.0, 1.0e2, 1.0e4]
    return {
        "sgd_transfer": {"lr": [0.01, 0.05], "weight_decay": [0.0, 1.0e-6, 1.0e-4, 1.0e-2]},
        "sgd_learned_prior": {"prior_scale": [1.0, 1.0e2, 1.0e4, 1.0e6, 1.0e8, 1.0e10]},
        "bnn_learned_prior": {"prior_scale": [1.0e4, 1.0e6, 1.0e8, 1.0e10], "temperature": temps},
        "bnn_isotropic_prior": {"isotropic_variance": alphas, "temperature": temps},
        "sgd_learned_mean": {"isotropic_variance": alphas},
        "bnn_learned_mean": {"isotropic_variance": alphas, "temperature": temps},
    }


@dataclass
class ControlSettings:
    """Everything a control run reads; each field is the config section of the same name (config.yaml's values)."""

    spec: dict = field(default_factory=dict)  # ControlSpec keys (data section besides ``dataset``)
    model_kwargs: dict = field(default_factory=lambda: {"feature_dim": FEATURE_DIM})
    pretrain: dict = field(default_factory=lambda: {"steps": 600, "batch_size": 64, "lr": 0.1, "momentum": 0.9,
                                                    "weight_decay": 5.0e-4})
    swag: dict = field(default_factory=lambda: {"cycles": 21, "steps_per_cycle": 25, "snapshots_per_cycle": 1,
                                                "lr": 0.1, "momentum": 0.9, "weight_decay": None, "batch_size": 64,
                                                "max_rank": 20, "variance_floor": 1.0e-8, "burn_in_cycles": 1,
                                                "augment": True})
    train: dict = field(default_factory=lambda: {
        "steps": 100, "batch_size": 32, "lr": 0.05, "momentum": 0.9, "weight_decay": 0.0, "head_weight_decay": 1e-3,
        "prior_scale": 1.0e6, "prior_convention": "exact", "prior_rank": None, "prior_truncation": "svd",
        "prior_update": "split", "grad_clip": 0.0, "isotropic_variance": 1.0, "temperature": 1.0e-3,
        "sampler": "sghmc", "cycles": 2, "exploration_fraction": 0.5, "samples_per_cycle": 2, "chains": 1,
        "ensemble_size": 0, "log_every": 25})
    tuning: dict = field(default_factory=lambda: {"seed": 1000, "validation": "task", "score": "nll",
                                                  "weight_decay_over_lr": True})
    grids: dict = field(default_factory=_default_grids)
    sizes: list = field(default_factory=lambda: list(DEFAULT_SIZES))
    seeds: list = field(default_factory=lambda: [0, 1, 2, 3, 4])
    methods: tuple = CONTROL_METHODS

    def data_cfg(self, variant: str) -> dict:
        return {"dataset": f"control_{variant}", **self.spec}

    def model_cfg(self) -> dict:
        return {"arch": ARCH, "kwargs": dict(self.model_kwargs)}

    def pretrain_cfg(self) -> dict:
        """``pretrain`` without ``augment``: the control task has no augmentation to apply (a config that
        augments its own source task, as configs/fashion.yaml does, runs the controls unaugmented; SWAG's
        ``augment`` has nothing to apply there either)."""
        return {k: v for k, v in self.pretrain.items() if k != "augment"}

    def swag_cfg(self) -> dict:
        """``swag`` with a null weight decay filled in from ``pretrain`` (as the workflow does)."""
        cfg = dict(self.swag)
        if cfg.get("weight_decay") is None:
            cfg["weight_decay"] = self.pretrain.get("weight_decay", 5.0e-4)
        return cfg


@dataclass
class ControlRun:
    """What :func:`run_control` produced: the tidy run table, the prior's subspace shares, the cost."""

    variant: str
    runs: pd.DataFrame  # rows of results/tables/runs.csv (all methods of the run)
    prior_shares: dict
    contrast: float  # shared_subspace_contrast of the learned prior (V against N)
    cpu_s: float  # CPU time of this process (all its threads) for the whole control
    wall_s: float
    stage_cpu_s: dict
    paths: dict


def _needs_prior(method: str) -> bool:
    from bayes_transfer.inference.methods import METHODS

    return METHODS[method].prior == "learned"


def run_control(variant: str, workdir: str | Path, settings: ControlSettings | None = None) -> ControlRun:
    """Pre-train, learn the SWAG prior, tune and fit every method of ``settings`` on the control ``variant``;
    files under ``workdir`` (``pretrain.pt``, ``prior.pt``, ``tuning/<method>/n<n>.json``,
    ``runs/<method>/n<n>/seed<s>.json``), as the workflow's rules write them under results/."""
    from bayes_transfer.results.aggregate import tidy_runs
    from bayes_transfer.stages.experiment import fit_stage, tune_stage
    from bayes_transfer.stages.source import prior_stage, pretrain_stage
    from bayes_transfer.priors.gaussian import GaussianPrior

    if variant not in VARIANTS:
        raise ValueError(f"control variant must be one of {VARIANTS}, got {variant!r}")
    settings = settings or ControlSettings()
    root = Path(workdir) / variant
    root.mkdir(parents=True, exist_ok=True)
    data_cfg, model_cfg = settings.data_cfg(variant), settings.model_cfg()
    ckpt, prior_path = str(root / "pretrain.pt"), str(root / "prior.pt")
    cpu0, wall0, stage_cpu, run_paths = time.process_time(), time.perf_counter(), {}, []

    def lap(name: str, t: float) -> float:
        now = time.process_time()
        stage_cpu[name] = stage_cpu.get(name, 0.0) + now - t
        return now

    with registered():
        t = time.process_time()
        pretrain_stage(PRETRAINING, data_cfg, model_cfg, settings.pretrain_cfg(), ckpt, seed=0, device="cpu")
        t = lap("pretrain", t)
        prior_stage(PRETRAINING, ckpt, data_cfg, model_cfg, settings.swag_cfg(), prior_path, seed=0, device="cpu")
        t = lap("prior", t)
        for method in settings.methods:
            uses_prior = prior_path if _needs_prior(method) else None
            tunes = [str(root / "tuning" / method / f"n{n}.json") for n in settings.sizes]
            tune_stage(method, list(settings.sizes), PRETRAINING, checkpoint=ckpt, prior_path=uses_prior,
                       data_cfg=data_cfg, model_cfg=model_cfg, train_cfg=settings.train,
                       grid=settings.grids[method], tuning_cfg=settings.tuning, outs=tunes, device="cpu")
            t = lap("tune", t)
            for n, tuning_path in zip(settings.sizes, tunes):
                outs = [str(root / "runs" / method / f"n{n}" / f"seed{s}.json") for s in settings.seeds]
                fit_stage(method, n, PRETRAINING, list(settings.seeds), checkpoint=ckpt, prior_path=uses_prior,
                          tuning_path=tuning_path, data_cfg=data_cfg, model_cfg=model_cfg,
                          train_cfg=settings.train, outs=outs, device="cpu", prune=False)
                run_paths += outs
            t = lap("fit", t)
    runs = tidy_runs(run_paths)
    prior = GaussianPrior.load(prior_path)
    d = control_data(variant, ControlSpec.from_config(data_cfg))
    shares = subspace_shares(prior, d.subspaces)
    contrast = shared_subspace_contrast(prior, d.subspaces["V"], d.subspaces["N"])
    return ControlRun(variant, runs, shares, contrast, time.process_time() - cpu0, time.perf_counter() - wall0,
                      stage_cpu, {"checkpoint": ckpt, "prior": prior_path, "runs": run_paths})


def control_verdicts(runs: pd.DataFrame, settings=None) -> dict[str, pd.DataFrame]:
    """The audit's C3, C4 and C10 on one control's tidy runs: ``claims`` (one row per claim) and ``parts``.

    The table is split as the workflow splits it (the learned-mean methods are Fig. 3c's ablation table) and
    given to :func:`bayes_transfer.audit.claims.evaluate_claims` unchanged; ``settings``: its AuditSettings."""
    from bayes_transfer.audit.claims import evaluate_claims

    if runs["dataset"].nunique() != 1:
        raise ValueError(f"one control per call: the runs hold datasets {sorted(runs['dataset'].unique())}, "
                         "whose pairs would be pooled")
    lm = runs["method"].isin(LEARNED_MEAN_METHODS)
    result = evaluate_claims({"runs": runs[~lm].reset_index(drop=True),
                              "ablation_learned_mean": runs[lm].reset_index(drop=True)}, settings)
    return {"claims": result["claims"][result["claims"]["claim"].isin(CONTROL_CLAIMS)].reset_index(drop=True),
            "parts": result["parts"][result["parts"]["claim"].isin(CONTROL_CLAIMS)].reset_index(drop=True)}
