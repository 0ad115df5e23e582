"""The paper's downstream methods, with the names of its tables.

=====================  ==============  ===============================================================
method                 inference       backbone prior
=====================  ==============  ===============================================================
sgd_transfer           SGD             zero-mean isotropic (weight decay), pre-trained initialisation
sgd_learned_prior      SGD (MAP)       learned SWAG prior, covariance rescaled by lambda
bnn_learned_prior      SGHMC / SGLD    learned SWAG prior, covariance rescaled by lambda; BMA
bnn_isotropic_prior    SGHMC / SGLD    zero-mean isotropic N(0, alpha I) ("non-learned"); BMA
sgd_ensemble           SGD x M         M independently seeded sgd_transfer members, probabilities averaged
sgd_learned_mean       SGD (MAP)       isotropic alpha I centred at the pre-trained weights (Fig. 3c)
bnn_learned_mean       SGHMC / SGLD    isotropic alpha I centred at the pre-trained weights (Fig. 3c); BMA
vi_learned_prior       mean-field VI   learned prior (SWAG or BBB), covariance rescaled by lambda; S draws
vi_isotropic_prior     mean-field VI   zero-mean isotropic N(0, alpha I); S draws
=====================  ==============  ===============================================================

The two ``vi_*`` methods are BayesAdapter's variational fine-tuning (issue 14,
:mod:`~bayes_transfer.inference.variational_fit`): a mean-field Gaussian over the backbone, initialised at the
pre-trained weights, KL to the prior in closed form, weighted by the ``temperature``; predictions average
S = ``cycles * samples_per_cycle`` draws.

The new head always gets a zero-mean isotropic prior (``head_weight_decay``). Every method starts from
the pre-trained feature extractor and a freshly initialised head (seeded).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Mapping

import torch
from torch import nn
from torch.utils.data import Dataset

from bayes_transfer.inference.bma import BayesianModelAverage
from bayes_transfer.models.resnets import build_model, load_backbone_state, replace_head, split_named_parameters
from bayes_transfer.priors.gaussian import GaussianPrior
from bayes_transfer.inference.loop import FitResult, Hyper, LoopHyper, fit
from bayes_transfer.inference.prior_step import AUTHORS_PRIOR_EPS


@dataclass(frozen=True)
class MethodSpec:
    bayesian: bool  # SG-MCMC with a Bayesian model average (else SGD)
    prior: str  # "weight_decay" | "learned" | "isotropic_zero" | "isotropic_mean"
    ensemble: bool = False
    variational: bool = False  # mean-field VI (inference.variational_fit), predictions averaged over S draws


METHODS: dict[str, MethodSpec] = {
    "sgd_transfer": MethodSpec(False, "weight_decay"),
    "sgd_learned_prior": MethodSpec(False, "learned"),
    "bnn_learned_prior": MethodSpec(True, "learned"),
    "bnn_isotropic_prior": MethodSpec(True, "isotropic_zero"),
    "sgd_ensemble": MethodSpec(False, "weight_decay", ensemble=True),
    "sgd_learned_mean": MethodSpec(False, "isotropic_mean"),
    "bnn_learned_mean": MethodSpec(True, "isotropic_mean"),
    "vi_learned_prior": MethodSpec(False, "learned", variational=True),
    "vi_isotropic_prior": MethodSpec(False, "isotropic_zero", variational=True),
}

#: BayesAdapter's variational fine-tuning with a learned and with an isotropic prior (issue 14)
VI_METHODS = ("vi_learned_prior", "vi_isotropic_prior")
#: the sampler's keys the variational methods read, and the prior-step key they do not
VI_SAMPLER_KEYS = ("temperature", "cycles", "samples_per_cycle")
VI_UNUSED = ("prior_update",)

#: the five methods of the paper's data-size tables (Tables 2-13)
TABLE_METHODS = ("sgd_transfer", "sgd_learned_prior", "bnn_learned_prior", "bnn_isotropic_prior", "sgd_ensemble")


def downstream_model(arch: str, pretrained_state: Mapping[str, torch.Tensor], num_classes: int, seed: int,
                     arch_kwargs: dict | None = None) -> nn.Module:
    """The pre-trained feature extractor with a new, seeded head for ``num_classes``."""
    model = build_model(arch, num_classes, **(arch_kwargs or {}))
    load_backbone_state(model, pretrained_state)
    torch.manual_seed(seed)
    replace_head(model, num_classes)
    return model


def prepare_learned_prior(prior: GaussianPrior, hp: LoopHyper) -> GaussianPrior:
    """Truncate to ``hp.prior_rank`` (if set) and rescale the covariance by ``hp.prior_scale`` under
    ``hp.prior_convention`` (``priorbox``: the authors' variance * lambda + eps, eps
    :data:`~bayes_transfer.inference.prior_step.AUTHORS_PRIOR_EPS` = 0.1, and factor * lambda)."""
    if hp.prior_rank is not None:
        prior = prior.truncate(int(hp.prior_rank), how=hp.prior_truncation)
    return prior.rescale(hp.prior_scale, convention=hp.prior_convention, eps=AUTHORS_PRIOR_EPS)


def backbone_prior_for(method: str, model: nn.Module, hp: Hyper, learned_prior: GaussianPrior | None
                       ) -> GaussianPrior | None:
    """The Gaussian backbone prior ``method`` binds to the model (None: only weight decay, see run_method)."""
    prior = METHODS[method].prior
    if prior in ("weight_decay", "isotropic_zero"):
        # N(0, alpha I) on the backbone is weight decay 1 / (N alpha) on the mean per-datum potential
        return None
    if prior == "isotropic_mean":
        backbone, _ = split_named_parameters(model)
        return GaussianPrior.isotropic(backbone, hp.isotropic_variance, centred_at_params=True)
    if learned_prior is None:
        raise ValueError(f"method {method!r} needs a learned prior")
    return prepare_learned_prior(learned_prior, hp)


def run_method(
    method: str,
    *,
    arch: str,
    pretrained_state: Mapping[str, torch.Tensor],
    num_classes: int,
    train_set: Dataset,
    eval_sets: Mapping[str, Dataset],
    hp: Hyper,
    seed: int,
    learned_prior: GaussianPrior | None = None,
    device="cpu",
    arch_kwargs: dict | None = None,
    keep_posterior: bool = False,
) -> FitResult:
    """Fit ``method`` once (or M times for the ensemble) and return its predictive probabilities.
    ``keep_posterior``: a variational method's result keeps its fitted Gaussian (``FitResult.posterior``); the
    other methods have none to keep and ignore it."""
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; known: {', '.join(METHODS)}")
    spec = METHODS[method]
    n = len(train_set)
    if spec.variational:
        from bayes_transfer.inference.variational_fit import fit_variational

        model = downstream_model(arch, pretrained_state, num_classes, seed, arch_kwargs)
        prior = (float(hp.isotropic_variance) if spec.prior == "isotropic_zero"
                 else backbone_prior_for(method, model, hp, learned_prior))
        return fit_variational(model, train_set, hp=hp, eval_sets=eval_sets, prior=prior, seed=seed,
                               device=device, desc=method, keep_posterior=keep_posterior)
    if spec.prior == "isotropic_zero":
        hp = Hyper.from_dict(hp.to_dict() | {"weight_decay": 1.0 / (n * hp.isotropic_variance)})
    elif spec.prior != "weight_decay":
        hp = Hyper.from_dict(hp.to_dict() | {"weight_decay": 0.0})
    inference = hp.sampler if spec.bayesian else "sgd"
    if spec.ensemble:
        members = hp.ensemble_size or hp.cycles * hp.samples_per_cycle
        bma, results = BayesianModelAverage(), []
        for m in range(members):
            member_seed = seed * 1000 + m
            model = downstream_model(arch, pretrained_state, num_classes, member_seed, arch_kwargs)
            res = fit(model, train_set, inference="sgd", hp=hp, eval_sets=eval_sets, seed=member_seed,
                      device=device, desc=f"{method}[{m}]")
            results.append(res)
            if not res.success:
                return FitResult({}, False, f"member {m}: {res.reason}", bma.num_samples,
                                 sum(r.steps_run for r in results), sum(r.wall_time_s for r in results),
                                 res.history)
            bma.add(res.probs)
        return FitResult(bma.probs(), True, "", bma.num_samples, sum(r.steps_run for r in results),
                         sum(r.wall_time_s for r in results), results[-1].history,
                         expected_entropy=bma.expected_entropy())
    model = downstream_model(arch, pretrained_state, num_classes, seed, arch_kwargs)
    prior = backbone_prior_for(method, model, hp, learned_prior)
    return fit(model, train_set, inference=inference, hp=hp, eval_sets=eval_sets, backbone_prior=prior,
               seed=seed, device=device, desc=method)


def _method_function(name: str):
    def run(**kwargs) -> FitResult:
        return run_method(name, **kwargs)

    run.__name__ = name
    run.__doc__ = f"Run ``{name}`` (see the module table); keyword arguments as :func:`run_method`."
    return run


sgd_transfer = _method_function("sgd_transfer")
sgd_learned_prior = _method_function("sgd_learned_prior")
bnn_learned_prior = _method_function("bnn_learned_prior")
bnn_isotropic_prior = _method_function("bnn_isotropic_prior")
sgd_ensemble = _method_function("sgd_ensemble")
sgd_learned_mean = _method_function("sgd_learned_mean")
bnn_learned_mean = _method_function("bnn_learned_mean")
vi_learned_prior = _method_function("vi_learned_prior")
vi_isotropic_prior = _method_function("vi_isotropic_prior")


def relevant_hyper(method: str, train_cfg: Mapping, hyper: type[LoopHyper] = Hyper) -> dict:
    """The keys of ``train_cfg`` that can change ``method``'s result (so a workflow reruns only those).

    ``hyper`` is the task's dataclass (:class:`~bayes_transfer.inference.loop.Hyper` for classification,
    :class:`~bayes_transfer.inference.segmentation.SegmentationHyper`): every field it marks
    :func:`~bayes_transfer.inference.loop.only_for` some methods counts only for those.
    """
    if method not in (hyper.methods or METHODS):
        raise ValueError(f"unknown method {method!r} for {hyper.__name__}; known: "
                         f"{', '.join(hyper.methods or METHODS)}")
    spec = METHODS[method]
    uses = ({spec.prior} | ({"sampler"} if spec.bayesian else set()) | ({"ensemble"} if spec.ensemble else set())
            | ({"variational"} if spec.variational else set()))
    keys = [f.name for f in fields(hyper) if uses.intersection(f.metadata.get("only_for", uses))]
    if spec.variational:  # the temperature weights the KL, S = cycles x samples_per_cycle; no prior step
        keys = [k for k in keys if k not in VI_UNUSED] + list(VI_SAMPLER_KEYS)
    if spec.ensemble and not train_cfg.get("ensemble_size"):
        keys += ["cycles", "samples_per_cycle"]  # the default number of members
    return {k: train_cfg[k] for k in keys if k in train_cfg}
